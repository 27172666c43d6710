"""The whole stack against the channel sandbox, as `chat4all up` runs it: real connectors, real signed webhooks.

WhatsApp receipts to READ; ``["all"]`` reaching each linked channel exactly once; a WhatsApp user's reply
reaching an Instagram user (cross-channel); a platform down for a while; redelivered and forged webhooks; a
file sent as a WhatsApp document by link and uploaded to Telegram.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psycopg
import pytest

from adapters.channels.meta_webhook import signature
from tests.e2e.platforms import a_user

pytestmark = pytest.mark.e2e


class Sandbox:
    """The sandbox's control API."""

    def __init__(self, base_url: str) -> None:
        self.http = httpx.Client(base_url=base_url, trust_env=False, timeout=10.0)

    def messages(self, channel: str | None = None, to: str | None = None) -> list[dict[str, Any]]:
        params = {k: v for k, v in (("channel", channel), ("to", to)) if v is not None}
        items: list[dict[str, Any]] = self.http.get("/sandbox/messages", params=params).json()["items"]
        return items

    def inbound(self, channel: str, sender: str, text: str, reply_to: str | None = None) -> dict[str, Any]:
        body = {"channel": channel, "from": sender, "text": text, **({"reply_to": reply_to} if reply_to else {})}
        r = self.http.post("/sandbox/inbound", json=body)
        assert r.status_code == 200, r.text
        answer: dict[str, Any] = r.json()
        return answer

    def settings(self, **values: Any) -> None:
        assert self.http.post("/sandbox/settings", json=values).status_code == 200

    def faults(self, channel: str, **values: Any) -> None:
        assert self.http.post("/sandbox/faults", json={"channel": channel, **values}).status_code == 200


@pytest.fixture(scope="module")
def sandbox_stack(launch_stack: Any) -> Iterator[Any]:
    stack = launch_stack(extra_env={"CHAT4ALL_SANDBOX": "true", "CHAT4ALL_INBOX_OWNER": "inbox"})
    stack.sandbox = Sandbox(f"http://127.0.0.1:{stack.env['CHAT4ALL_SANDBOX_PORT']}")
    stack.wait_until(lambda: stack.sandbox.http.get("/health").status_code == 200, 30, "the sandbox is up")
    inbox = stack.http.post("/v1/users", json={"username": "inbox", "password": "inbox-password"})
    assert inbox.status_code == 201, inbox.text
    yield stack
    stack.sandbox.http.close()
    stack.stop()  # not left running (and eating CPU) under the rest of the session's tests


@pytest.fixture
def sandbox(sandbox_stack: Any) -> Sandbox:
    box: Sandbox = sandbox_stack.sandbox
    box.settings(auto_deliver=True, auto_read=True, delay_ms=20)
    for channel in ("whatsapp", "messenger", "instagram", "telegram"):
        box.faults(channel, down=False, error_rate=0, latency_ms=0)
    return box


def wait_for(what: str, found: Callable[[], Any], timeout: float = 30.0, *, seen: Callable[[], Any] = str) -> Any:
    """``found()`` once it is truthy; on timeout the failure shows ``seen()``, what was there instead."""
    deadline = time.monotonic() + timeout
    while True:
        value = found()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f}s; instead: {seen()}"
        time.sleep(0.1)


def a_number() -> str:
    return f"+55119{uuid.uuid4().int % 10**8:08d}"


def a_scoped_id() -> str:
    """A page- or Instagram-scoped id, or a Telegram chat id: digits."""
    return f"17841{uuid.uuid4().int % 10**10:010d}"


def status_of(http: httpx.Client, user: dict[str, Any], message_id: str) -> dict[str, Any]:
    body: dict[str, Any] = http.get(f"/v1/messages/{message_id}/status", headers=user["headers"]).json()
    return body


def send(http: httpx.Client, user: dict[str, Any], conversation: str, text: str, **extra: Any) -> str:
    r = http.post(
        "/v1/messages",
        json={"conversation_id": conversation, "payload": {"type": "text", "text": text}, **extra},
        headers=user["headers"],
    )
    assert r.status_code == 202, r.text
    return str(r.json()["message_id"])


def start(http: httpx.Client, user: dict[str, Any], *members: str) -> str:
    kind = "private" if len(members) == 1 else "group"
    r = http.post("/v1/conversations", json={"type": kind, "members": list(members)}, headers=user["headers"])
    assert r.status_code == 201, r.text
    return str(r.json()["conversation_id"])


