"""The rig every channel is held to: Chat4All in process, the sandbox calling its real webhooks, real connectors.

One in-memory store behind Chat4All's HTTP app and the pipeline's use cases (relay, route, deliver, apply
receipts); the sandbox posts its signed webhooks through ``httpx.ASGITransport`` to Chat4All's
``/webhooks/<channel>``, and each channel's real connector reaches the sandbox the same way. Everything runs
in the test's event loop, so no thread or socket is involved.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, Final, TypeVar

import attrs
import httpx
import pytest
from litestar import Litestar

from adapters.channels.instagram import InstagramConnector
from adapters.channels.messenger import MessengerConnector
from adapters.channels.meta_webhook import SIGNATURE_HEADER, signature
from adapters.channels.telegram import SECRET_HEADER, TelegramConnector
from adapters.channels.whatsapp import WhatsAppConnector
from adapters.memory import InMemoryStore
from adapters.storage.filesystem import FilesystemObjectStore
from adapters.system import SystemClock
from application import topics
from application.attachments import Attachments
from application.pipeline import (
    ChannelDeps,
    CircuitBreaker,
    DeliveryJob,
    JobResult,
    PipelineDeps,
    Receipt,
    RetryPolicy,
    Watermark,
    apply_receipts,
    deliver_jobs,
    relay_outbox,
    route_events,
)
from application.ports import ChannelConnector
from domain.channels import Channel, ChannelAddress
from entrypoints.sandbox.app import create_app
from entrypoints.sandbox.config import SandboxConfig
from tests.api.conftest import build_app
from tests.builders import FakePublisher

T = TypeVar("T")

CHAT4ALL_URL: Final = "http://chat4all"
SANDBOX_URL: Final = "http://sandbox"
VERSION: Final = "v25.0"
WA_TOKEN, WA_PHONE_ID, WA_SECRET = "EAAG-whatsapp-token", "106540352242922", "whatsapp-app-secret"
MS_TOKEN, MS_SECRET = "EAAG-messenger-page-token", "messenger-app-secret"
IG_TOKEN, IG_SECRET = "IGAA-instagram-token", "instagram-app-secret"
TG_TOKEN, TG_SECRET = "123456:ABC-telegram-token", "tg_webhook-secret"
INBOX_OWNER: Final = "inbox"

CHANNELS: Final = (Channel.WHATSAPP, Channel.MESSENGER, Channel.INSTAGRAM, Channel.TELEGRAM)
SECRETS: Final = {
    Channel.WHATSAPP: WA_SECRET,
    Channel.MESSENGER: MS_SECRET,
    Channel.INSTAGRAM: IG_SECRET,
    Channel.TELEGRAM: TG_SECRET,
}
CONTACTS: Final = {  # the external person each channel's scenarios write to, as the platform names them
    Channel.WHATSAPP: "+5511999998888",
    Channel.MESSENGER: "1254459154682919",
    Channel.INSTAGRAM: "17841405309211844",
    Channel.TELEGRAM: "987654321",
}

SANDBOX: Final = SandboxConfig(
    chat4all_url=CHAT4ALL_URL,
    graph_api_version=VERSION,
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
    webhook_retry_delays_s=(),  # a refused webhook shows in the log as refused, not retried behind the test's back
)


def asgi(app: Litestar) -> httpx.ASGITransport:
    """A transport that calls ``app`` in this event loop, without a socket."""
    return httpx.ASGITransport(app=app)  # type: ignore[arg-type]  # Litestar's scope types are narrower than httpx's


def contact(channel: Channel) -> ChannelAddress:
    return ChannelAddress.of(channel, CONTACTS[channel])


def signed(channel: Channel, body: bytes, secret: str | None = None) -> dict[str, str]:
    """The headers ``channel``'s platform sends with ``body``: Meta's signature, or Telegram's secret token."""
    secret = SECRETS[channel] if secret is None else secret
    if channel is Channel.TELEGRAM:
        return {"Content-Type": "application/json", SECRET_HEADER: secret}
    return {"Content-Type": "application/json", SIGNATURE_HEADER: signature(secret, body)}


def body_of(entry: Mapping[str, Any]) -> bytes:
    """The bytes of a webhook from the sandbox's log (which keeps the body as JSON)."""
    return json.dumps(entry["body"], separators=(",", ":")).encode()


