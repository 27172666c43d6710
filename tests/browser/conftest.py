"""The web app in a real browser: Debian's Chromium driven by Playwright (sync API), against a whole stack.

``chromium`` (module): one browser per test module (see its docstring). ``context_factory``: fresh, isolated
browser contexts (cookies, storage, downloads), closed after the test. ``page``: a page in a fresh context.
``web_stack`` (session): `chat4all up` with the channel sandbox, as `make up` runs it, serving the built web
app (`make web`).

Playwright never downloads a browser here (`playwright install` is not run): ``make browser`` installs
Debian's ``chromium`` package and the fixtures launch ``/usr/bin/chromium``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from entrypoints.settings import WEB_DIST
from tests.e2e.conftest import RunningStack, StackLauncher, launch_stack

__all__ = ["WebStack", "launch_stack"]  # launch_stack: the e2e fixture, shared with the browser tests

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",  # as root, in a container
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
VIEWPORT = {"width": 1280, "height": 800}
INBOX = ("inbox", "inbox-password")
"""The inbox owner of ``web_stack`` (CHAT4ALL_INBOX_OWNER): what arrives from a new number lands with them."""

ContextFactory = Callable[..., BrowserContext]


@dataclass
class WebStack:
    """A running stack with the sandbox, serving the web app."""

    stack: RunningStack
    """The `chat4all up` process: ``.http`` (an httpx client on the API), ``.env``, ``.log()``, ``.wait_until``."""
    base_url: str
    """The HTTP API, which serves the web app at ``/``: ``http://127.0.0.1:<port>`` (no trailing slash)."""
    sandbox_url: str
    """The channel sandbox (its control API under ``/sandbox``), as ``/config.json`` names it."""
    sandbox: httpx.Client
    """An httpx client on the sandbox."""
    inbox: tuple[str, str] = INBOX
    """Username and password of the inbox owner (registered)."""


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    """Headless Chromium (``/usr/bin/chromium``), for one test module.

    Not for the session: while Playwright's sync API is up, its event loop counts as running in the main
    thread, and the asyncio tests that pytest-randomly puts between browser tests could not run their own.
    pytest-randomly keeps a module's tests together, so a module's browser shares one Chromium.
    """
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make browser` (installs Debian's chromium package)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def context_factory(chromium: Browser) -> Iterator[ContextFactory]:
    """``context_factory(**options)`` opens a fresh browser context (``Browser.new_context`` options; by default
    ``accept_downloads=True`` and a 1280x800 viewport); every context it opened is closed after the test."""
    opened: list[BrowserContext] = []

    def new_context(**options: Any) -> BrowserContext:
        context = chromium.new_context(**{"accept_downloads": True, "viewport": VIEWPORT, **options})
        opened.append(context)
        return context

    yield new_context
    for context in opened:
        context.close()


@pytest.fixture
def page(context_factory: ContextFactory) -> Page:
    """A page in a fresh context of its own."""
    return context_factory().new_page()


@pytest.fixture(scope="session")
def web_stack(launch_stack: StackLauncher) -> Iterator[WebStack]:
    """`chat4all up` with the channel sandbox (as `make up` runs it when no platform is configured), serving
    the web app built into ``web/dist``; stopped at the end of the session."""
    if not (WEB_DIST / "index.html").is_file():
        pytest.fail(f"the web app is not built ({WEB_DIST / 'index.html'} is missing): run `make web`")
    stack = launch_stack(extra_env={"CHAT4ALL_SANDBOX": "true", "CHAT4ALL_INBOX_OWNER": INBOX[0]})
    sandbox_url = f"http://127.0.0.1:{stack.env['CHAT4ALL_SANDBOX_PORT']}"
    sandbox = httpx.Client(base_url=sandbox_url, trust_env=False, timeout=10.0)
    try:
        stack.wait_until(lambda: sandbox.get("/health").status_code == 200, 30, "the sandbox is up")
        inbox = stack.http.post("/v1/users", json={"username": INBOX[0], "password": INBOX[1]})
        assert inbox.status_code == 201, inbox.text
        yield WebStack(stack=stack, base_url=stack.base_url, sandbox_url=sandbox_url, sandbox=sandbox)
    finally:
        sandbox.close()
        stack.stop()