def test_a_whatsapp_delivery_goes_out_and_is_delivered_then_read(sandbox_stack: Any, sandbox: Sandbox) -> None:
    http = sandbox_stack.http
    ana, number = a_user(http, "ana"), a_number()
    pair = start(http, ana, f"whatsapp:{number}")

    message_id = send(http, ana, pair, "Olá from Chat4All")

    (sent,) = wait_for("the platform has it", lambda: sandbox.messages("whatsapp", number))
    assert (sent["type"], sent["text"]) == ("text", "Olá from Chat4All")
    final = wait_for("READ", lambda: (s := status_of(http, ana, message_id))["status"] == "READ" and s)
    whatsapp = [h for h in final["history"] if h["channel"] == "whatsapp"]
    assert list(dict.fromkeys(h["status"] for h in whatsapp)) == ["SENT", "DELIVERED", "READ"]
    assert f"whatsapp accepted it as {sent['platform_message_id']}" in [h.get("detail") for h in whatsapp]


def test_all_channels_reach_each_linked_channel_exactly_once(sandbox_stack: Any, sandbox: Sandbox) -> None:
    http = sandbox_stack.http
    ana = a_user(http, "ana")
    expected = {
        "whatsapp": a_number(),
        "messenger": a_scoped_id(),
        "telegram": a_scoped_id(),
        "instagram": a_scoped_id(),
    }
    bia = a_user(http, "bia")
    for channel, external_id in expected.items():
        linked = http.post(
            "/v1/users/me/identities", json={"channel": channel, "external_id": external_id}, headers=bia["headers"]
        )
        assert linked.status_code == 201, linked.text
    pair = start(http, ana, bia["username"])

    message_id = send(http, ana, pair, "to every channel", channels=["all"])

    def platform_statuses() -> dict[str, str]:
        return {d["channel"]: d["status"] for d in status_of(http, ana, message_id)["deliveries"]}

    def every_platform_has_it() -> bool:
        return all(sandbox.messages(channel, to) for channel, to in expected.items())

    wait_for("every platform has it", every_platform_has_it)
    wait_for(
        "the receipts",
        lambda: all(platform_statuses()[c] == "READ" for c in ("whatsapp", "messenger", "instagram")),
        seen=platform_statuses,
    )
    time.sleep(1.0)  # a duplicate send would have arrived by now
    for channel, to in expected.items():
        assert [m["text"] for m in sandbox.messages(channel, to)] == ["to every channel"], channel
    statuses = platform_statuses()
    assert statuses["telegram"] == "SENT"  # Telegram gives bots no receipts: SENT is as far as it goes
    assert statuses["internal"] == "SENT"  # bia has not opened a Chat4All client
    final = {d["channel"]: d["final"] for d in status_of(http, ana, message_id)["deliveries"]}
    assert final == {"internal": False, "whatsapp": True, "messenger": True, "instagram": True, "telegram": True}
    assert status_of(http, ana, message_id)["status"] == "SENT"  # the lowest over the deliveries


def test_a_whatsapp_reply_reaches_an_instagram_member_and_back(sandbox_stack: Any, sandbox: Sandbox) -> None:
    http = sandbox_stack.http
    carol, number, igsid = a_user(http, "carol"), a_number(), a_scoped_id()
    group = start(http, carol, f"whatsapp:{number}", f"instagram:{igsid}")
    send(http, carol, group, "who is coming on Friday?")
    (question,) = wait_for("WhatsApp has the question", lambda: sandbox.messages("whatsapp", number))
    wait_for("Instagram has the question", lambda: sandbox.messages("instagram", igsid))

    answer = sandbox.inbound("whatsapp", number, "me! see you there", reply_to=question["platform_message_id"])
    assert answer["webhook_status"] == 200

    bridged = wait_for(
        "the WhatsApp reply reaches Instagram",
        lambda: [m for m in sandbox.messages("instagram", igsid) if m["text"] == "me! see you there"],
    )
    assert len(bridged) == 1
    history = http.get(f"/v1/conversations/{group}/messages", headers=carol["headers"]).json()["items"]
    reply = history[-1]
    assert reply["from"] == {"kind": "contact", "address": f"whatsapp:{number}"}
    assert reply["metadata"]["source"]["platform_message_id"] == answer["platform_message_id"]
    # ... and the Instagram member's answer reaches WhatsApp the same way
    assert sandbox.inbound("instagram", igsid, "count me in too")["webhook_status"] == 200
    wait_for(
        "the Instagram reply reaches WhatsApp",
        lambda: [m for m in sandbox.messages("whatsapp", number) if m["text"] == "count me in too"],
    )


