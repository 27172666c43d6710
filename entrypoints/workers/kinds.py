"""The worker kinds: outbox relay, router, channel workers, status worker, real-time push, webhooks and sweeper."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import TypeVar

import structlog

from adapters.channels.instagram import InstagramConnector
from adapters.channels.loopback import LoopbackConnector
from adapters.channels.messenger import MessengerConnector
from adapters.channels.telegram import TelegramConnector, TelegramUpdates, next_offset, parse_update
from adapters.channels.whatsapp import WhatsAppConnector
from adapters.kafka.consumer import KafkaBatchConsumer, Offsets, Received
from adapters.kafka.logwatch import LogWatch
from adapters.postgres.notify import OutboxWakeups
from adapters.redis import RedisFanout
from application import topics
from application.attachments import Attachments
from application.errors import Unavailable
from application.inbound import Inbound, InboundDeps, receive
from application.lanes import DeliveryLanes, Stopped
from application.pipeline import (
    ChannelDeps,
    CircuitBreaker,
    DeliveryJob,
    JobResult,
    Outcome,
    Receipt,
    RetryPolicy,
    Watermark,
    apply_receipts,
    open_uploads,
    outbox_backlog,
    purge_outbox,
    relay_outbox,
    republish_outbox,
    route_events,
    sweep,
)
from application.ports import ChannelConnector, ChannelError, ObjectStore, RateLimiter, WebhookSender
from application.realtime import push_events
from domain.channels import Channel
from entrypoints.channels import count_inbound, inbox_owners
from entrypoints.limits import egress_policy, limiter_for, pacer_for
from entrypoints.realtime import redis_for
from entrypoints.storage import object_store_for
from entrypoints.tracing import TracedConnector, TracedWebhookSender, batch_span, tracing_enabled
from entrypoints.workers import metrics
from entrypoints.workers.runner import (
    LAG_EVERY_S,
    TRANSIENT,
    Worker,
    consume,
    report_lag,
    start_consumer,
    stop_consumer,
    until_done,
)

log = logging.getLogger("chat4all.workers")
R = TypeVar("R")


async def run_relay(w: Worker) -> None:
    """Publish the outbox: at once when PostgreSQL says something was written, and every poll interval anyway."""
    s = w.settings
    assert s.database_url is not None
    keep = timedelta(seconds=s.outbox_retention_s)
    next_purge = next_sample = next_check = 0.0
    loop = asyncio.get_running_loop()
    log_watch = BrokerLogWatch(w)
    async with OutboxWakeups(s.database_url) as wakeups:
        while not w.stop.is_set():
            w.beat("relay", next_within=s.relay_poll_interval)
            try:
                if loop.time() >= next_check:
                    next_check = loop.time() + s.broker_check_interval_s
                    await log_watch.check()
                if loop.time() >= next_purge:
                    next_purge = loop.time() + min(60.0, s.outbox_retention_s)
                    purged = await purge_outbox(w.deps, keep=keep)
                    if purged:
                        log.info("relay: purged %d published outbox events", purged)
                if loop.time() >= next_sample:  # the backlog gauge, sampled at most every 5 s
                    next_sample = loop.time() + 5.0
                    metrics.outbox_backlog(await outbox_backlog(w.deps))
                published = await relay_outbox(w.deps, limit=s.relay_batch)
            except TRANSIENT as exc:
                log.warning("relay: %s; retrying", exc)
                await w.sleep(1.0)
                continue
            metrics.relayed(published)
            if published < s.relay_batch:
                await wakeups.wait(s.relay_poll_interval)
    await log_watch.stop()


class BrokerLogWatch:
    """The relay's check that the broker still holds what was published (see adapters/kafka/logwatch.py)."""

    def __init__(self, w: Worker) -> None:
        self.w = w
        self.watch = LogWatch(w.bootstrap, topics.all_topics())
        self.intact_at: datetime | None = None
        """When the log was last found whole (None: not yet)."""

    async def check(self) -> None:
        now = self.w.deps.clock.now()
        try:
            lost = await self.watch.lost()
        except Unavailable as exc:
            log.info("relay: cannot check the broker's log yet: %s", exc)
            return
        if lost and self.intact_at is not None:
            since = self.intact_at - timedelta(seconds=self.w.settings.broker_loss_replay_s)
            again = await republish_outbox(self.w.deps, since=since)
            metrics.log_losses()
            log.warning(
                "relay: the broker lost its log (%d partitions went back, e.g. %s); publishing again the %d events "
                "published since %s",
                len(lost),
                lost[0],
                again,
                since.isoformat(timespec="seconds"),
            )
        self.intact_at = now

    async def stop(self) -> None:
        await self.watch.stop()


