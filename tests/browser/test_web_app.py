"""The web app as people use it, in headless Chromium against a whole stack with the channel sandbox.

Two people chat in two pages (ticks go to READ, typing and presence show), an upload is paused, survives a
page reload, resumes and downloads with the same checksum, and a WhatsApp person answers from the phones view.
Screenshots of the main screens go to ``$CHAT4ALL_SCREENSHOTS`` when it is set (`make screenshots` refreshes
``docs/screenshots/``), else to the test's temporary directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Locator, Page, Route, expect

from tests.browser.conftest import ContextFactory, WebStack

pytestmark = pytest.mark.browser

PASSWORD = "correct horse battery"
WAIT_MS = 20_000
CHUNK = 8 * 1024**2  # the server's default chunk size


@pytest.fixture
def shots(tmp_path: Path) -> Callable[[Page, str], None]:
    folder = Path(os.environ.get("CHAT4ALL_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)

    def shot(page: Page, name: str) -> None:
        page.screenshot(path=str(folder / f"{name}.png"))

    return shot


def name(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:6]}"


def sign_up(page: Page, stack: WebStack, username: str, display: str) -> None:
    page.goto(stack.base_url + "/")
    page.get_by_role("button", name="Create an account").click()
    page.get_by_label("Username").fill(username)
    page.get_by_label("Display name").fill(display)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_role("status").filter(has_text="Live")).to_be_visible(timeout=WAIT_MS)


def start_conversation(page: Page, members: str) -> None:
    page.get_by_role("button", name="New conversation").click()
    page.get_by_label("With").fill(members)
    page.get_by_role("button", name="Start").click()
    expect(page.locator("#chat-title")).to_be_visible()


def send_text(page: Page, text: str) -> None:
    page.get_by_label("Message", exact=True).fill(text)
    page.get_by_role("button", name="Send", exact=True).click()


def my_bubble(page: Page, text: str) -> Locator:
    return page.locator("li.bubble.mine").filter(has_text=text)


def test_two_people_chat_and_their_ticks_go_to_read(
    web_stack: WebStack, context_factory: ContextFactory, shots: Callable[[Page, str], None]
) -> None:
    ana_page = context_factory().new_page()
    bia_page = context_factory().new_page()
    ana, bia = name("ana"), name("bia")
    ana_page.goto(web_stack.base_url + "/")
    shots(ana_page, "sign-in")
    sign_up(ana_page, web_stack, ana, "Ana Souza")
    sign_up(bia_page, web_stack, bia, "Bia Lima")

    start_conversation(ana_page, bia)
    send_text(ana_page, "Olá Bia! Tudo bem?")
    expect(my_bubble(ana_page, "Olá Bia!").locator(".ticks")).to_have_attribute(
        "data-status", re.compile("SENT|DELIVERED")
    )

    # Bia's list shows the new conversation live, with the last message and one unread.
    row = bia_page.get_by_role("link", name=re.compile(rf"^{ana}\W+1 unread"))
    expect(row).to_be_visible(timeout=WAIT_MS)
    expect(row).to_contain_text("Olá Bia! Tudo bem?")
    row.click()
    expect(bia_page.locator("li.bubble.theirs").filter(has_text="Olá Bia!")).to_be_visible()
    expect(bia_page.get_by_test_id("presence")).to_have_text("online", timeout=WAIT_MS)

    # Seen by Bia: Ana's tick goes to READ, and Bia's unread count is gone.
    expect(my_bubble(ana_page, "Olá Bia!").locator(".ticks")).to_have_attribute("data-status", "READ", timeout=WAIT_MS)
    expect(bia_page.get_by_role("link", name=re.compile(f"^{ana}")).get_by_test_id("unread")).to_have_count(0)

    # Typing shows on the other side; the answer arrives live and is read as it is seen.
    bia_page.get_by_label("Message", exact=True).press_sequentially("Tudo ótimo", delay=20)
    expect(ana_page.get_by_test_id("typing")).to_have_text(f"{bia} is typing…", timeout=WAIT_MS)
    bia_page.get_by_role("button", name="Send", exact=True).click()
    expect(ana_page.locator("li.bubble.theirs").filter(has_text="Tudo ótimo")).to_be_visible(timeout=WAIT_MS)
    expect(my_bubble(bia_page, "Tudo ótimo").locator(".ticks")).to_have_attribute(
        "data-status", "READ", timeout=WAIT_MS
    )
    expect(ana_page.get_by_test_id("typing")).to_have_text("")

    # The delivery details name the recipient and channel.
    my_bubble(ana_page, "Olá Bia!").locator(".ticks").click()
    expect(ana_page.get_by_role("region", name="Delivery details")).to_contain_text(f"{bia} · Chat4All · Read")
    shots(ana_page, "chat")
    shots(bia_page, "chat-other-side")


def test_history_scrolls_back_page_by_page(web_stack: WebStack, context_factory: ContextFactory) -> None:
    owner, other = name("hist"), name("hmate")
    http = web_stack.stack.http
    for who in (owner, other):
        assert http.post("/v1/users", json={"username": who, "password": PASSWORD}).status_code == 201
    token = http.post("/auth/token", json={"username": owner, "password": PASSWORD}).json()["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    conv = http.post("/v1/conversations", json={"type": "private", "members": [other]}, headers=auth).json()
    for i in range(120):
        body = {"conversation_id": conv["conversation_id"], "payload": {"type": "text", "text": f"message {i:03d}"}}
        assert http.post("/v1/messages", json=body, headers=auth).status_code == 202

    page = context_factory().new_page()
    page.goto(web_stack.base_url + "/")
    page.get_by_label("Username").fill(owner)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("link", name=re.compile(other)).click()
    bubbles = page.locator("li.bubble")
    expect(bubbles.last).to_contain_text("message 119", timeout=WAIT_MS)
    expect(bubbles).to_have_count(50)

    history = page.get_by_label("Message history")
    for count in (100, 120):
        history.evaluate("el => { el.scrollTop = 0; }")
        expect(bubbles).to_have_count(count, timeout=WAIT_MS)
    expect(bubbles.first).to_contain_text("message 000")
    expect(page.get_by_text("Beginning of the conversation")).to_be_visible()


def test_an_upload_pauses_survives_a_reload_resumes_and_downloads_intact(
    web_stack: WebStack, context_factory: ContextFactory, shots: Callable[[Page, str], None], tmp_path: Path
) -> None:
    sender_page = context_factory().new_page()
    reader_page = context_factory().new_page()
    sender, reader = name("up"), name("down")
    sign_up(sender_page, web_stack, sender, "Uploader")
    sign_up(reader_page, web_stack, reader, "Reader")
    start_conversation(sender_page, reader)

    data = os.urandom(2 * CHUNK + 123_457)  # three chunks, the last one short
    source = tmp_path / "relatorio.bin"
    source.write_bytes(data)

    # Chunk 2 hangs (the connection stalls): the upload stops short of the end, and is paused there.
    held: list[Route] = []

    def hold(route: Route) -> None:
        held.append(route)

    sender_page.route(re.compile(r"/v1/files/[^/]+/chunks/2$"), hold)
    sender_page.get_by_test_id("attach").set_input_files(str(source))
    upload = sender_page.locator("li.upload").filter(has_text="relatorio.bin")
    expect(upload).to_contain_text(re.compile(r"Uploading \d+% of 16 MiB"), timeout=WAIT_MS)
    for _ in range(100):  # until the browser has sent chunk 2 (and it hangs)
        if held:
            break
        sender_page.wait_for_timeout(100)
    assert held, "chunk 2 was never sent"
    # Short of the end: the bytes of chunk 2 may count as sent (the browser handed them over), never the finish.
    expect(upload.locator("progress")).to_have_attribute("value", re.compile(r"^[1-9][0-9]?$"))
    shots(sender_page, "upload-progress")
    upload.get_by_role("button", name="Pause").click()
    expect(upload).to_contain_text("Paused")

    # A reload loses the page, not the upload: it offers to resume once the same file is picked again.
    sender_page.unroute(re.compile(r"/v1/files/[^/]+/chunks/2$"))
    sender_page.reload()
    waiting = sender_page.locator("li.upload").filter(has_text="relatorio.bin")
    expect(waiting).to_contain_text("interrupted", timeout=WAIT_MS)
    waiting.get_by_label("Pick relatorio.bin to resume its upload").set_input_files(str(source))

    # It finishes, the file message arrives on the other side, and what downloads is what was sent.
    expect(my_bubble(sender_page, "relatorio.bin")).to_be_visible(timeout=WAIT_MS)
    reader_page.get_by_role("link", name=re.compile(sender)).click()
    card = reader_page.locator("li.bubble.theirs").filter(has_text="relatorio.bin")
    expect(card).to_be_visible(timeout=WAIT_MS)
    with reader_page.expect_download(timeout=WAIT_MS) as download:
        card.get_by_role("button", name="Download relatorio.bin").click()
    target = tmp_path / "downloaded.bin"
    download.value.save_as(target)
    assert hashlib.sha256(target.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()
    assert download.value.suggested_filename == "relatorio.bin"
    for route in held:  # the stalled request belonged to the page before the reload, which is gone
        with contextlib.suppress(Exception):
            route.abort()


def test_a_whatsapp_person_answers_from_the_phones_view(
    web_stack: WebStack, context_factory: ContextFactory, shots: Callable[[Page, str], None]
) -> None:
    page = context_factory().new_page()
    agent = name("agent")
    number = f"+55119{uuid.uuid4().int % 10**8:08d}"
    sign_up(page, web_stack, agent, "Support agent")
    start_conversation(page, f"whatsapp:{number}")
    send_text(page, "Seu pedido saiu para entrega")
    # The sandbox's WhatsApp reports delivery and reading, so the tick follows the platform's receipts.
    expect(my_bubble(page, "Seu pedido").locator(".ticks")).to_have_attribute(
        "data-status", re.compile("DELIVERED|READ"), timeout=WAIT_MS
    )

    page.get_by_role("link", name="Phones").click()
    phone = page.get_by_role("listitem", name=f"WhatsApp {number}")
    expect(phone).to_contain_text("Seu pedido saiu para entrega", timeout=WAIT_MS)
    phone.get_by_label(f"Answer as WhatsApp {number}").fill("Obrigado, chegou!")
    phone.get_by_role("button", name="Send").click()
    expect(phone.locator("li.bubble.mine")).to_contain_text("Obrigado, chegou!", timeout=WAIT_MS)
    shots(page, "phones")

    page.get_by_role("link", name="Chats").click()
    row = page.get_by_role("link", name=re.compile(re.escape(number)))
    expect(row).to_contain_text("Obrigado, chegou!", timeout=WAIT_MS)
    row.click()
    expect(page.locator("li.bubble.theirs").filter(has_text="Obrigado, chegou!")).to_be_visible(timeout=WAIT_MS)


def test_identities_are_linked_and_unlinked_in_settings(
    web_stack: WebStack, context_factory: ContextFactory, shots: Callable[[Page, str], None]
) -> None:
    page = context_factory().new_page()
    sign_up(page, web_stack, name("id"), "Linked")
    page.get_by_role("link", name="Settings").click()
    number = f"+55219{uuid.uuid4().int % 10**8:08d}"
    page.get_by_label("Platform").select_option("whatsapp")
    page.get_by_label("Your WhatsApp id").fill(number)
    page.get_by_role("button", name="Link", exact=True).click()
    expect(page.locator(".identities")).to_contain_text(number)
    page.get_by_label("Platform").select_option("telegram")
    page.get_by_label("Your Telegram id").fill("not-a-number")
    page.get_by_role("button", name="Link", exact=True).click()
    expect(page.get_by_role("alert").first).to_be_visible()
    shots(page, "settings")
    page.get_by_role("button", name="Unlink WhatsApp").click()
    expect(page.locator(".identities")).to_have_count(0)


def test_the_app_works_on_a_phone_sized_screen(
    web_stack: WebStack, context_factory: ContextFactory, shots: Callable[[Page, str], None]
) -> None:
    page = context_factory(viewport={"width": 390, "height": 800}).new_page()
    sign_up(page, web_stack, name("small"), "Small screen")
    start_conversation(page, f"telegram:{uuid.uuid4().int % 10**9}")
    expect(page.get_by_role("complementary", name="Conversations")).to_be_hidden()
    send_text(page, "Olá do celular")
    expect(my_bubble(page, "Olá do celular")).to_be_visible()
    shots(page, "mobile-chat")
    page.get_by_role("link", name="Back to conversations").click()
    expect(page.get_by_role("complementary", name="Conversations")).to_be_visible()


def test_a_message_the_platform_refuses_shows_failed_with_the_reason(
    web_stack: WebStack, context_factory: ContextFactory
) -> None:
    page = context_factory().new_page()
    sign_up(page, web_stack, name("fail"), "Failing")
    # Instagram sends to an Instagram-scoped id: the connector refuses a handle nobody wrote from, for good.
    start_conversation(page, f"instagram:{name('nobody.')}")
    send_text(page, "Você está aí?")

    ticks = my_bubble(page, "Você está aí?").locator(".ticks")
    expect(ticks).to_have_attribute("data-status", "FAILED", timeout=WAIT_MS)
    expect(my_bubble(page, "Você está aí?")).to_contain_text("Failed: ")
    expect(my_bubble(page, "Você está aí?")).to_contain_text("is not an Instagram-scoped id")