def test_a_platform_down_for_a_while_gets_every_message_after_it_is_back(sandbox_stack: Any, sandbox: Sandbox) -> None:
    http = sandbox_stack.http
    ana, number = a_user(http, "ana"), a_number()
    pair = start(http, ana, f"whatsapp:{number}")
    sandbox.faults("whatsapp", down=True)

    ids = [send(http, ana, pair, f"while down {i}") for i in range(5)]
    time.sleep(3.0)

    assert sandbox.messages("whatsapp", number) == []
    assert {status_of(http, ana, i)["status"] for i in ids} == {"SENT"}
    sandbox.faults("whatsapp", down=False)
    wait_for("all five arrive", lambda: len(sandbox.messages("whatsapp", number)) == 5, timeout=60)
    assert [m["text"] for m in sandbox.messages("whatsapp", number)] == [f"while down {i}" for i in range(5)]
    wait_for("all READ", lambda: {status_of(http, ana, i)["status"] for i in ids} == {"READ"})


def test_a_file_reaches_whatsapp_by_link_and_telegram_by_upload(sandbox_stack: Any, sandbox: Sandbox) -> None:
    http = sandbox_stack.http
    ana, number, chat = a_user(http, "ana"), a_number(), a_scoped_id()
    group = start(http, ana, f"whatsapp:{number}", f"telegram:{chat}")
    data = uuid.uuid4().bytes * 20_000  # 320,000 bytes
    started = http.post(
        "/v1/files/initiate",
        json={"filename": "relatório.pdf", "size": len(data), "content_type": "application/pdf"},
        headers=ana["headers"],
    ).json()
    assert http.put(f"/v1/files/{started['file_id']}/chunks/0", content=data, headers=ana["headers"]).status_code == 200
    assert http.post(f"/v1/files/{started['file_id']}/complete", json={}, headers=ana["headers"]).status_code == 200

    r = http.post(
        "/v1/messages",
        json={
            "conversation_id": group,
            "payload": {"type": "file", "file_id": started["file_id"], "caption": "assine"},
        },
        headers=ana["headers"],
    )
    assert r.status_code == 202, r.text

    (on_whatsapp,) = wait_for("WhatsApp has it", lambda: sandbox.messages("whatsapp", number))
    (on_telegram,) = wait_for("Telegram has it", lambda: sandbox.messages("telegram", chat))
    assert (on_whatsapp["type"], on_whatsapp["text"], on_whatsapp["file_name"]) == (
        "document",
        "assine",
        "relatório.pdf",
    )
    served = httpx.get(on_whatsapp["document_url"], trust_env=False)  # the link the platform fetches, unauthenticated
    assert (served.status_code, served.content) == (200, data)
    assert (on_telegram["type"], on_telegram["text"], on_telegram["file_size"]) == ("document", "assine", len(data))


def _count_messages(database_url: str, source_id: str) -> int:
    with psycopg.connect(database_url) as db:
        row = db.execute(
            "select count(*) from messages where metadata -> 'source' ->> 'platform_message_id' = %s", (source_id,)
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_concurrent_copies_of_a_webhook_store_one_message_and_forgeries_none(sandbox_stack: Any) -> None:
    http = sandbox_stack.http
    secrets = json.loads((sandbox_stack.data_dir / "secrets" / "sandbox.json").read_text())
    app_secret = secrets["CHAT4ALL_WHATSAPP_APP_SECRET"]
    wamid = f"wamid.{uuid.uuid4().hex}"
    value = {
        "messaging_product": "whatsapp",
        "messages": [{"from": a_number()[1:], "id": wamid, "timestamp": "1", "type": "text", "text": {"body": "hi"}}],
    }
    body = json.dumps(
        {"object": "whatsapp_business_account", "entry": [{"changes": [{"field": "messages", "value": value}]}]}
    ).encode()
    headers = {"Content-Type": "application/json", "X-Hub-Signature-256": signature(app_secret, body)}

    def post(_: int) -> int:
        with httpx.Client(base_url=sandbox_stack.base_url, trust_env=False, timeout=10) as c:
            return c.post("/webhooks/whatsapp", content=body, headers=headers).status_code

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(post, range(16)))
    forged = http.post(
        "/webhooks/whatsapp",
        content=body.replace(b"hi", b"yo"),
        headers={**headers, "X-Hub-Signature-256": signature("guessed", body)},
    )

    assert codes == [200] * 16
    assert forged.status_code == 403
    assert _count_messages(sandbox_stack.database_url, wamid) == 1
