"""The main screens pass axe-core's WCAG 2 A/AA rules (labels, contrast, roles, names), and work from the keyboard.

axe-core comes from the web app's npm dev dependencies (``web/node_modules``); it is injected into pages of a
context that bypasses the app's CSP, which allows no injected scripts.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import ContextFactory, WebStack
from tests.browser.test_web_app import PASSWORD, WAIT_MS, name, send_text, sign_up, start_conversation

pytestmark = pytest.mark.browser

AXE = Path(__file__).resolve().parents[2] / "web" / "node_modules" / "axe-core" / "axe.min.js"


def violations(page: Page) -> list[dict[str, Any]]:
    """What axe finds against WCAG 2.0/2.1 A and AA on the page as it is now."""
    page.add_script_tag(path=str(AXE))
    found: list[dict[str, Any]] = page.evaluate(
        """async () => {
            const rules = {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}};
            const {violations} = await axe.run(document, rules);
            const where = (v) => v.nodes.map((n) => n.target.join(' '));
            return violations.map((v) => ({id: v.id, impact: v.impact, help: v.help, nodes: where(v)}));
        }"""
    )
    return found


def test_the_main_screens_meet_wcag_aa(web_stack: WebStack, context_factory: ContextFactory) -> None:
    if not AXE.is_file():
        pytest.fail(f"{AXE} is missing: run `make web` (npm ci installs axe-core)")
    page = context_factory(bypass_csp=True).new_page()
    page.goto(web_stack.base_url + "/")
    found = {"sign-in": violations(page)}

    sign_up(page, web_stack, name("a11y"), "Accessible")
    start_conversation(page, f"whatsapp:+5531{abs(hash(page)) % 10**9:09d}")
    send_text(page, "Olá!")
    expect(page.locator("li.bubble.mine")).to_have_count(1)
    found["chat"] = violations(page)
    page.get_by_role("link", name="Phones").click()
    expect(page.get_by_role("heading", name="Phones")).to_be_visible()
    found["phones"] = violations(page)
    page.get_by_role("link", name="Settings").click()
    expect(page.get_by_role("heading", name="Linked accounts")).to_be_visible()
    found["settings"] = violations(page)

    failing = {screen: v for screen, v in found.items() if v}
    assert failing == {}, json.dumps(failing, indent=1)


def test_signing_in_and_sending_work_from_the_keyboard(web_stack: WebStack, context_factory: ContextFactory) -> None:
    who, other = name("keys"), name("keymate")
    for username in (who, other):
        assert web_stack.stack.http.post("/v1/users", json={"username": username, "password": PASSWORD}).is_success
    page = context_factory().new_page()
    page.goto(web_stack.base_url + "/")

    page.keyboard.press("Tab")  # the skip link comes first only once signed in; the form's first field here
    page.get_by_label("Username").focus()
    page.keyboard.type(who)
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    expect(page.get_by_role("status").filter(has_text="Live")).to_be_visible(timeout=WAIT_MS)

    page.get_by_role("button", name="New conversation").focus()
    page.keyboard.press("Enter")
    page.keyboard.press("Tab")  # Private (checked)
    page.keyboard.press("Tab")  # With
    page.keyboard.type(other)
    page.keyboard.press("Enter")
    expect(page.locator("#chat-title")).to_have_text(other, timeout=WAIT_MS)

    page.get_by_label("Message", exact=True).focus()
    page.keyboard.type("sent with Enter")
    page.keyboard.press("Enter")
    expect(page.locator("li.bubble.mine").filter(has_text="sent with Enter")).to_be_visible()
    expect(page.get_by_label("Message", exact=True)).to_have_value("")
    assert re.search("sent with Enter", page.get_by_role("log", name="Messages").inner_text())
