"""The channel sandbox's HTTP server: the four platform APIs, the control API under ``/sandbox``, webhook delivery.

The platform routes answer exactly as the platforms do (Graph errors, Bot API ``ok: false``), so
that Chat4All's connectors run against the sandbox unchanged; the control routes answer
``application/problem+json`` on errors. What the platforms remember and check lives in
``platforms.py``; this module only translates HTTP and runs the webhooks in the background.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
import zlib
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from http import HTTPStatus
from typing import Annotated, Any, Literal

import attrs
import httpx
import msgspec
from litestar import Litestar, Request, Response, get, post, route
from litestar.config.cors import CORSConfig
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency, Provide
from litestar.enums import HttpMethod
from litestar.exceptions import HTTPException, NotFoundException, ValidationException
from litestar.openapi import OpenAPIConfig
from litestar.params import FromPath, JSONBody, QueryParameter
from msgspec import UNSET, UnsetType

from domain.channels import Channel
from entrypoints.sandbox.config import SandboxConfig
from entrypoints.sandbox.platforms import (
    BATCHED,
    SERVED,
    InvalidControl,
    Message,
    PlatformError,
    Sandbox,
    Upload,
    Webhook,
    invalid_parameter,
    iso,
    telegram_error,
)

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
MAX_BODY_BYTES = 60 * 1024 * 1024  # Telegram bots upload documents up to 50 MB
TELEGRAM_SENDS = frozenset({"sendmessage", "senddocument"})
_FORMS = ("application/x-www-form-urlencoded", "multipart/form-data")
BATCH_MAX_BYTES = 512 * 1024
"""A batch stops growing at this many body bytes: Chat4All takes request bodies of up to 1 MiB by default."""


@attrs.frozen
class Attempt:
    """One try at delivering one update, as ``GET /sandbox/webhooks`` lists it.

    An update travels in a batch (one POST that may carry many, ``Sandbox.merge``): every update of a
    batch gets an entry per attempt, with the batch's outcome. ``hook`` is the update alone, as its
    platform would send it by itself; ``batch`` numbers the POST and ``batch_size`` counts its updates.
    """

    hook: Webhook
    attempt: int
    at: float
    status: int | None = None
    error: str | None = None
    batch: int = 0
    batch_size: int = 1

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def as_json(self) -> dict[str, Any]:
        try:
            body: Any = json.loads(self.hook.body)
        except ValueError:
            body = self.hook.body.decode(errors="replace")
        return {
            "channel": self.hook.channel.value,
            "kind": self.hook.kind,
            "url": self.hook.url,
            "attempt": self.attempt,
            "status": self.status,
            "error": self.error,
            "at": iso(self.at),
            "batch": self.batch,
            "batch_size": self.batch_size,
            "body": body,
        }


@attrs.define
class _Waiting:
    """An update in a lane, and whoever waits for its first attempt (``POST /sandbox/inbound``)."""

    hook: Webhook
    since: float
    answer: asyncio.Future[Attempt] | None = None


@attrs.define
class _Lane:
    """Updates about some of the people of one queue, oldest first; its worker posts one batch at a time."""

    waiting: collections.deque[_Waiting] = attrs.field(factory=collections.deque)
    arrived: asyncio.Event = attrs.field(factory=asyncio.Event)
    urgent: int = 0
    """How many waiting updates someone awaits: those go without lingering."""


@attrs.define
class _Queue:
    """The webhooks to one URL of one platform: ``lanes`` by person, and the POSTs in flight (retries too)."""

    channel: Channel
    lanes: list[_Lane]
    slots: asyncio.Semaphore


class Webhooks:
    """Calls Chat4All the way the platforms do: in batches, a few calls at a time, retried when it does not answer 2xx.

    Updates queue per (channel, URL). A queue has ``concurrency`` lanes, and each update goes to the
    lane of its person (``Webhook.peer``), so that a person's updates arrive in order. A lane's worker
    takes whatever waits (at most ``batch_max`` updates, or one for Telegram), after lingering
    ``linger_s`` for company when it finds a lone update, merges it into one signed body
    (``merge``), posts it, and takes the next batch once Chat4All has answered. At most
    ``concurrency`` POSTs per queue are in flight, retries included, so the HTTP client's pool never
    holds more than that. A failed batch is retried whole in the background, after ``retry_delays``,
    without holding its lane up.

    Every background task is kept in ``_tasks`` (the event loop holds only weak references) and
    cancelled on ``reset`` and at shutdown, so nothing outlives the test or the server.
    """

    def __init__(
        self,
        *,
        transport: httpx.AsyncBaseTransport | None,
        retry_delays: Sequence[float],
        timeout: float,
        merge: Callable[[Sequence[Webhook]], Webhook],
        concurrency: int = 4,
        batch_max: int = 100,
        linger_s: float = 0.005,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if concurrency < 1 or batch_max < 1 or linger_s < 0:
            raise ValueError("concurrency and batch_max are at least 1, and linger_s is not negative")
        self._client = httpx.AsyncClient(transport=transport, timeout=timeout)
        self._delays = tuple(retry_delays)
        self._merge = merge
        self._concurrency = concurrency
        self._batch_max = batch_max
        self._linger_s = linger_s
        self._clock = clock
        self._tasks: set[asyncio.Task[None]] = set()
        self._queues: dict[tuple[Channel, str], _Queue] = {}
        self._answers: set[asyncio.Future[Attempt]] = set()
        self._batches = 0
        self.log: list[Attempt] = []

    async def deliver(self, hook: Webhook) -> Attempt:
        """Send ``hook`` without lingering and await its first attempt (retries, if any, follow in the background)."""
        answer: asyncio.Future[Attempt] = asyncio.get_running_loop().create_future()
        self._answers.add(answer)
        answer.add_done_callback(self._answers.discard)
        self.enqueue(hook, answer=answer)
        try:
            return await asyncio.shield(answer)
        except asyncio.CancelledError:
            if not answer.cancelled():
                raise  # our caller was cancelled, not the delivery
            return Attempt(hook, 1, self._clock(), error="cancelled: the sandbox was reset before it was sent")

    def enqueue(self, hook: Webhook, *, answer: asyncio.Future[Attempt] | None = None) -> None:
        """Queue ``hook`` behind the earlier updates about the same person."""
        queue = self._queue(hook)
        lane = queue.lanes[zlib.crc32(hook.peer.encode()) % len(queue.lanes)]
        lane.waiting.append(_Waiting(hook, time.monotonic(), answer))
        lane.urgent += answer is not None
        lane.arrived.set()

    def follow_up(self, build: Callable[[str], Webhook], kinds: Sequence[str], delay_s: float) -> None:
        """Queue the receipts ``kinds``, in order, ``delay_s`` apart (the first ``delay_s`` after now)."""
        if kinds:
            self.spawn(self._receipts(build, kinds, delay_s))

    def spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(_quietly(work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def cancel_pending(self) -> None:
        tasks, self._tasks = self._tasks, set()
        queues, self._queues = self._queues, {}
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        answers, self._answers = self._answers, set()
        for answer in answers:
            answer.cancel()  # its update was dropped: whoever waits learns it
        queues.clear()

    async def close(self) -> None:
        await self.cancel_pending()
        await self._client.aclose()

    def _queue(self, hook: Webhook) -> _Queue:
        key = (hook.channel, hook.url)
        queue = self._queues.get(key)
        if queue is None:
            lanes = [_Lane() for _ in range(self._concurrency)]
            queue = self._queues[key] = _Queue(hook.channel, lanes, asyncio.Semaphore(self._concurrency))
            for lane in lanes:
                self.spawn(self._work(queue, lane))
        return queue

    async def _receipts(self, build: Callable[[str], Webhook], kinds: Sequence[str], delay_s: float) -> None:
        for kind in kinds:
            await asyncio.sleep(delay_s)
            self.enqueue(build(kind))

    async def _work(self, queue: _Queue, lane: _Lane) -> None:
        """A lane's worker: one batch at a time, for as long as the sandbox runs."""
        while True:
            while not lane.waiting:
                lane.arrived.clear()
                await lane.arrived.wait()
            await self._linger(queue, lane)
            async with queue.slots:
                batch = self._take(queue, lane)
                try:
                    attempts = await self._post(batch, 1, self._next_batch())
                except Exception as exc:  # a bug, not Chat4All: tell the waiters, keep the lane going
                    log.exception("sandbox: could not post a %s batch", queue.channel.value)
                    attempts = [Attempt(w.hook, 1, self._clock(), error=f"{type(exc).__name__}: {exc}") for w in batch]
            for waiting, attempt in zip(batch, attempts, strict=True):
                if waiting.answer is not None and not waiting.answer.done():
                    waiting.answer.set_result(attempt)
            first = attempts[0]
            if not first.ok and first.batch and self._delays:
                self.spawn(self._retry(queue, [w.hook for w in batch], first.batch))

    async def _linger(self, queue: _Queue, lane: _Lane) -> None:
        """Give a lone update a moment's company (Meta batches too), unless someone awaits one or the batch is full."""
        if queue.channel not in BATCHED or lane.urgent or len(lane.waiting) >= self._batch_max:
            return
        left = self._linger_s - (time.monotonic() - lane.waiting[0].since)
        if left > 0:
            await asyncio.sleep(left)

    def _take(self, queue: _Queue, lane: _Lane) -> list[_Waiting]:
        """The oldest waiting updates that fit in one POST: one on Telegram, else up to ``batch_max`` and a size cap."""
        most = self._batch_max if queue.channel in BATCHED else 1
        batch = [lane.waiting.popleft()]
        size = len(batch[0].hook.body)
        while lane.waiting and len(batch) < most and size + len(lane.waiting[0].hook.body) <= BATCH_MAX_BYTES:
            batch.append(lane.waiting.popleft())
            size += len(batch[-1].hook.body)
        lane.urgent -= sum(w.answer is not None for w in batch)
        return batch

    def _next_batch(self) -> int:
        self._batches += 1
        return self._batches

    async def _retry(self, queue: _Queue, hooks: Sequence[Webhook], batch: int) -> None:
        for number, delay in enumerate(self._delays, start=2):
            await asyncio.sleep(delay)
            async with queue.slots:
                if (await self._post([_Waiting(h, 0.0) for h in hooks], number, batch))[0].ok:
                    return
        log.warning(
            "sandbox: gave up on a %s webhook of %d update(s) to %s", queue.channel.value, len(hooks), hooks[0].url
        )

    async def _post(self, batch: Sequence[_Waiting], number: int, batch_id: int) -> list[Attempt]:
        """One attempt at the POST that carries ``batch``; every update in it is logged with the outcome."""
        hooks = [w.hook for w in batch]
        merged = self._merge(hooks)
        at = self._clock()
        status: int | None = None
        error: str | None = None
        try:
            response = await self._client.post(merged.url, content=merged.body, headers=dict(merged.headers))
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        else:
            status = response.status_code
        attempts = [Attempt(h, number, at, status, error, batch_id, len(hooks)) for h in hooks]
        self.log.extend(attempts)
        if not attempts[0].ok:
            log.info(
                "sandbox: %s webhook of %d update(s), attempt %d: %s",
                merged.channel.value,
                len(hooks),
                number,
                error or status,
                extra={"channel": merged.channel.value},
            )
        return attempts


