"""What every runtime that holds client connections shares: Redis, the channels plugin, the receipts of pushes,
and the process's registry of live connections that keeps their presence fresh.

With ``CHAT4ALL_REDIS_URL`` events cross processes through Redis pub/sub; without it (a lone API process,
the in-process tests) they stay in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta

import attrs
import msgspec
from litestar.channels import ChannelsPlugin, Subscriber
from litestar.channels.backends.memory import MemoryChannelsBackend
from litestar.channels.backends.redis import RedisChannelsPubSubBackend
from redis.asyncio import BlockingConnectionPool, Redis

from adapters.memory.presence import InMemoryPresence
from adapters.redis import RedisPresence, user_channel
from application.errors import Unavailable
from application.ports import Clock, Fanout, Frame, PresenceStore, UnitOfWork
from application.realtime import Pushed, RealtimeDeps, client_gone, client_seen, confirm_pushed, expire_presence
from domain.ids import UserId

log = logging.getLogger("chat4all.realtime")

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode
_CREATED = b'{"type":"message.created"'


REDIS_CONNECTIONS = 64
"""Connections a process keeps to Redis at most; a caller waits up to ``REDIS_WAIT_S`` for one."""
REDIS_WAIT_S = 20.0


def redis_for(url: str | None) -> Redis | None:
    """A client of the Redis at ``url`` (None without one), on a bounded pool that waits for a free connection.

    redis-py's default pool fails at once past 100 connections ("Too many connections"): a burst of
    sockets opening or closing would lose their presence updates.
    """
    if not url:
        return None
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=REDIS_CONNECTIONS,
        timeout=REDIS_WAIT_S,
        socket_timeout=5,
        socket_connect_timeout=5,
        health_check_interval=30,
    )
    return Redis.from_pool(pool)  # closing the client closes its pool


class SerialPubSubBackend(RedisChannelsPubSubBackend):
    """Litestar's Redis pub/sub backend, subscribing one call at a time.

    redis-py's ``PubSub`` opens its connection lazily and without a lock, and the backend does not
    lock either: concurrent first subscriptions (clients reconnecting together after a restart)
    each opened a connection, and the channels subscribed on all but the last were never read, so
    their pushes were lost without a word.
    """

    def __init__(self, *, redis: Redis) -> None:
        super().__init__(redis=redis)
        self._lock = asyncio.Lock()

    async def subscribe(self, channels: Iterable[str]) -> None:
        async with self._lock:
            await super().subscribe(channels)

    async def unsubscribe(self, channels: Iterable[str]) -> None:
        async with self._lock:
            await super().unsubscribe(channels)


def channels_plugin(redis: Redis | None) -> ChannelsPlugin:
    """Litestar's channels: one channel per user; through Redis when there is one, else in this process."""
    backend = SerialPubSubBackend(redis=redis) if redis is not None else MemoryChannelsBackend()
    return ChannelsPlugin(backend=backend, arbitrary_channels_allowed=True)


class ChannelsFanout(Fanout):
    """Frames published through the channels plugin (one payload to many users' channels at once)."""

    def __init__(self, channels: ChannelsPlugin) -> None:
        self._channels = channels

    async def push(self, frames: Sequence[tuple[Frame, Sequence[UserId]]]) -> None:
        for frame, users in frames:
            if users:
                try:
                    await self._channels.wait_published(_encode(frame), [user_channel(u) for u in users])
                except (OSError, ConnectionError) as exc:
                    raise Unavailable(f"real-time fan-out: {exc}") from exc


def presence_store(redis: Redis | None) -> PresenceStore:
    return RedisPresence(redis) if redis is not None else InMemoryPresence()


class PushReceipts:
    """Receipts of pushed messages, gathered for a moment and confirmed in one transaction per batch."""

    def __init__(self, deps: RealtimeDeps, *, every: float = 0.02, batch: int = 500) -> None:
        self._deps = deps
        self._every = every
        self._batch = batch
        self._pending: list[Pushed] = []
        self._wake = asyncio.Event()

    def add(self, pushed: Pushed) -> None:
        self._pending.append(pushed)
        self._wake.set()

    async def flush(self) -> int:
        taken, self._pending = self._pending[: self._batch], self._pending[self._batch :]
        if not taken:
            return 0
        try:
            return await confirm_pushed(self._deps, taken)
        except Unavailable as exc:
            # The messages stay SENT; the recipient's next history fetch or sync marks them.
            log.warning("could not confirm %d pushed messages: %s", len(taken), exc)
            return 0

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(self._every)
            while self._pending:
                await self.flush()