@asynccontextmanager
async def serving(app: Litestar) -> AsyncIterator[Litestar]:
    """``app`` with its lifespan run, as a server would.

    The lifespan runs in a task of its own: a fixture's setup and teardown run in different tasks,
    and the lifespan's task group must be left in the task that entered it.
    """
    started, stop = asyncio.Event(), asyncio.Event()

    async def lifespan() -> None:
        async with app.lifespan():
            started.set()
            await stop.wait()

    task = asyncio.create_task(lifespan())
    waiting = asyncio.create_task(started.wait())
    await asyncio.wait([task, waiting], return_when=asyncio.FIRST_COMPLETED)
    if not started.is_set():
        waiting.cancel()
        task.result()  # the startup's error
    try:
        yield app
    finally:
        stop.set()
        await task


async def until(check: Callable[[], Awaitable[T | None]], what: str, *, within_s: float = 2.0) -> T:
    """``await check()`` once it is truthy: the sandbox sends receipts in the background, so tests wait, boundedly."""
    step = 0.005
    for _ in range(int(within_s / step)):
        if found := await check():
            return found
        await asyncio.sleep(step)
    raise AssertionError(f"{what}: not within {within_s} s")


class Chat4AllApi:
    """Chat4All's public HTTP API, as a client application and the platforms use it."""

    def __init__(self, app: Litestar) -> None:
        self.app = app
        self.http = httpx.AsyncClient(transport=asgi(app), base_url=CHAT4ALL_URL)

    async def user(self, username: str, password: str = "correct horse") -> dict[str, str]:
        """Register ``username``; its authorization headers."""
        created = await self.http.post("/v1/users", json={"username": username, "password": password})
        assert created.status_code == 201, created.text
        token = await self.http.post("/auth/token", json={"username": username, "password": password})
        assert token.status_code == 200, token.text
        return {"Authorization": f"Bearer {token.json()['access_token']}"}

    async def conversation(self, who: Mapping[str, str], member: str) -> str:
        r = await self.http.post("/v1/conversations", json={"type": "private", "members": [member]}, headers=who)
        assert r.status_code == 201, r.text
        return str(r.json()["conversation_id"])

    async def send(self, who: Mapping[str, str], conversation_id: str, text: str) -> str:
        body = {"conversation_id": conversation_id, "payload": {"type": "text", "text": text}}
        r = await self.http.post("/v1/messages", json=body, headers=who)
        assert r.status_code == 202, r.text
        return str(r.json()["message_id"])

    async def upload(self, who: Mapping[str, str], data: bytes, filename: str, content_type: str) -> str:
        """Upload ``data`` as one chunk; the completed file's id."""
        started = await self.http.post(
            "/v1/files/initiate",
            json={"filename": filename, "size": len(data), "content_type": content_type},
            headers=who,
        )
        assert started.status_code == 201, started.text
        file_id = str(started.json()["file_id"])
        put = await self.http.put(f"/v1/files/{file_id}/chunks/0", content=data, headers=who)
        assert put.status_code == 200, put.text
        done = await self.http.post(f"/v1/files/{file_id}/complete", json={}, headers=who)
        assert done.status_code == 200, done.text
        return file_id

    async def send_file(self, who: Mapping[str, str], conversation_id: str, file_id: str, caption: str) -> str:
        body = {"conversation_id": conversation_id, "payload": {"type": "file", "file_id": file_id, "caption": caption}}
        r = await self.http.post("/v1/messages", json=body, headers=who)
        assert r.status_code == 202, r.text
        return str(r.json()["message_id"])

    async def status(self, who: Mapping[str, str], message_id: str) -> dict[str, Any]:
        r = await self.http.get(f"/v1/messages/{message_id}/status", headers=who)
        assert r.status_code == 200, r.text
        answer: dict[str, Any] = r.json()
        return answer

    async def history(self, who: Mapping[str, str], conversation_id: str) -> list[dict[str, Any]]:
        r = await self.http.get(f"/v1/conversations/{conversation_id}/messages", headers=who)
        assert r.status_code == 200, r.text
        items: list[dict[str, Any]] = r.json()["items"]
        return items

    async def webhook(self, channel: Channel, body: bytes, headers: Mapping[str, str]) -> httpx.Response:
        """POST ``body`` to ``/webhooks/<channel>`` as the platform would."""
        return await self.http.post(f"/webhooks/{channel.value}", content=body, headers=dict(headers))