async def run_router(w: Worker) -> None:
    """Turn accepted messages into delivery jobs, per conversation in seq order."""

    async def handle(batch: list[Received]) -> None:
        metrics.routed(await route_events(w.deps, [r.payload for r in batch]))

    await consume(w, w.consumer([topics.MESSAGES], "chat4all-router"), handle)


async def run_status(w: Worker) -> None:
    """Apply receipts through the delivery state machine."""

    async def handle(batch: list[Received]) -> None:
        receipts: list[Receipt | Watermark] = []
        for r in batch:
            try:
                watermark = r.payload.get("type") == "delivery.watermark"
                receipts.append(Watermark.from_event(r.payload) if watermark else Receipt.from_event(r.payload))
            except ValueError as exc:
                log.warning("status: skipping %s[%d]@%d: %s", r.topic, r.partition, r.offset, exc)
        metrics.receipts_applied(await apply_receipts(w.deps, receipts))

    await consume(w, w.consumer([topics.RECEIPTS], "chat4all-status"), handle)


async def run_push(w: Worker) -> None:
    """Publish what clients should see of new messages and status changes to their users' Redis channels.

    Best effort: while Redis is down, frames are dropped (and counted) rather than held, because a
    client that misses frames resyncs, and a flood of stale ones would help nobody.
    """
    redis = redis_for(w.settings.redis_url)
    if redis is None:
        raise SystemExit("push: CHAT4ALL_REDIS_URL is not set")
    fanout = RedisFanout(redis)

    async def handle(batch: list[Received]) -> None:
        try:
            metrics.pushed(await push_events(fanout, [r.payload for r in batch]))
        except Unavailable as exc:
            metrics.pushed(len(batch), dropped=True)
            log.warning("push: dropped %d events' frames: %s", len(batch), exc)

    try:
        await consume(w, w.consumer([topics.MESSAGES, topics.STATUS], "chat4all-push"), handle)
    finally:
        await redis.aclose()


async def run_webhooks(w: Worker) -> None:
    """Outbound webhooks: record the deliveries events make (consumer group chat4all-webhooks), and attempt the
    due ones. Several of these may run: dispatchers claim deliveries with SKIP LOCKED and a lease."""
    from adapters.webhooks import HttpWebhookSender
    from application.webhooks import TOPICS, DispatchDeps, dispatch_due, record_events

    s = w.settings
    http = HttpWebhookSender(egress_policy(s), timeout=s.webhook_timeout_s)
    sender: WebhookSender = TracedWebhookSender(http) if tracing_enabled() else http
    retry = RetryPolicy(
        max_attempts=s.webhook_attempts, base_delay=s.webhook_retry_base_s, max_delay=s.webhook_retry_cap_s
    )
    lease = timedelta(seconds=s.webhook_timeout_s * 2 + 15)
    dispatch = DispatchDeps(w.deps.uow, w.deps.clock, sender, retry, lease=lease, observe=metrics.webhook_attempted)
    recorded = asyncio.Event()
    metrics.webhooks_started()

    async def handle(batch: list[Received]) -> None:
        if await record_events(w.deps.uow, w.deps.clock, [r.payload for r in batch]):
            recorded.set()
        metrics.events_seen(r.payload for r in batch)  # after recording: a batch that fails is counted when retried

    async def dispatcher() -> None:
        while not w.stop.is_set():
            w.beat("webhooks-dispatch", next_within=1.0)
            try:
                attempted = await dispatch_due(dispatch, limit=100)
            except TRANSIENT as exc:
                log.warning("webhooks: %s; retrying", exc)
                await w.sleep(1.0)
                continue
            if attempted < 100:  # caught up: wait for new deliveries, or the next retry to come due
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(recorded.wait(), timeout=0.5)
                recorded.clear()

    task = asyncio.create_task(dispatcher())
    try:
        await consume(w, w.consumer(list(TOPICS), "chat4all-webhooks"), handle)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await http.close()