async def _quietly(work: Awaitable[Any]) -> None:
    """Run background work; a crash is logged, never left as an unretrieved task exception."""
    try:
        await work
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("sandbox: background webhook work failed")


# --- control API parameters and bodies -----------------------------------------------------------

ChannelQuery = Annotated[str | None, QueryParameter(description="whatsapp, messenger, instagram or telegram")]
ToQuery = Annotated[
    str | None, QueryParameter(description="the recipient as Chat4All writes it (+5511... on WhatsApp)")
]
DirectionQuery = Annotated[
    Literal["outbound", "both"],
    QueryParameter(description="`outbound`: what Chat4All sent; `both`: also what people wrote (`from`)"),
]
SandboxDep = NamedDependency[Sandbox]
WebhooksDep = NamedDependency[Webhooks]
Rate = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
Millis = Annotated[int, msgspec.Meta(ge=0, le=60_000)]
PerSecond = Annotated[float, msgspec.Meta(gt=0.0)]


class InboundBody(msgspec.Struct, forbid_unknown_fields=True):
    channel: str
    sender: str = msgspec.field(name="from")
    text: str
    reply_to: str | None = None
    name: str | None = None
    """The person's display name (WhatsApp profile, Telegram first_name); optional."""


class SettingsBody(msgspec.Struct, forbid_unknown_fields=True):
    auto_deliver: bool | UnsetType = UNSET
    auto_read: bool | UnsetType = UNSET
    delay_ms: Millis | UnsetType = UNSET


