"""A sandbox under test, with a stand-in for Chat4All's webhook endpoints that records what the platforms send."""

from __future__ import annotations

import asyncio
import inspect
import json
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import attrs
import httpx
import pytest
from litestar.testing import AsyncTestClient

from entrypoints.sandbox.app import create_app
from entrypoints.sandbox.config import SandboxConfig

CHAT4ALL = "http://chat4all.test"
WA_TOKEN = "EAAG-whatsapp-token"
WA_PHONE_ID = "106540352242922"
WA_SECRET = "whatsapp-app-secret"
MS_TOKEN = "EAAG-messenger-page-token"
MS_SECRET = "messenger-app-secret"
IG_TOKEN = "IGAA-instagram-token"
IG_SECRET = "instagram-app-secret"
TG_TOKEN = "123456:ABC-telegram-token"
TG_SECRET = "tg_webhook-secret"
VERSION = "v25.0"

CONFIG = SandboxConfig(
    chat4all_url=CHAT4ALL,
    whatsapp_access_token=WA_TOKEN,
    whatsapp_phone_number_id=WA_PHONE_ID,
    whatsapp_app_secret=WA_SECRET,
    messenger_page_token=MS_TOKEN,
    messenger_app_secret=MS_SECRET,
    instagram_access_token=IG_TOKEN,
    instagram_app_secret=IG_SECRET,
    telegram_bot_token=TG_TOKEN,
    telegram_webhook_secret=TG_SECRET,
    seed=7,
    webhook_retry_delays_s=(0.01, 0.02),
)


@attrs.frozen
class Call:
    """One webhook as Chat4All received it."""

    url: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@attrs.frozen
class Update:
    """One update as Chat4All received it, within the call that carried it (Meta batches many into one POST).

    ``json`` is the update in an envelope of its own (``{"object", "entry": [its entry]}``; Telegram's
    update as is), as the platform would have sent it alone; ``url``, ``headers`` and ``body`` are the
    call's, which the signature covers.
    """

    call: Call
    json: Any

    @property
    def url(self) -> str:
        return self.call.url

    @property
    def headers(self) -> dict[str, str]:
        return self.call.headers

    @property
    def body(self) -> bytes:
        return self.call.body


def updates_in(call: Call) -> list[Update]:
    """The updates a call carried, in order: a Meta webhook's entries, or Telegram's one update."""
    payload = call.json
    if isinstance(payload, dict) and "object" in payload:
        return [Update(call, {"object": payload["object"], "entry": [entry]}) for entry in payload["entry"]]
    return [Update(call, payload)]


class Chat4AllStub:
    """Chat4All's webhook endpoints: records every call and answers the scripted statuses (then 200)."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.answers: list[int | Exception] = []
        self._lock = threading.Lock()  # the sandbox may run in the test client's portal thread
        self.transport = httpx.MockTransport(self._handle)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.calls.append(Call(str(request.url), dict(request.headers), request.content))
            answer = self.answers.pop(0) if self.answers else 200
        if isinstance(answer, Exception):
            raise answer
        return httpx.Response(answer)

    def to(self, channel: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.url == f"{CHAT4ALL}/webhooks/{channel}"]

    async def wait(self, channel: str, count: int) -> list[Call]:
        """The first ``count`` calls to ``channel``'s webhook, once that many arrived."""
        await until(lambda: len(self.to(channel)) >= count)
        return self.to(channel)[:count]

    def updates(self, channel: str) -> list[Update]:
        """Every update ``channel``'s webhook received, in the order received, whichever call carried it."""
        return [update for call in self.to(channel) for update in updates_in(call)]

    async def wait_updates(self, channel: str, count: int) -> list[Update]:
        """The first ``count`` updates to ``channel``'s webhook, once that many arrived."""
        await until(lambda: len(self.updates(channel)) >= count)
        return self.updates(channel)[:count]


async def until(check: Callable[[], bool | Awaitable[bool]], *, within_s: float = 2.0) -> None:
    """Poll ``check`` until it holds: the sandbox delivers webhooks in the background (under the test client,
    in another thread), so a test waits for them rather than sleeping a fixed time."""
    step = 0.005
    for _ in range(int(within_s / step)):
        result = check()
        if await result if inspect.isawaitable(result) else result:
            return
        await asyncio.sleep(step)
    raise AssertionError(f"not true within {within_s} s")


@pytest.fixture
def chat4all() -> Chat4AllStub:
    return Chat4AllStub()


SandboxFactory = Callable[..., AbstractAsyncContextManager[AsyncTestClient[Any]]]


@pytest.fixture
def sandbox_with(chat4all: Chat4AllStub) -> SandboxFactory:
    """A sandbox on ``CONFIG`` with some fields changed, receipts without delay."""

    @asynccontextmanager
    async def start(**changes: Any) -> AsyncIterator[AsyncTestClient[Any]]:
        app = create_app(attrs.evolve(CONFIG, **changes), transport=chat4all.transport)
        async with AsyncTestClient(app, base_url="http://sandbox.test") as client:
            (await client.post("/sandbox/settings", json={"delay_ms": 0})).raise_for_status()
            yield client

    return start


@pytest.fixture
async def sandbox(sandbox_with: SandboxFactory) -> AsyncIterator[AsyncTestClient[Any]]:
    async with sandbox_with() as client:
        yield client


def graph_headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