async def run_sweeper(w: Worker) -> None:
    """Re-drive what is stuck past the deadline, and expire abandoned uploads (the janitor), every interval."""
    # Imported here, not by every worker kind: the composition root costs a second of start-up.
    from adapters.system import UuidGenerator
    from application.uploads import FileDeps, expire_abandoned

    s = w.settings
    deadline = timedelta(seconds=s.sweep_deadline_s)
    metrics.sweeper_started()
    async with object_store_for(s) as store:
        files = FileDeps(uow=w.deps.uow, clock=w.deps.clock, ids=UuidGenerator(), store=store)
        w.beat("sweeper", next_within=s.sweep_interval_s)
        while await w.sleep(s.sweep_interval_s):
            w.beat("sweeper", next_within=s.sweep_interval_s)
            try:
                swept = await sweep(w.deps, deadline=deadline)
                expired = await expire_abandoned(files)
                metrics.uploads_active(await open_uploads(w.deps))
            except TRANSIENT as exc:
                log.warning("sweeper: %s; trying again next round", exc)
                continue
            metrics.swept(swept)
            if swept.conversations or swept.jobs:
                log.warning("sweeper re-drove %d conversations and %d jobs", swept.conversations, swept.jobs)
            if expired:
                log.info("sweeper expired %d abandoned uploads and dropped their chunks", expired)


async def run_channels(w: Worker) -> None:
    """One consumer group per channel, each with its connector, circuit breaker and retries."""
    channels = [Channel(c) for c in w.settings.channels]
    if w.settings.storage == "filesystem" and w.settings.jwt_secret is None:
        log.warning("channels: no CHAT4ALL_JWT_SECRET: the file links this worker sends will not verify")
    redis = redis_for(w.settings.redis_url)  # each platform's pace is shared by all its workers through Redis
    limiter = limiter_for(redis)
    try:
        async with object_store_for(w.settings) as store:  # file messages go out as links to the store
            await asyncio.gather(*(_run_channel(w, ch, store, limiter) for ch in channels))
    finally:
        if redis is not None:
            await redis.aclose()


def connector_for(w: Worker, channel: Channel) -> ChannelConnector:
    """The platform's real client where it is configured, else the loopback platform."""
    s = w.settings
    base, version = s.graph_api_base, s.graph_api_version
    if channel is Channel.TELEGRAM and s.telegram_bot_token is not None:
        return TelegramConnector(s.telegram_bot_token.get_secret_value(), base_url=s.telegram_api_base)
    if channel is Channel.WHATSAPP and s.whatsapp_access_token is not None and s.whatsapp_phone_number_id:
        return WhatsAppConnector(
            s.whatsapp_access_token.get_secret_value(), s.whatsapp_phone_number_id, base_url=base, api_version=version
        )
    if channel is Channel.MESSENGER and s.messenger_page_token is not None:
        return MessengerConnector(
            s.messenger_page_token.get_secret_value(), s.messenger_page_id, base_url=base, api_version=version
        )
    if channel is Channel.INSTAGRAM and s.instagram_access_token is not None:
        return InstagramConnector(
            s.instagram_access_token.get_secret_value(), s.instagram_account_id, base_url=base, api_version=version
        )
    return LoopbackConnector(
        channel,
        receipts=w.deps.publisher,
        now=w.deps.clock.now,
        log_path=s.data_dir / "loopback-sends.jsonl",
        faults_path=s.data_dir / "loopback-faults.json",
    )


