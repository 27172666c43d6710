"""The gRPC API: ``chat4all.v1.Chat4All`` on grpclib, beside the standard health and reflection services.

The contract is ``proto/chat4all/v1/chat4all.proto`` (docs/grpc.md); its messages, stub and the
table of paths come from the betterproto2 code generated into ``_generated`` (``make proto``).
Each RPC runs the same use cases as REST: decode -> command -> bus (or ``application.uploads``)
-> encode. Every call but health and reflection needs ``authorization: Bearer <access token>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from functools import partial
from typing import Any, TypeVar

import grpclib.const
import grpclib.server
import msgspec
from google.protobuf import descriptor_pool  # type: ignore[import-untyped] # protobuf ships no stubs
from google.protobuf.descriptor import FileDescriptor  # type: ignore[import-untyped]
from google.protobuf.descriptor_pb2 import FileDescriptorProto  # type: ignore[import-untyped]
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.health.check import ServiceCheck, ServiceStatus
from grpclib.health.service import Health
from grpclib.health.v1 import health_pb2
from grpclib.reflection.service import ServerReflection

from application import commands as c
from application.bus import MessageBus
from application.errors import ApplicationError
from application.uploads import FileDeps
from domain.errors import DomainError
from domain.ids import UserId
from entrypoints.container import container_for, resolve
from entrypoints.grpc import convert, metrics
from entrypoints.grpc._generated.chat4all import v1 as pb
from entrypoints.grpc.auth import BearerAuth
from entrypoints.grpc.errors import Mapped, mapped
from entrypoints.grpc.files import upload_file
from entrypoints.grpc.limits import Capped, cap_reads
from entrypoints.health import all_pass, api_readiness
from entrypoints.realtime import Feed, Realtime, realtime
from entrypoints.settings import Settings
from entrypoints.tracing import trace_grpc_calls, tracing_enabled

log = logging.getLogger("chat4all.grpc")

SEND_WINDOW = 512
"""Sends a ``SendMessages`` stream may have in flight before its reader waits for their answers."""
DRAIN_S = 10.0
"""How long a stopping server lets the calls in flight finish before it cancels them."""

Rpc = Callable[[grpclib.server.Stream[Any, Any], UserId], Awaitable[None]]
StreamHandler = Callable[[grpclib.server.Stream[Any, Any]], Awaitable[None]]
Readiness = Callable[[], Awaitable[dict[str, bool]]]
T = TypeVar("T")
_decode = msgspec.json.Decoder().decode


async def _request(stream: grpclib.server.Stream[T, Any]) -> T:
    request = await stream.recv_message()
    if request is None:
        raise GRPCError(Status.INVALID_ARGUMENT, "the call carries no request message")
    return request


async def _answer_error(stream: grpclib.server.Stream[Any, Any], error: Mapped) -> None:
    await stream.send_trailing_metadata(status=error.status, status_message=error.message, metadata=error.metadata)


def _result_error(index: int, exc: ApplicationError | DomainError) -> pb.SendMessageResult:
    m = mapped(exc)
    error = pb.Error(code=m.status.value, message=m.message, field=m.field or "")
    return pb.SendMessageResult(index=index, error=error)


class Chat4AllService:
    """``chat4all.v1.Chat4All``: each call authenticated, what it reads capped, application errors mapped.

    The handlers take grpclib's stream (its ``authorization`` metadata, streaming both ways); the
    paths, cardinalities and message types are the generated ``Chat4AllBase``'s, so the .proto
    stays the one source of truth and an RPC added there without a handler here fails at start.
    """

    def __init__(
        self,
        *,
        bus: MessageBus,
        files: FileDeps,
        auth: BearerAuth,
        max_message_bytes: int,
        realtime: Realtime,
        feed_queue: int = 4096,
        send_window: int = SEND_WINDOW,
    ) -> None:
        self._bus = bus
        self._realtime = realtime
        self._feed_queue = feed_queue
        self._files = files
        self._auth = auth
        self._cap = max_message_bytes
        self._send_window = send_window
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        rpcs: dict[str, tuple[Rpc, bool]] = {  # the RPC, and whether a stopping server waits for it
            "SendMessage": (self.send_message, True),
            "SendMessages": (self.send_messages, True),
            "GetMessage": (self.get_message, True),
            "ListConversations": (self.list_conversations, True),
            "ListMessages": (self.list_messages, True),
            "GetMessageStatus": (self.get_message_status, True),
            "MarkRead": (self.mark_read, True),
            "StreamEvents": (self.stream_events, False),
            "UploadFile": (self.upload_file, True),
        }
        mapping = {}
        for path, h in pb.Chat4AllBase().__mapping__().items():
            rpc, drains = rpcs[path.rsplit("/", 1)[1]]
            mapping[path] = grpclib.const.Handler(
                self._guarded(rpc, drains=drains), h.cardinality, h.request_type, h.reply_type
            )
        return mapping

    def _guarded(self, rpc: Rpc, *, drains: bool) -> StreamHandler:
        async def handler(stream: grpclib.server.Stream[Any, Any]) -> None:
            cap_reads(stream, self._cap)
            if drains:
                self._in_flight += 1
                self._idle.clear()
            try:
                user = self._auth.user(stream.metadata)
                await rpc(stream, user)
            except (ApplicationError, DomainError) as exc:
                await _answer_error(stream, mapped(exc))
            finally:
                if drains:
                    self._in_flight -= 1
                    if not self._in_flight:
                        self._idle.set()

        return handler

    async def drain(self, seconds: float) -> bool:
        """Wait until no call is in flight (``StreamEvents`` streams aside), at most ``seconds``; True if none is."""
        try:
            async with asyncio.timeout(seconds):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    # --- messages ---------------------------------------------------------------------------

    async def send_message(
        self, stream: grpclib.server.Stream[pb.SendMessageRequest, pb.SendMessageResponse], user: UserId
    ) -> None:
        request = await _request(stream)
        await stream.send_message(convert.accepted(await self._bus.handle(convert.send_command(user, request))))

    async def send_messages(
        self, stream: grpclib.server.Stream[pb.SendMessageRequest, pb.SendMessageResult], user: UserId
    ) -> None:
        """Each request is sent as it arrives (concurrent sends share transactions: the bus's group commit);
        the answers go back in request order. At most ``send_window`` sends wait for their answers."""
        window = asyncio.Semaphore(self._send_window)
        answers: asyncio.Queue[asyncio.Future[Any] | pb.SendMessageResult | None] = asyncio.Queue()

        async def read() -> None:
            index = 0
            try:
                async for request in stream:
                    await window.acquire()
                    try:
                        command = convert.send_command(user, request)
                    except (ApplicationError, DomainError) as exc:
                        answers.put_nowait(_result_error(index, exc))
                    else:
                        answers.put_nowait(asyncio.ensure_future(self._bus.handle(command)))
                    index += 1
            finally:
                answers.put_nowait(None)

        reader = asyncio.create_task(read())
        index = 0
        try:
            while (answer := await answers.get()) is not None:
                if isinstance(answer, pb.SendMessageResult):
                    result = answer
                else:
                    try:
                        result = pb.SendMessageResult(index=index, accepted=convert.accepted(await answer))
                    except (ApplicationError, DomainError) as exc:
                        result = _result_error(index, exc)
                await stream.send_message(result)
                window.release()
                index += 1
            await reader  # the reader's failure (an oversize message, a broken stream) is the call's
        finally:
            reader.cancel()
            while not answers.empty():
                if isinstance(pending := answers.get_nowait(), asyncio.Future):
                    pending.cancel()

    async def get_message(self, stream: grpclib.server.Stream[pb.GetMessageRequest, pb.Message], user: UserId) -> None:
        """The message as history shows it (its conversation's page of one), to its sender and recipients.

        Reading it is fetching it, as with history: the caller's ``internal`` copy becomes DELIVERED.
        """
        message_id = convert.message_id_of((await _request(stream)).message_id)
        await stream.send_message(convert.message(await self._bus.handle(c.GetMessage(user, message_id))))

    async def list_conversations(
        self, stream: grpclib.server.Stream[pb.ListConversationsRequest, pb.ListConversationsResponse], user: UserId
    ) -> None:
        command = convert.list_conversations_command(user, await _request(stream))
        await stream.send_message(convert.conversations(await self._bus.handle(command)))

    async def list_messages(
        self, stream: grpclib.server.Stream[pb.ListMessagesRequest, pb.ListMessagesResponse], user: UserId
    ) -> None:
        command = convert.history_command(user, await _request(stream))
        await stream.send_message(convert.messages(await self._bus.handle(command)))

    async def get_message_status(
        self, stream: grpclib.server.Stream[pb.GetMessageStatusRequest, pb.MessageStatus], user: UserId
    ) -> None:
        message_id = convert.message_id_of((await _request(stream)).message_id)
        await stream.send_message(convert.message_status(await self._bus.handle(c.GetMessageStatus(user, message_id))))

    async def mark_read(
        self, stream: grpclib.server.Stream[pb.MarkReadRequest, pb.MarkReadResponse], user: UserId
    ) -> None:
        message_id = convert.message_id_of((await _request(stream)).message_id)
        await stream.send_message(convert.read_receipt(await self._bus.handle(c.MarkRead(user, message_id))))

    # --- real time --------------------------------------------------------------------------

    async def stream_events(
        self, stream: grpclib.server.Stream[pb.StreamEventsRequest, pb.Event], user: UserId
    ) -> None:
        """The caller's real-time events, as ``pb.Event(type=frame["type"], json=<the WebSocket's frame>)``.

        First ``connected`` (with the sync cursor), then every frame the WebSocket would push, until the
        client goes away. A client that falls behind gets UNAVAILABLE (reconnect and sync), as a socket
        gets 1013.
        """
        await _request(stream)
        behind: list[str] = []
        cut = asyncio.Event()

        async def send(data: bytes) -> None:
            kind = _decode(data).get("type", "")
            await stream.send_message(pb.Event(type=str(kind), json=data.decode()))

        async def stop(reason: str) -> None:
            behind.append(reason)
            cut.set()

        async def hello() -> None:
            start = await self._bus.handle(c.Sync(user))
            frame = {"type": "connected", "user_id": str(user), "cursor": start.cursor}
            await stream.send_message(pb.Event(type="connected", json=json.dumps(frame)))

        feed = Feed(self._realtime, user, send=send, cut=stop, queue_limit=self._feed_queue)
        async with feed.open(hello):
            await cut.wait()
        raise GRPCError(Status.UNAVAILABLE, behind[0])

    # --- files ------------------------------------------------------------------------------

    async def upload_file(self, stream: grpclib.server.Stream[pb.UploadFileRequest, pb.File], user: UserId) -> None:
        await upload_file(stream, user, self._files)


def reflection_pool() -> descriptor_pool.DescriptorPool:
    """The descriptors reflection serves: chat4all.v1 and the health service, with what they import."""
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add(file: FileDescriptor) -> None:
        if file.name in added:
            return
        for dependency in file.dependencies:
            add(dependency)
        proto = FileDescriptorProto()
        file.CopyToProto(proto)
        pool.Add(proto)
        added.add(file.name)

    add(pb.SendMessageRequest.DESCRIPTOR.file)
    add(health_pb2.DESCRIPTOR)
    return pool


def services(
    service: Chat4AllService, *, readiness: Readiness, serving: ServiceStatus, max_message_bytes: int
) -> list[Any]:
    """What the server serves: the API, health (``""`` and ``chat4all.v1.Chat4All``) and reflection (v1, v1alpha).

    Health is SERVING while every backing service answers (``readiness``: PostgreSQL, Redis, the file store)
    and the server is not stopping; it and reflection take no token. Every service refuses client messages
    over ``max_message_bytes``.
    """

    health = Health({service: [ServiceCheck(partial(all_pass, readiness), check_ttl=5, check_timeout=3), serving]})
    public = ServerReflection.extend([service, health], pool=reflection_pool())[1:]
    return [service, *(Capped(s, max_message_bytes) for s in public)]


async def serve(
    settings: Settings, *, stop: asyncio.Event, started: Callable[[grpclib.server.Server], None] | None = None
) -> None:
    """Serve on ``settings.host:grpc_port`` until ``stop`` is set, then drain and close."""
    stack = contextlib.AsyncExitStack()
    container = container_for(settings)
    await resolve(container.init_resources)
    redis = container.redis()
    try:
        rt = await stack.enter_async_context(
            realtime(
                redis,
                uow=await resolve(container.uow),
                clock=container.clock(),
                presence_ttl=timedelta(seconds=settings.presence_ttl_s),
            )
        )
        service = Chat4AllService(
            bus=await resolve(container.bus),
            files=await resolve(container.files),
            auth=BearerAuth(container.tokens().verify),
            max_message_bytes=settings.grpc_max_message_bytes,
            realtime=rt,
            feed_queue=settings.ws_queue,
        )
        serving = ServiceStatus()
        serving.set(True)
        server = grpclib.server.Server(
            services(
                service,
                readiness=api_readiness(
                    await resolve(container.readiness), redis, await resolve(container.object_store)
                ),
                serving=serving,
                max_message_bytes=settings.grpc_max_message_bytes,
            )
        )
        metrics.instrument(server)
        if tracing_enabled():
            trace_grpc_calls(server)
        try:
            await server.start(settings.host, settings.grpc_port)
        except OSError as e:
            raise SystemExit(f"gRPC API: cannot listen on {settings.host}:{settings.grpc_port}: {e}") from e
        log.info("gRPC API on %s:%d", settings.host, settings.grpc_port)
        if started is not None:
            started(server)
        gc.collect()  # what start-up built lives as long as the process: keep it out of the collector's way
        gc.freeze()
        await stop.wait()
        serving.set(False)  # health answers NOT_SERVING while the calls in flight finish
        if not await service.drain(DRAIN_S):
            log.warning("calls still in flight after %.0fs; cancelling them", DRAIN_S)
        server.close()
        await server.wait_closed()
    finally:
        await stack.aclose()  # real time: stop taking receipts, flush them
        if redis is not None:
            await redis.aclose()
        await resolve(container.shutdown_resources)