class FaultsBody(msgspec.Struct, forbid_unknown_fields=True):
    channel: str
    error_rate: Rate | UnsetType = UNSET
    rate_limit_per_s: PerSecond | UnsetType | None = UNSET
    """null lifts the limit."""
    latency_ms: Millis | UnsetType = UNSET
    down: bool | UnsetType = UNSET


def _given(body: msgspec.Struct, *, skip: str = "") -> dict[str, Any]:
    """The fields a request set: a field it left out must not change."""
    return {k: v for k, v in msgspec.structs.asdict(body).items() if v is not UNSET and k != skip}


def _channel(name: str) -> Channel:
    try:
        channel: Channel | None = Channel(name)
    except ValueError:
        channel = None
    if channel is None or channel not in SERVED:
        raise InvalidControl(f"unknown channel {name!r}; expected one of {', '.join(c.value for c in SERVED)}")
    return channel


# --- control API ----------------------------------------------------------------------------------


@get("/health", operation_id="health", tags=["sandbox"])
async def health() -> dict[str, str]:
    return {"status": "ok"}


@get("/sandbox/channels", operation_id="channels", tags=["sandbox"])
async def channels(sandbox: SandboxDep) -> dict[str, Any]:
    """Which platforms are served, and the business-side ids their webhooks carry."""
    bot = sandbox.telegram
    items = [
        {"channel": c.value, "configured": sandbox.configured(c), "account_id": sandbox.account_id(c)} for c in SERVED
    ]
    items[-1] |= {"bot": bot.user, "webhook_url": bot.webhook_url}
    return {"items": items}


