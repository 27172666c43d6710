"""What every worker process shares: its resources, a stop signal, and the consume-then-commit loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from functools import partial
from typing import TypeVar

import attrs
import stamina
from prometheus_client import Gauge

from adapters.kafka.consumer import KafkaBatchConsumer, Received
from adapters.kafka.publisher import KafkaPublisher
from adapters.postgres.pool import open_pool
from adapters.postgres.unit_of_work import PostgresUnitOfWork
from adapters.system import SystemClock
from application.errors import Unavailable
from application.pipeline import PipelineDeps
from entrypoints import logs
from entrypoints.settings import Settings
from entrypoints.tracing import batch_span

log = logging.getLogger("chat4all.workers")

Handler = Callable[[list[Received]], Awaitable[None]]
R = TypeVar("R")

# Failures worth waiting out: the database or the broker is away for a moment.
TRANSIENT = (Unavailable, OSError, TimeoutError)

CONSUMER_LAG = Gauge(
    "chat4all_consumer_lag",
    "Records behind the end of the topic, by consumer group and topic (summed over the group's live members).",
    ["group", "topic"],
    multiprocess_mode="livesum",
)
LAG_EVERY_S = 2.0
"""How often a consumer reports its lag (after a batch, or while idle)."""
JOIN_TIMEOUT_S = 60.0
"""How long a worker's consumer may take to start, joining its group included."""
_RETRY_WAIT_MAX_S = 5.0
"""Longest wait between two tries of what failed transiently (starting a consumer, handling a batch)."""