@attrs.define
class Connections:
    """The live client connections of this process, whose presence it keeps fresh.

    A closed connection's presence update waits in a queue for ``forget``: a socket's handler ends at
    once, so a process that stops with thousands of sockets open is not held up by their updates (any
    it does not get to, the other processes see lapse after the time-to-live).
    """

    deps: RealtimeDeps
    live: dict[str, UserId] = attrs.field(factory=dict)
    gone: asyncio.Queue[tuple[str, UserId]] = attrs.field(factory=asyncio.Queue)

    async def opened(self, user_id: UserId) -> str:
        source = f"conn:{uuid.uuid4()}"
        self.live[source] = user_id
        try:
            await client_seen(self.deps, user_id, source)
        except Unavailable as exc:
            log.warning("presence: %s", exc)
        return source

    def closed(self, source: str) -> None:
        user_id = self.live.pop(source, None)
        if user_id is not None:
            self.gone.put_nowait((source, user_id))

    async def forget(self) -> None:
        """Apply the presence updates of closed connections, one at a time (several of these run)."""
        while True:
            source, user_id = await self.gone.get()
            try:
                await client_gone(self.deps, user_id, source)
            except Unavailable as exc:
                log.warning("presence: %s", exc)

    async def keep_fresh(self) -> None:
        """Every third of the time-to-live: every open connection is seen again, and lapsed users go offline."""
        every = self.deps.presence_ttl.total_seconds() / 3
        while True:
            await asyncio.sleep(every)
            try:
                for source, user_id in list(self.live.items()):
                    if source in self.live:
                        await client_seen(self.deps, user_id, source)
                await expire_presence(self.deps)
            except Unavailable as exc:
                log.warning("presence: %s", exc)


class Feed:
    """One live client's frames from its user's channel: sent in order, push receipts taken, and cut off, never
    skipped over, when the client falls behind.

    The channels plugin queues each subscriber's frames; a client ``queue_limit`` frames behind (one more and
    the plugin would drop one silently) or that takes ``send_timeout`` seconds over one frame is ``cut`` (the
    transport closes it, and the client resyncs). Fan-out to other clients never waits for this one.
    """

    def __init__(
        self,
        rt: Realtime,
        user_id: UserId,
        *,
        send: Callable[[bytes], Awaitable[None]],
        cut: Callable[[str], Awaitable[None]],
        queue_limit: int,
        send_timeout: float = 5.0,
    ) -> None:
        self.rt = rt
        self.user_id = user_id
        self._send = send
        self._cut = cut
        self.queue_limit = queue_limit
        self.send_timeout = send_timeout
        self.subscriber: Subscriber | None = None
        self.stopped = False

    async def _stop(self, reason: str) -> None:
        if not self.stopped:
            self.stopped = True
            await self._cut(reason)

    async def deliver(self, data: bytes) -> None:
        """Send one frame (the subscriber's task calls this, one frame at a time)."""
        if self.stopped:
            return
        if self.subscriber is not None and self.subscriber.qsize >= self.queue_limit - 1:
            await self._stop("too far behind; resync with GET /v1/sync")
            return
        try:
            async with asyncio.timeout(self.send_timeout):  # no task per frame, unlike wait_for
                await self._send(data)
        except TimeoutError:
            await self._stop("too slow; resync with GET /v1/sync")
            return
        except Exception:
            self.stopped = True
            return
        if data.startswith(_CREATED):
            pushed = Pushed.of_frame(self.user_id, _decode(data))
            if pushed is not None:
                self.rt.receipts.add(pushed)

    @asynccontextmanager
    async def open(self, hello: Callable[[], Awaitable[None]]) -> AsyncIterator[None]:
        """Subscribe, say ``hello`` (the client's first frame: nothing published meanwhile is lost, it waits in
        the queue), then forward frames and count the client as online while inside."""
        channels = self.rt.channels
        subscriber = await channels.subscribe([user_channel(self.user_id)])
        self.subscriber = subscriber
        source: str | None = None
        try:
            await hello()
            async with subscriber.run_in_background(self.deliver, join=False):
                source = await self.rt.connections.opened(self.user_id)
                yield
        finally:
            self.stopped = True
            await channels.unsubscribe(subscriber)
            if source is not None:
                self.rt.connections.closed(source)


@attrs.frozen
class Realtime:
    """One process's real-time parts."""

    deps: RealtimeDeps
    channels: ChannelsPlugin
    receipts: PushReceipts
    connections: Connections


@asynccontextmanager
async def realtime(
    redis: Redis | None,
    *,
    uow: Callable[[], UnitOfWork],
    clock: Clock,
    presence_ttl: timedelta,
    channels: ChannelsPlugin | None = None,
) -> AsyncIterator[Realtime]:
    """Start this process's real-time parts (the plugin's workers too, unless Litestar runs them)."""
    plugin = channels if channels is not None else channels_plugin(redis)
    deps = RealtimeDeps(
        uow=uow,
        clock=clock,
        presence=presence_store(redis),
        fanout=ChannelsFanout(plugin),
        presence_ttl=presence_ttl,
    )
    rt = Realtime(deps=deps, channels=plugin, receipts=PushReceipts(deps), connections=Connections(deps))
    async with contextlib.AsyncExitStack() as stack:
        if channels is None:
            await stack.enter_async_context(plugin)
        tasks = [
            asyncio.create_task(rt.receipts.run()),
            asyncio.create_task(rt.connections.keep_fresh()),
            *(asyncio.create_task(rt.connections.forget()) for _ in range(4)),
        ]
        try:
            yield rt
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await rt.receipts.flush()