@get("/sandbox/messages", operation_id="messages", tags=["sandbox"])
async def messages(
    sandbox: SandboxDep, channel: ChannelQuery = None, to: ToQuery = None, direction: DirectionQuery = "outbound"
) -> dict[str, Any]:
    """What the platforms accepted from Chat4All (``direction=both``: and what people wrote), oldest first."""
    wanted = _channel(channel) if channel else None
    return {"items": [m.as_json() for m in sandbox.messages(wanted, to, inbound=direction == "both")]}


@post("/sandbox/inbound", status_code=200, operation_id="inbound", tags=["sandbox"])
async def inbound(data: JSONBody[InboundBody], sandbox: SandboxDep, webhooks: WebhooksDep) -> dict[str, Any]:
    """A person writes to the business; the platform's webhook goes to Chat4All (first attempt awaited)."""
    channel = _channel(data.channel)
    message, hook = sandbox.inbound(channel, data.sender, data.text, reply_to=data.reply_to, name=data.name)
    answer: dict[str, Any] = {"platform_message_id": message.platform_message_id, "webhook_status": None}
    if hook is not None:
        attempt = await webhooks.deliver(hook)
        answer["webhook_status"] = attempt.status
        if attempt.error is not None:
            answer["webhook_error"] = attempt.error
    return answer


@get("/sandbox/settings", operation_id="getSettings", tags=["sandbox"])
async def get_settings(sandbox: SandboxDep) -> dict[str, Any]:
    return sandbox.behaviour.as_json()


@post("/sandbox/settings", status_code=200, operation_id="setSettings", tags=["sandbox"])
async def set_settings(data: JSONBody[SettingsBody], sandbox: SandboxDep) -> dict[str, Any]:
    return sandbox.set_behaviour(_given(data)).as_json()


@get("/sandbox/faults", operation_id="getFaults", tags=["sandbox"])
async def get_faults(sandbox: SandboxDep) -> dict[str, Any]:
    return {"items": [sandbox.faults(c).as_json(c) for c in SERVED]}