async def _run_channel(w: Worker, channel: Channel, store: ObjectStore, limiter: RateLimiter) -> None:
    s = w.settings
    structlog.contextvars.bind_contextvars(channel=channel.value)  # every line of this channel's task says so
    connector = connector_for(w, channel)
    log.info("%s: sending through %s", channel.value, type(connector).__name__)
    if tracing_enabled():
        connector = TracedConnector(connector)
    cd = ChannelDeps(
        pipeline=w.deps,
        connector=connector,
        breaker=CircuitBreaker(
            w.deps.clock, threshold=s.breaker_threshold, reset_after=timedelta(seconds=s.breaker_reset_s)
        ),
        retry=RetryPolicy(max_attempts=s.delivery_attempts),
        echo_grace=timedelta(seconds=s.echo_grace_s),
        attachments=Attachments(uow=w.deps.uow, store=store, clock=w.deps.clock),
        pacer=pacer_for(s, channel, limiter),
    )
    consumer = w.consumer([topics.outbound(channel)], f"chat4all-channel-{channel.value}")
    metrics.channel_started(channel)
    try:
        await _LaneConsumer(w, consumer, cd).run()
    finally:
        await connector.close()


MAX_IN_FLIGHT = 2_000
"""Most jobs a channel worker holds (read and not finished): past it, it stops fetching until lanes finish some."""
COMMIT_EVERY_S = 0.2
"""How often a channel worker commits the positions its lanes moved."""


class _LaneConsumer:
    """Reads jobs as fast as lanes take them: each conversation in order, conversations side by side.

    A record's offset is committed once it and every earlier record of its partition are finished (``Offsets``),
    so what a killed worker held is read again by the next owner, and the send ledger stops a second send. A
    rebalance drops the lost partitions' jobs after the steps under way and commits what was finished.
    """

    def __init__(self, w: Worker, consumer: KafkaBatchConsumer, cd: ChannelDeps) -> None:
        self.w = w
        self.consumer = consumer
        self.cd = cd
        self.channel = cd.connector.channel
        self.offsets = Offsets()
        self.lanes: DeliveryLanes[Received] = DeliveryLanes(
            cd, finished=self.finished, retrying=self.retrying, span=partial(batch_span, consumer.group_id)
        )
        consumer.on_revoke = self.revoked

    def finished(self, outcomes: Sequence[tuple[Received, JobResult]]) -> None:
        results = [r for _, r in outcomes]
        metrics.delivered(self.channel, results, self.cd.breaker.state)
        _log_outcomes(results)
        for record, result in outcomes:
            if result.outcome is not Outcome.DEFERRED:
                self.offsets.finished(record.topic, record.partition, record.offset)

    async def retrying(self, step: Callable[[], Awaitable[R]]) -> R:
        return await until_done(self.w, step, Stopped)

    async def commit(self, positions: dict[tuple[str, int], int]) -> None:
        if positions:
            await self.consumer.commit_positions(positions)
            self.offsets.committed(positions)

    async def revoked(self, partitions: frozenset[tuple[str, int]]) -> None:
        dropped = await self.lanes.drop(lambda r: (r.topic, r.partition) in partitions)
        with contextlib.suppress(*TRANSIENT):
            await self.commit(self.offsets.positions(partitions))
        self.offsets.forget(partitions)
        if dropped:
            log.info("%s: %d jobs of revoked partitions left to their new owner", self.channel, dropped)

    async def committer(self) -> None:
        while True:
            await asyncio.sleep(COMMIT_EVERY_S)
            try:
                await self.commit(self.offsets.uncommitted())
            except TRANSIENT as exc:
                log.warning("%s: committing positions failed (%s); trying again", self.channel, exc)

    def take(self, batch: Sequence[Received]) -> None:
        owned = self.consumer.assignment()
        for r in batch:
            if (r.topic, r.partition) not in owned:
                continue  # revoked while it was on its way: its new owner reads it
            self.offsets.taken(r.topic, r.partition, r.offset)
            try:
                job = DeliveryJob.from_event(r.payload)
            except ValueError as exc:
                log.warning("%s: skipping %s[%d]@%d: %s", self.channel, r.topic, r.partition, r.offset, exc)
                self.offsets.finished(r.topic, r.partition, r.offset)
                continue
            self.lanes.add(r, job)

    async def room(self) -> bool:
        """Whether the lanes can take more jobs; when not, fetching pauses and this waits a little for them."""
        if self.lanes.pending < MAX_IN_FLIGHT:
            if self.consumer.paused:
                self.consumer.resume_all()
            return True
        if not self.consumer.paused:
            self.consumer.pause_all()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.5):
                await self.lanes.progressed()
        return False

    async def run(self) -> None:
        beat = await start_consumer(self.w, self.consumer)
        committing = asyncio.create_task(self.committer())
        loop = asyncio.get_running_loop()
        next_lag = 0.0
        try:
            while not self.w.stop.is_set():
                beat()
                if self.lanes.failure is not None:
                    raise self.lanes.failure
                if not await self.room():
                    continue
                try:
                    self.take(await self.consumer.poll(timeout_ms=500))
                except TRANSIENT as exc:
                    log.warning("%s: polling failed (%s); trying again", self.channel, exc)
                    await self.w.sleep(1.0)
                if loop.time() >= next_lag:
                    next_lag = loop.time() + LAG_EVERY_S
                    await report_lag(self.consumer)
        finally:
            await self.lanes.close()
            committing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await committing
            with contextlib.suppress(*TRANSIENT, RuntimeError):
                await self.commit(self.offsets.uncommitted())
            await stop_consumer(self.w, self.consumer)