@attrs.define
class Worker:
    """A running worker's resources: settings, pipeline collaborators and its stop signal."""

    settings: Settings
    deps: PipelineDeps
    bootstrap: str
    stop: asyncio.Event = attrs.Factory(asyncio.Event)
    deadlines: dict[str, float] = attrs.Factory(dict)
    """Each running loop's name, and the monotonic time by which it must come round again."""

    def beat(self, loop: str, *, next_within: float = 0.0) -> None:
        """``loop`` came round (polled, retried, swept); it means to again within ``next_within`` seconds.

        Past that and ``worker_stall_s`` more, ``stalled`` names it (and ``/health/live`` answers 503).
        """
        self.deadlines[loop] = time.monotonic() + next_within + self.settings.worker_stall_s

    def done(self, loop: str) -> None:
        """``loop`` ended: no longer watched."""
        self.deadlines.pop(loop, None)

    def stalled(self) -> list[str]:
        """The loops that did not come round in time (liveness: none)."""
        now = time.monotonic()
        return sorted(name for name, deadline in self.deadlines.items() if deadline < now)

    def consumer(self, topics: Sequence[str], group_id: str, *, max_records: int = 500) -> KafkaBatchConsumer:
        s = self.settings
        return KafkaBatchConsumer(
            self.bootstrap,
            topics,
            group_id,
            max_records=max_records,
            client_id=f"chat4all-{group_id}",
            session_timeout_ms=s.worker_session_timeout_ms,
            heartbeat_interval_ms=max(100, s.worker_session_timeout_ms // 3),
            fetch_max_wait_ms=s.kafka_fetch_wait_ms,
            idle_fetch_max_wait_ms=max(s.kafka_fetch_wait_ms, s.kafka_idle_fetch_wait_ms),
            # Starting includes joining the group, which waits for every member to give its partitions up: under
            # load that takes more than a few seconds, and a start that gives up leaves the group and makes it
            # rebalance again (the first scale-out drill saw new workers time out and rejoin for a minute).
            start_timeout=JOIN_TIMEOUT_S,
        )

    async def sleep(self, seconds: float) -> bool:
        """Sleep unless told to stop first; True when the worker should go on."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), timeout=seconds)
        return not self.stop.is_set()


@contextlib.asynccontextmanager
async def worker_resources(settings: Settings) -> AsyncIterator[Worker]:
    """The pool, the publisher and the stop signal (SIGTERM/SIGINT) of one worker process."""
    if settings.database_url is None:
        raise SystemExit("CHAT4ALL_DATABASE_URL is not set")
    if settings.kafka_bootstrap is None:
        raise SystemExit("CHAT4ALL_KAFKA_BOOTSTRAP is not set")
    pool = await open_pool(
        settings.database_url,
        min_size=1,
        max_size=settings.db_pool_max,
        acquire_timeout=settings.db_acquire_timeout_s,
    )
    publisher = KafkaPublisher(settings.kafka_bootstrap, client_id="chat4all-worker")
    try:
        await _start_publisher(publisher)
        deps = PipelineDeps(uow=partial(PostgresUnitOfWork, pool), clock=SystemClock(), publisher=publisher)
        worker = Worker(settings=settings, deps=deps, bootstrap=settings.kafka_bootstrap)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.stop.set)
        yield worker
    finally:
        await publisher.stop()
        await pool.close()


async def _start_publisher(publisher: KafkaPublisher) -> None:
    async for attempt in stamina.retry_context(on=TRANSIENT, attempts=None, timeout=60):
        with attempt:
            await publisher.start()


async def consume(worker: Worker, consumer: KafkaBatchConsumer, handle: Handler) -> None:
    """Poll, handle, commit, until told to stop; a batch is committed only after ``handle`` succeeded.

    A failure worth waiting out (database or broker unavailable) retries the same batch with
    backoff; anything else crashes the process, and the supervisor starts it again (the records
    come back, as they were not committed).

    Every poll and every retry is a heartbeat (``Worker.beat``, named after the group): a loop stuck in
    one call, not one waiting out an outage, is what ``/health/live`` reports.
    """
    beat = await start_consumer(worker, consumer)
    loop = asyncio.get_running_loop()
    next_lag = 0.0
    try:
        while not worker.stop.is_set():
            beat()
            batch = await consumer.poll(timeout_ms=500)
            if not batch:
                if loop.time() >= next_lag:  # caught up: say so
                    next_lag = loop.time() + LAG_EVERY_S
                    await report_lag(consumer)
                continue
            async with consumer.batch():  # a rebalance waits until the batch is handled and committed
                try:
                    with batch_span(consumer.group_id, batch):
                        await until_done(worker, partial(handle, batch), _Stopping, beat)
                except _Stopping:
                    break  # the batch stays uncommitted: whoever owns the partitions next gets it again
                await consumer.commit()
            if loop.time() >= next_lag:
                next_lag = loop.time() + LAG_EVERY_S
                await report_lag(consumer)
    finally:
        await stop_consumer(worker, consumer)


async def start_consumer(worker: Worker, consumer: KafkaBatchConsumer) -> Callable[[], None]:
    """Start ``consumer``, waiting out a broker that is away; the heartbeat of its loop (named after its group)."""
    beat = partial(worker.beat, consumer.group_id, next_within=_RETRY_WAIT_MAX_S)
    async for attempt in stamina.retry_context(on=TRANSIENT, attempts=None, timeout=None, wait_max=_RETRY_WAIT_MAX_S):
        with attempt:
            beat()
            await consumer.start()
    return beat


async def until_done(
    worker: Worker,
    work: Callable[[], Awaitable[R]],
    stopped: type[Exception],
    beat: Callable[[], None] | None = None,
) -> R:
    """``work()``, tried again with backoff while it fails transiently; raises ``stopped`` once the worker stops.

    ``beat`` is called before each new try: a loop waiting out an outage is not a stalled one.
    """
    async for attempt in stamina.retry_context(on=TRANSIENT, attempts=None, timeout=None, wait_max=_RETRY_WAIT_MAX_S):
        with attempt:
            if attempt.num > 1:
                if beat is not None:
                    beat()
                if worker.stop.is_set():
                    raise stopped
            return await work()
    raise AssertionError("unreachable: the retries never give up")


async def stop_consumer(worker: Worker, consumer: KafkaBatchConsumer) -> None:
    """Leave the group: the loop is no longer watched, its lag no longer reported."""
    worker.done(consumer.group_id)
    for topic in consumer.topics:
        CONSUMER_LAG.labels(consumer.group_id, topic).set(0)
    await consumer.stop()


async def report_lag(consumer: KafkaBatchConsumer) -> None:
    try:
        async with asyncio.timeout(1.0):
            behind = await consumer.lag()
    except (TimeoutError, *TRANSIENT):
        return
    for topic in consumer.topics:
        CONSUMER_LAG.labels(consumer.group_id, topic).set(behind.get(topic, 0))


class _Stopping(Exception):
    """Told to stop while waiting out a failure."""


def configure_logging(level: str, fmt: str, *, kind: str) -> None:
    """Structured logs (entrypoints/logs.py) named after the worker ``kind``; aiokafka stays at WARNING or above."""
    logs.configure_logging(level, fmt, runtime=kind)
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, logging.getLogger().level))
