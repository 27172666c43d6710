"""The HTTP API serves the built web app: it loads in Chromium cleanly and finds the sandbox through /config.json."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import ConsoleMessage, expect

from tests.browser.conftest import ContextFactory, WebStack

pytestmark = pytest.mark.browser


def test_the_page_loads_without_errors_and_names_the_sandbox(
    web_stack: WebStack, context_factory: ContextFactory
) -> None:
    page = context_factory().new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console.{m.type}: {m.text}") if _is_error(m) else None)
    page.on("pageerror", lambda e: problems.append(f"uncaught: {e}"))

    response = page.goto(web_stack.base_url + "/", wait_until="load")
    expect(page).to_have_title(re.compile("Chat4All"))
    page.wait_for_timeout(1000)  # what the app does as it starts (its first requests, its socket) has happened
    config = page.evaluate("fetch('/config.json').then(r => r.json())")

    assert response is not None and response.status == 200
    assert "content-security-policy" in response.headers
    assert web_stack.sandbox_url in response.headers["content-security-policy"]
    assert config["sandbox_url"] == web_stack.sandbox_url
    assert isinstance(config["max_file_size"], int) and config["max_file_size"] > 0
    assert problems == []
    assert f"The web app: {web_stack.base_url}/" in web_stack.stack.log()  # `up` says where to point a browser


def _is_error(message: ConsoleMessage) -> bool:
    return message.type in {"error", "assert"}


def test_the_api_docs_render_offline(web_stack: WebStack, context_factory: ContextFactory) -> None:
    page = context_factory().new_page()
    problems: list[str] = []
    outside: list[str] = []
    page.on("console", lambda m: problems.append(f"console.{m.type}: {m.text}") if _is_error(m) else None)
    page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(web_stack.base_url) else None)

    page.goto(web_stack.base_url + "/docs")

    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Chat4All", timeout=20_000)
    expect(page.locator(".opblock").first).to_be_visible()
    assert problems == []
    assert outside == []  # no CDN: the machine has no internet, and users' browsers need none