def _log_outcomes(results: Sequence[JobResult]) -> None:
    """A line per delivery that failed (WARNING) or went out (DEBUG), with its ids as fields; never the text."""
    for r in results:
        if r.outcome in (Outcome.FAILED, Outcome.DEAD):
            log.warning("delivery %s: %s", r.outcome.value, r.error, extra=_job_fields(r))
        elif r.outcome is Outcome.HANDED_OVER and log.isEnabledFor(logging.DEBUG):
            log.debug("delivery handed over", extra=_job_fields(r))


def _job_fields(r: JobResult) -> dict[str, object]:
    job = r.job
    return {
        "message_id": str(job.message_id),
        "conversation_id": str(job.conversation_id),
        "channel": job.channel.value,
        "seq": job.seq,
        "attempts": r.attempts,
        "platform_message_id": r.platform_message_id,
    }


async def run_telegram_updates(w: Worker) -> None:
    """Long-poll Telegram's getUpdates (bots without a public URL) and accept what it brings.

    Each batch is stored before the next call confirms it; one poller per bot (Telegram ends a
    concurrent getUpdates with a 409).
    """
    s = w.settings
    if s.telegram_bot_token is None:
        raise SystemExit("telegram-updates: CHAT4ALL_TELEGRAM_BOT_TOKEN is not set")
    updates = TelegramUpdates(s.telegram_bot_token.get_secret_value(), base_url=s.telegram_api_base)
    deps = InboundDeps(uow=w.deps.uow, clock=w.deps.clock, inbox_owners=inbox_owners(s))
    offset: int | None = None
    attempt = 0
    try:
        while not w.stop.is_set():
            w.beat("telegram-updates", next_within=60.0)  # a long poll, or the longest wait after a failure
            try:
                batch = await updates.next_batch(offset)
                messages = tuple(m for m in map(parse_update, batch) if m is not None)
                outcomes = await receive(deps, Inbound(messages=messages))
            except (ChannelError, *TRANSIENT) as exc:
                attempt += 1
                wait = RetryPolicy(max_delay=60.0).delay(attempt, getattr(exc, "retry_after", None))
                log.warning("telegram-updates: %s; polling again in %.1fs", exc, wait)
                await w.sleep(wait)
                continue
            attempt = 0
            count_inbound(Channel.TELEGRAM, outcomes)
            offset = next_offset(batch, offset)
    finally:
        await updates.close()


KINDS: dict[str, Callable[[Worker], Awaitable[None]]] = {
    "relay": run_relay,
    "router": run_router,
    "status": run_status,
    "sweeper": run_sweeper,
    "push": run_push,
    "webhooks": run_webhooks,
    "channels": run_channels,
    "telegram-updates": run_telegram_updates,
}