@post("/sandbox/faults", status_code=200, operation_id="setFaults", tags=["sandbox"])
async def set_faults(data: JSONBody[FaultsBody], sandbox: SandboxDep) -> dict[str, Any]:
    channel = _channel(data.channel)
    return sandbox.set_faults(channel, _given(data, skip="channel")).as_json(channel)


@get("/sandbox/webhooks", operation_id="webhooks", tags=["sandbox"])
async def webhook_log(webhooks: WebhooksDep, channel: ChannelQuery = None) -> dict[str, Any]:
    """Every attempt at a webhook, oldest first."""
    wanted = _channel(channel) if channel else None
    return {"items": [a.as_json() for a in webhooks.log if wanted is None or a.hook.channel is wanted]}


@post("/sandbox/reset", status_code=204, operation_id="reset", tags=["sandbox"])
async def reset(sandbox: SandboxDep, webhooks: WebhooksDep) -> None:
    """Back to a fresh sandbox (ids keep growing: Chat4All deduplicates on them)."""
    await webhooks.cancel_pending()
    webhooks.log.clear()
    sandbox.reset()


# --- the platforms' APIs --------------------------------------------------------------------------


def _platform_answer(error: PlatformError) -> Response[Any]:
    if isinstance(error.body, str):
        return Response(error.body, status_code=error.status, media_type="text/plain", headers=error.headers)
    return Response(dict(error.body), status_code=error.status, headers=error.headers)


async def _faults(sandbox: Sandbox, channel: Channel, *, send: bool) -> None:
    latency = sandbox.faults(channel).latency_ms
    if latency:
        await asyncio.sleep(latency / 1000)
    sandbox.check_faults(channel, send=send)


def _graph_token(request: Request[Any, Any, Any], body: Mapping[str, Any]) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() in {"bearer", "oauth"} and token.strip():
        return token.strip()
    given = request.query_params.get("access_token") or body.get("access_token")
    return given if isinstance(given, str) else None


def _form_value(value: str) -> Any:
    """Graph takes JSON objects in form fields (``recipient={"id":"..."}``)."""
    if value.startswith(("{", "[")):
        with contextlib.suppress(ValueError):
            return json.loads(value)
    return value


