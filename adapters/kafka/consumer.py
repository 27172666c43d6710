"""A batch consumer for the workers: poll a batch, make its effects durable, commit, repeat.

Offsets are committed by hand only (``commit``), so a record whose work was not made durable is delivered
again, to this consumer or to whichever member of the group takes its partition over (at least once).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

import attrs
import msgspec
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from adapters.kafka.clients import starting
from adapters.tracing import from_kafka_headers
from application.errors import Unavailable

log = logging.getLogger(__name__)

_decoder = msgspec.json.Decoder(dict[str, Any])


@attrs.frozen
class Received:
    """One record as a worker sees it: the payload is a decoded JSON object."""

    topic: str
    partition: int
    offset: int
    key: str
    payload: dict[str, Any]
    timestamp: dt.datetime
    headers: Mapping[str, str] = attrs.field(factory=dict)
    """The record's headers (the trace context of the request that caused it)."""


def decode_record(record: ConsumerRecord[bytes, bytes]) -> Received | None:
    """The record as :class:`Received`, or None when its key is not utf-8 or its value not a JSON object."""
    if record.value is None:
        return None
    try:
        payload = _decoder.decode(record.value)
        key = record.key.decode() if record.key is not None else ""
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
    return Received(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=key,
        payload=payload,
        timestamp=dt.datetime.fromtimestamp(record.timestamp / 1000, dt.UTC),
        headers=from_kafka_headers(record.headers),
    )


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka has no type hints
    def __init__(self, owner: KafkaBatchConsumer) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        # The rebalance waits for the batch in hand to be handled and committed: its records are not given to
        # another member while this one is still working on them (two workers sending the same job at once).
        async with self.owner._batch:
            log.info("group %s: partitions revoked: %s", self.owner.group_id, _describe(revoked))
            if self.owner.on_revoke is not None and revoked:
                await self.owner.on_revoke(frozenset((tp.topic, tp.partition) for tp in revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        log.info("group %s: partitions assigned: %s", self.owner.group_id, _describe(assigned))
        self.owner._on_assigned(assigned)


def _describe(partitions: Sequence[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(partitions)) or "none"


async def _finish_closing(consumer: AIOKafkaConsumer) -> None:
    """Cancel the fetch tasks and close the connections an interrupted ``AIOKafkaConsumer.stop()`` left behind."""
    fetcher = getattr(consumer, "_fetcher", None)
    pending = [t for t in getattr(fetcher, "_pending_tasks", ()) if not t.done()]
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    client = getattr(consumer, "_client", None)
    if client is not None:
        with contextlib.suppress(Exception):
            await client.close()


@attrs.define
class FetchPacing:
    """How long a consumer's fetches may wait for records: short while records flow, longer once it is idle.

    A broker answers a fetch that finds no records when its wait is over (Tansu even when records arrive
    meanwhile; Apache Kafka as soon as they arrive). So an idle consumer sends a fetch every ``busy_ms``, and each
    costs the broker and the client CPU: with Tansu about 1.5 ms of the broker's per fetch, so that the eight
    consumer groups of an idle stack kept 60 % of a core busy at 20 ms. After ``idle_after_s`` without records
    a consumer's fetches wait ``idle_ms`` instead, and the first poll that returns records brings ``busy_ms``
    back. The price, with Tansu: up to ``idle_ms`` more latency for the first records after a quiet spell.
    """

    busy_ms: int
    idle_ms: int
    idle_after_s: float = 1.0
    _last_records: float = attrs.field(factory=time.monotonic, init=False)

    def __attrs_post_init__(self) -> None:
        if not 1 <= self.busy_ms <= self.idle_ms:
            raise ValueError("fetch waits must be positive, the idle one no shorter than the busy one")

    def after_poll(self, got_records: bool, now: float | None = None) -> int:
        """The wait for the next fetches, given whether the last poll returned records."""
        now = time.monotonic() if now is None else now
        if got_records:
            self._last_records = now
            return self.busy_ms
        return self.idle_ms if now - self._last_records >= self.idle_after_s else self.busy_ms


class KafkaBatchConsumer:
    """One member of consumer group ``group_id`` reading ``topics`` in batches of at most ``max_records``.

    ``session_timeout_ms`` bounds how long a crashed member keeps its partitions; heartbeats go out every
    ``heartbeat_interval_ms`` in the background, and a member that does not poll for ``max_poll_interval_ms``
    is removed from the group. Fetches wait up to ``fetch_max_wait_ms`` for records, and up to
    ``idle_fetch_max_wait_ms`` (when given) once the consumer found none for a second (:class:`FetchPacing`).
    """

    def __init__(
        self,
        bootstrap: str,
        topics: Sequence[str],
        group_id: str,
        *,
        max_records: int = 500,
        client_id: str = "chat4all-worker",
        session_timeout_ms: int = 10_000,
        heartbeat_interval_ms: int = 3_000,
        max_poll_interval_ms: int = 300_000,
        request_timeout_ms: int = 40_000,
        fetch_max_wait_ms: int = 500,
        idle_fetch_max_wait_ms: int | None = None,
        commit_timeout: float = 10.0,
        start_timeout: float = 10.0,
        stop_timeout: float = 10.0,
    ) -> None:
        if not topics:
            raise ValueError("a consumer needs at least one topic")
        if max_records < 1:
            raise ValueError("max_records must be positive")
        self.bootstrap = bootstrap
        self.topics = tuple(topics)
        self.group_id = group_id
        self.max_records = max_records
        self.client_id = client_id
        self.session_timeout_ms = session_timeout_ms
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.max_poll_interval_ms = max_poll_interval_ms
        self.request_timeout_ms = request_timeout_ms
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.pacing = FetchPacing(fetch_max_wait_ms, idle_fetch_max_wait_ms or fetch_max_wait_ms)
        self.commit_timeout = commit_timeout
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._consumer: AIOKafkaConsumer | None = None
        self._paused = False
        self._batch = asyncio.Lock()
        self.on_revoke: Callable[[frozenset[tuple[str, int]]], Awaitable[None]] | None = None
        """Called when the group takes partitions away, before their new owner reads them: a consumer that works on
        records past :meth:`poll` (not a batch at a time) finishes or drops them here and commits what it finished."""

    # -- lifecycle ----------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect and join the group (idempotent). Raises ``Unavailable`` when the broker cannot be reached."""
        if self._consumer is not None:
            return
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=self.group_id,
            client_id=self.client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=self.session_timeout_ms,
            heartbeat_interval_ms=self.heartbeat_interval_ms,
            max_poll_interval_ms=self.max_poll_interval_ms,
            request_timeout_ms=self.request_timeout_ms,
            fetch_max_wait_ms=self.fetch_max_wait_ms,
        )
        consumer.subscribe(topics=list(self.topics), listener=_Listener(self))
        async with starting(consumer, self.bootstrap, self.start_timeout):
            await consumer.start()
        self._consumer = consumer

    async def stop(self) -> None:
        """Leave the group without committing anything (what was not committed is delivered again).

        Bounded by ``stop_timeout`` seconds: a broker that is gone cannot be told goodbye.
        """
        consumer, self._consumer = self._consumer, None
        if consumer is None:
            return
        try:
            async with asyncio.timeout(self.stop_timeout):
                await consumer.stop()
        except TimeoutError:
            log.warning("group %s: the consumer did not close within %.0fs", self.group_id, self.stop_timeout)
            await _finish_closing(consumer)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # we are being cancelled
            # aiokafka (aio-libs/aiokafka#647): closing the fetcher re-raises the cancellation of a fetch that was
            # backing off after a broker error, and skips the rest of the shutdown
            await _finish_closing(consumer)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    @property
    def fetch_wait_ms(self) -> int:
        """How long the consumer's fetches now wait for records."""
        fetcher = getattr(self._consumer, "_fetcher", None)
        return int(getattr(fetcher, "_fetch_max_wait_ms", self.fetch_max_wait_ms))

    def _pace(self, wait_ms: int) -> None:
        # aiokafka reads the fetcher's wait as it builds each fetch request, and offers no way to change it: set
        # the attribute. Were it ever renamed, fetches would keep the busy wait (the integration test would tell).
        fetcher = getattr(self._consumer, "_fetcher", None)
        if fetcher is not None and getattr(fetcher, "_fetch_max_wait_ms", None) is not None:
            fetcher._fetch_max_wait_ms = wait_ms

    def _started(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise RuntimeError("the consumer is not started")
        return self._consumer

    # -- work ---------------------------------------------------------------------------------------------------------

    async def poll(self, timeout_ms: int = 1000) -> list[Received]:
        """The next records (at most ``max_records``), in offset order per partition; [] after ``timeout_ms``.

        Records whose value is not a JSON object (or whose key is not utf-8) are logged and skipped; their
        offsets count as returned, so :meth:`commit` moves past them.

        Raises:
            Unavailable: the broker reported an error that retrying inside the client did not clear.
        """
        consumer = self._started()
        try:
            batches = await consumer.getmany(timeout_ms=timeout_ms, max_records=self.max_records)
        except KafkaError as exc:
            raise Unavailable(f"kafka at {self.bootstrap}: polling failed: {exc!r}") from exc
        self._pace(self.pacing.after_poll(any(batches.values())))
        received: list[Received] = []
        for records in batches.values():
            for record in records:
                decoded = decode_record(record)
                if decoded is None:
                    log.warning(
                        "skipping record %s[%d]@%d (key %r): its value is not a JSON object",
                        record.topic,
                        record.partition,
                        record.offset,
                        record.key,
                    )
                    continue
                received.append(decoded)
        return received

    @contextlib.asynccontextmanager
    async def batch(self) -> AsyncIterator[None]:
        """Hold the records :meth:`poll` returned while handling and committing them: a rebalance waits for it.

        Without this, a member that loses partitions in a rebalance goes on with the batch it holds while the
        partitions' new owner reads the same records from the last commit: both would work on them at once.
        """
        async with self._batch:
            yield

    async def commit(self) -> None:
        """Commit the position after every record :meth:`poll` returned; call it once their work is durable.

        When the group rebalanced since those records were returned, nothing is committed for the partitions
        this member lost: their new owner gets the records again.

        Raises:
            Unavailable: the commit did not go through within ``commit_timeout`` seconds.
        """
        await self._commit(None)

    async def commit_positions(self, positions: Mapping[tuple[str, int], int]) -> None:
        """Commit these positions, given per (topic, partition): the offset of the next record to read.

        For a consumer that finishes records out of :meth:`poll`'s order (``Offsets``). Partitions this member no
        longer owns are left out. Raises ``Unavailable`` like :meth:`commit`.
        """
        owned = self._started().assignment()
        offsets = {
            tp: offset
            for (topic, partition), offset in positions.items()
            if (tp := TopicPartition(topic, partition)) in owned
        }
        if offsets:
            await self._commit(offsets)

    async def _commit(self, offsets: Mapping[TopicPartition, int] | None) -> None:
        """Commit ``offsets``, or (None) the positions after what :meth:`poll` returned."""
        consumer = self._started()
        try:
            async with asyncio.timeout(self.commit_timeout):
                await consumer.commit(offsets)
        except IllegalStateError:
            return  # no partition assigned: nothing to commit
        except CommitFailedError as exc:
            log.warning(
                "group %s rebalanced before the commit; the records will be delivered again: %s", self.group_id, exc
            )
        except (KafkaError, TimeoutError) as exc:
            raise Unavailable(f"kafka at {self.bootstrap}: commit failed: {exc!r}") from exc

    # -- flow control -------------------------------------------------------------------------------------------------

    def pause_all(self) -> None:
        """Stop fetching from every assigned partition (and from any assigned later) until :meth:`resume_all`."""
        self._paused = True
        consumer = self._started()
        consumer.pause(*consumer.assignment())

    def resume_all(self) -> None:
        """Fetch again from every assigned partition."""
        self._paused = False
        consumer = self._started()
        consumer.resume(*consumer.assignment())

    @property
    def paused(self) -> bool:
        return self._paused

    def _on_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        if self._paused and self._consumer is not None and assigned:
            self._consumer.pause(*assigned)

    async def lag(self) -> dict[str, int]:
        """Records behind the end of each topic, summed over the partitions this member owns (as of the last fetch)."""
        consumer = self._started()
        behind: dict[str, int] = {}
        for tp in consumer.assignment():
            end = consumer.highwater(tp)
            if end is None:
                continue
            try:
                position = await consumer.position(tp)
            except (KafkaError, IllegalStateError):
                continue
            behind[tp.topic] = behind.get(tp.topic, 0) + max(0, end - position)
        return behind

    def assignment(self) -> frozenset[tuple[str, int]]:
        """The (topic, partition) pairs this member owns right now."""
        return frozenset((tp.topic, tp.partition) for tp in self._started().assignment())


class Offsets:
    """Which records of each partition are finished, for a consumer that finishes them in any order.

    The position to commit for a partition is its first unfinished record (every earlier one is finished), or the
    record after the last one taken when all are: a record is never skipped, and one finished after a later one
    waits for it.
    """

    def __init__(self) -> None:
        self._open: dict[tuple[str, int], deque[int]] = {}
        self._done: dict[tuple[str, int], set[int]] = {}
        self._next: dict[tuple[str, int], int] = {}
        self._committed: dict[tuple[str, int], int] = {}

    def taken(self, topic: str, partition: int, offset: int) -> None:
        """A record was read and is being worked on (offsets of a partition come in increasing order)."""
        tp = (topic, partition)
        self._open.setdefault(tp, deque()).append(offset)
        self._next[tp] = offset + 1

    def finished(self, topic: str, partition: int, offset: int) -> None:
        tp = (topic, partition)
        opened = self._open.get(tp)
        if opened is None:
            return  # forgotten (its partition went to another member)
        done = self._done.setdefault(tp, set())
        done.add(offset)
        while opened and opened[0] in done:
            done.discard(opened.popleft())

    def positions(self, partitions: Iterable[tuple[str, int]] | None = None) -> dict[tuple[str, int], int]:
        """The committable position of each partition (all of them by default)."""
        chosen = self._next.keys() if partitions is None else [tp for tp in partitions if tp in self._next]
        return {tp: (opened[0] if (opened := self._open.get(tp)) else self._next[tp]) for tp in chosen}

    def uncommitted(self) -> dict[tuple[str, int], int]:
        """The positions that moved since :meth:`committed` was last told of them."""
        return {tp: at for tp, at in self.positions().items() if self._committed.get(tp) != at}

    def committed(self, positions: Mapping[tuple[str, int], int]) -> None:
        self._committed.update(positions)

    def forget(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Stop tracking these partitions: their records are another member's now."""
        for tp in partitions:
            for table in (self._open, self._done, self._next, self._committed):
                table.pop(tp, None)