class SandboxControl:
    """The sandbox's control API, and the app behind it (which the connectors call)."""

    def __init__(self, app: Litestar) -> None:
        self.app = app
        self.http = httpx.AsyncClient(transport=asgi(app), base_url=SANDBOX_URL)

    async def _post(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        r = await self.http.post(path, json=dict(body))
        assert r.status_code == 200, r.text
        answer: dict[str, Any] = r.json()
        return answer

    async def settings(self, **values: Any) -> dict[str, Any]:
        return await self._post("/sandbox/settings", values)

    async def faults(self, channel: Channel, **values: Any) -> dict[str, Any]:
        return await self._post("/sandbox/faults", {"channel": channel.value, **values})

    async def inbound(self, channel: Channel, sender: str, text: str) -> dict[str, Any]:
        """A person on ``channel`` writes to the business; the answer holds Chat4All's ``webhook_status``."""
        return await self._post("/sandbox/inbound", {"channel": channel.value, "from": sender, "text": text})

    async def messages(self, channel: Channel) -> list[dict[str, Any]]:
        """What the platform accepted from Chat4All, oldest first."""
        r = await self.http.get("/sandbox/messages", params={"channel": channel.value})
        items: list[dict[str, Any]] = r.json()["items"]
        return items

    async def webhooks(self, channel: Channel) -> list[dict[str, Any]]:
        """Every webhook attempt to Chat4All on ``channel``, oldest first (with its body)."""
        r = await self.http.get("/sandbox/webhooks", params={"channel": channel.value})
        items: list[dict[str, Any]] = r.json()["items"]
        return items

    async def wait_for_webhooks(self, channel: Channel, count: int) -> list[dict[str, Any]]:
        """The log once it holds ``count`` attempts on ``channel`` (receipts go out in the background)."""

        async def enough() -> list[dict[str, Any]] | None:
            log = await self.webhooks(channel)
            return log if len(log) >= count else None

        if count == 0:
            return await self.webhooks(channel)
        return await until(enough, f"{count} {channel.value} webhooks")


@attrs.define
class Pipeline:
    """The event pipeline's workers, one step at a time, on the shared store; the event log is a list."""

    deps: PipelineDeps
    log: FakePublisher
    objects: FilesystemObjectStore

    def take(self, topic: str) -> list[Mapping[str, Any]]:
        """Consume the events on ``topic`` published so far."""
        taken = self.log.on(topic)
        self.log.events = [e for e in self.log.events if e.topic != topic]
        return taken

    async def relay(self) -> None:
        while await relay_outbox(self.deps):
            pass

    async def route(self, channel: Channel) -> list[DeliveryJob]:
        """Relay the outbox and route the new messages; the jobs published for ``channel``."""
        await self.relay()
        await route_events(self.deps, self.take(topics.MESSAGES))
        return [DeliveryJob.from_event(e) for e in self.take(topics.outbound(channel))]

    def worker(self, connector: ChannelConnector, *, attempts: int = 1) -> ChannelDeps:
        """A channel worker's collaborators; its breaker opens on the first failure and lets a probe through at once."""
        breaker = CircuitBreaker(self.deps.clock, threshold=1, reset_after=timedelta(0))
        return ChannelDeps(
            pipeline=self.deps,
            connector=connector,
            breaker=breaker,
            retry=RetryPolicy(max_attempts=attempts),
            attachments=Attachments(uow=self.deps.uow, store=self.objects, clock=self.deps.clock),
        )

    async def deliver(self, worker: ChannelDeps, jobs: list[DeliveryJob]) -> list[JobResult]:
        """What a channel worker does with a batch of jobs from its topic."""
        return await deliver_jobs(worker, jobs)

    async def apply_receipts(self) -> int:
        """What the status worker does: relay, parse ``chat.receipts`` and apply them; how many deliveries moved."""
        await self.relay()
        receipts = [
            Watermark.from_event(e) if e.get("type") == "delivery.watermark" else Receipt.from_event(e)
            for e in self.take(topics.RECEIPTS)
        ]
        return await apply_receipts(self.deps, receipts)


@attrs.frozen
class Thread:
    """A Chat4All user's private conversation with the channel's contact."""

    author: Mapping[str, str]
    """The user's authorization headers."""
    conversation_id: str
    to: ChannelAddress


Connect = Callable[[Channel, SandboxControl], ChannelConnector]
"""Makes a channel's real connector, pointed at a sandbox."""


def _connector(channel: Channel, transport: httpx.AsyncBaseTransport) -> ChannelConnector:
    where: dict[str, Any] = {"base_url": SANDBOX_URL, "transport": transport}
    if channel is Channel.WHATSAPP:
        return WhatsAppConnector(WA_TOKEN, WA_PHONE_ID, api_version=VERSION, **where)
    if channel is Channel.MESSENGER:
        return MessengerConnector(MS_TOKEN, "me", api_version=VERSION, **where)
    if channel is Channel.INSTAGRAM:
        return InstagramConnector(IG_TOKEN, "me", api_version=VERSION, **where)
    return TelegramConnector(TG_TOKEN, **where)


# --- fixtures ----------------------------------------------------------------------------------------


@pytest.fixture(params=CHANNELS, ids=lambda c: c.value)
def channel(request: pytest.FixtureRequest) -> Channel:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def store() -> InMemoryStore:
    return InMemoryStore()


@pytest.fixture
async def chat4all(store: InMemoryStore, objects: FilesystemObjectStore) -> AsyncIterator[Chat4AllApi]:
    """Chat4All's HTTP app on ``store``, every channel's webhook secret set, and its inbox owner registered."""
    app = build_app(
        store,
        whatsapp_app_secret=WA_SECRET,
        messenger_app_secret=MS_SECRET,
        instagram_app_secret=IG_SECRET,
        telegram_webhook_secret=TG_SECRET,
        inbox_owner=INBOX_OWNER,
    )
    async with serving(app):
        app.state.files = attrs.evolve(app.state.files, store=objects)  # links the platforms can fetch
        api = Chat4AllApi(app)
        await api.user(INBOX_OWNER)
        yield api
        await api.http.aclose()


@pytest.fixture
def objects(tmp_path: Path) -> FilesystemObjectStore:
    """Where Chat4All keeps files: its download links point at its own HTTP app."""
    return FilesystemObjectStore(tmp_path / "files", secret=b"k" * 32, public_base_url=CHAT4ALL_URL)


class Hosts(httpx.AsyncBaseTransport):
    """Calls each host's app in process: a connector reaches the platform, and fetches files from Chat4All."""

    def __init__(self, apps: Mapping[str, Litestar]) -> None:
        self._by_host = {host: asgi(app) for host, app in apps.items()}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._by_host[request.url.host].handle_async_request(request)


SandboxFactory = Callable[..., AbstractAsyncContextManager[SandboxControl]]


@pytest.fixture
def sandbox_with(chat4all: Chat4AllApi) -> SandboxFactory:
    """A sandbox on ``SANDBOX`` with some fields changed, whose webhooks go to ``chat4all`` (unless
    ``webhooks_transport`` carries them elsewhere); receipts without delay."""

    @asynccontextmanager
    async def start(
        *, webhooks_transport: httpx.AsyncBaseTransport | None = None, **changes: Any
    ) -> AsyncIterator[SandboxControl]:
        transport = webhooks_transport or asgi(chat4all.app)
        app = create_app(attrs.evolve(SANDBOX, **changes), transport=transport)
        async with serving(app):  # its shutdown cancels the receipts still pending
            control = SandboxControl(app)
            await control.settings(delay_ms=0)
            yield control
            await control.http.aclose()

    return start


@pytest.fixture
async def sandbox(sandbox_with: SandboxFactory) -> AsyncIterator[SandboxControl]:
    async with sandbox_with() as control:
        yield control


@pytest.fixture
async def connect(chat4all: Chat4AllApi) -> AsyncIterator[Connect]:
    """Make a channel's real connector, pointed at a sandbox (and fetching files from Chat4All); closed at the end."""
    made: list[ChannelConnector] = []

    def make(channel: Channel, sandbox: SandboxControl) -> ChannelConnector:
        made.append(_connector(channel, Hosts({"sandbox": sandbox.app, "chat4all": chat4all.app})))
        return made[-1]

    yield make
    for connector in made:
        await connector.close()


@pytest.fixture
def connector(channel: Channel, sandbox: SandboxControl, connect: Connect) -> ChannelConnector:
    return connect(channel, sandbox)


@pytest.fixture
def pipeline(store: InMemoryStore, objects: FilesystemObjectStore) -> Pipeline:
    # The system clock, as Chat4All's HTTP app has: the history interleaves both sides' entries.
    log = FakePublisher()
    return Pipeline(PipelineDeps(uow=store.uow, clock=SystemClock(), publisher=log), log, objects)


@pytest.fixture
async def thread(channel: Channel, chat4all: Chat4AllApi) -> Thread:
    ana = await chat4all.user("ana")
    to = contact(channel)
    return Thread(ana, await chat4all.conversation(ana, str(to)), to)