async def _graph_body(request: Request[Any, Any, Any]) -> dict[str, Any]:
    if request.headers.get("content-type", "").startswith(_FORMS):
        form = await request.form()
        return {k: _form_value(v) for k, v in form.items() if isinstance(v, str)}
    raw = await request.body()
    try:
        body = json.loads(raw) if raw.strip() else {}
    except ValueError:
        raise invalid_parameter("The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise invalid_parameter("The request body must be a JSON object.")
    return body


@post("/{version:str}/{node:str}/messages", status_code=200, include_in_schema=False)
async def graph_messages(
    version: FromPath[str],
    node: FromPath[str],
    request: Request[Any, Any, Any],
    sandbox: SandboxDep,
    webhooks: WebhooksDep,
) -> Response[Any]:
    """WhatsApp's ``/<phone number id>/messages`` and the Send API's ``/<page or IG id or me>/messages``."""
    try:
        body = await _graph_body(request)
        channel = sandbox.graph_channel(_graph_token(request, body), node)
        await _faults(sandbox, channel, send=True)
        if channel is Channel.WHATSAPP:
            answer, sent = sandbox.whatsapp_send(body)
        else:
            answer, sent = sandbox.meta_send(channel, body)
    except PlatformError as error:
        return _platform_answer(error)
    if sent is not None:
        _receipts(sandbox, webhooks, sent)
    return Response(answer)


def _receipts(sandbox: Sandbox, webhooks: Webhooks, sent: Message) -> None:
    kinds = sandbox.receipt_kinds(sent)
    webhooks.follow_up(lambda kind: sandbox.receipt(sent, kind), kinds, sandbox.behaviour.delay_ms / 1000)


async def _bot_params(request: Request[Any, Any, Any]) -> tuple[dict[str, Any], dict[str, Upload]]:
    """A Bot API call's parameters, from the query string and a JSON, form or multipart body."""
    params: dict[str, Any] = dict(request.query_params.items())
    uploads: dict[str, Upload] = {}
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(_FORMS):
        form = await request.form()
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                data = await value.read()
                uploads[key] = Upload(value.filename, value.content_type, len(data))
            else:
                params[key] = value
    elif content_type.startswith("application/json"):
        try:
            body = json.loads(await request.body())
        except ValueError:
            raise telegram_error(400, "Bad Request: can't parse JSON object") from None
        if not isinstance(body, dict):
            raise telegram_error(400, "Bad Request: can't parse JSON object")
        params.update(body)
    return params, uploads


@route(
    "/{bot:str}/{method:str}", http_method=[HttpMethod.GET, HttpMethod.POST], status_code=200, include_in_schema=False
)
async def bot_api(
    bot: FromPath[str],
    method: FromPath[str],
    request: Request[Any, Any, Any],
    sandbox: SandboxDep,
    webhooks: WebhooksDep,
) -> Response[Any]:
    """The Telegram Bot API: ``/bot<token>/<method>`` (method names are case-insensitive, as Telegram's are)."""
    if not bot.startswith("bot"):
        raise NotFoundException()
    name = method.lower()
    try:
        sandbox.telegram.authorize(bot.removeprefix("bot"))
        await _faults(sandbox, Channel.TELEGRAM, send=name in TELEGRAM_SENDS)
        params, uploads = await _bot_params(request)
        answer, hooks = await sandbox.telegram_call(name, params, uploads)
    except PlatformError as error:
        return _platform_answer(error)
    for hook in hooks:  # updates that waited for getUpdates go to the new webhook
        webhooks.enqueue(hook)
    return Response(answer)


# --- errors ---------------------------------------------------------------------------------------


def _problem(status: int, detail: str) -> Response[Any]:
    body = {"type": "about:blank", "title": HTTPStatus(status).phrase, "status": status, "detail": detail}
    return Response(body, status_code=status, media_type=PROBLEM_JSON)


def _http_problem(_: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    detail = exc.detail
    if isinstance(exc, ValidationException) and isinstance(exc.extra, list):
        said = [str(e.get("message")) for e in exc.extra if isinstance(e, dict) and e.get("message")]
        detail = f"{detail}: {'; '.join(said)}" if said else detail
    return _problem(exc.status_code, detail)


def _control_problem(_: Request[Any, Any, Any], exc: InvalidControl) -> Response[Any]:
    return _problem(400, str(exc))


def create_app(config: SandboxConfig, *, transport: httpx.AsyncBaseTransport | None = None) -> Litestar:
    """The sandbox for ``config``; ``transport`` carries its webhooks (tests pass an ``httpx.MockTransport``)."""
    sandbox = Sandbox(config)
    webhooks = Webhooks(
        transport=transport,
        retry_delays=config.webhook_retry_delays_s,
        timeout=config.webhook_timeout_s,
        merge=sandbox.merge,
        concurrency=config.webhook_concurrency,
        batch_max=config.webhook_batch_max,
        linger_s=config.webhook_linger_s,
    )
    app = Litestar(
        route_handlers=[
            health,
            channels,
            messages,
            inbound,
            get_settings,
            set_settings,
            get_faults,
            set_faults,
            webhook_log,
            reset,
            graph_messages,
            bot_api,
        ],
        dependencies={
            "sandbox": Provide(lambda: sandbox, sync_to_thread=False),
            "webhooks": Provide(lambda: webhooks, sync_to_thread=False),
        },
        exception_handlers={HTTPException: _http_problem, InvalidControl: _control_problem},
        on_shutdown=[webhooks.close],
        # The web app (served by the HTTP API, another origin) drives the control API for its phones view. Any
        # origin may: the sandbox is a local development tool on loopback that holds nothing but test data.
        cors_config=CORSConfig(allow_origins=["*"], allow_methods=["GET", "POST"], allow_headers=["Content-Type"]),
        openapi_config=OpenAPIConfig(title="Chat4All channel sandbox", version="1.0.0"),
        request_max_body_size=MAX_BODY_BYTES,
    )
    app.state.sandbox = sandbox
    app.state.webhooks = webhooks
    return app
