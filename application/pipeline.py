"""The event pipeline's use cases: relay the outbox, route messages, deliver jobs, apply receipts, sweep.

Every step is at least once (a worker may die after its side effect and before it records it)
and idempotent (the next run sees the record and changes nothing), so the observable effect is
exactly once. The database is the truth; the log only says where to look:

- the router routes a conversation *up to* a seq, reading the messages from the database, so
  events that arrive twice, late or out of order cannot reorder or duplicate anything;
- channel workers check the send ledger before handing a delivery to its platform;
- receipts go through the delivery state machine, which ignores late and repeated ones.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from uuid import UUID

import attrs

from application import topics
from application.attachments import Attachments
from application.events import emit_status, payload_of
from application.limits import Pacer
from application.ports import (
    ChannelConnector,
    ChannelError,
    Clock,
    DeliveryKey,
    EarlyReceipt,
    EarlyWatermark,
    Event,
    EventPublisher,
    OutboundMessage,
    SendClaim,
    UnitOfWork,
)
from domain.channels import Channel, ChannelAddress
from domain.conversations import Participant, ParticipantKind
from domain.deliveries import Delivery, DeliveryStatus
from domain.errors import BusinessRuleViolation
from domain.ids import ConversationId, MessageId, UserId
from domain.messages import Message


@attrs.frozen
class PipelineDeps:
    """What every pipeline worker needs."""

    uow: Callable[[], UnitOfWork]
    clock: Clock
    publisher: EventPublisher


# --- the outbox relay ----------------------------------------------------------------


async def relay_outbox(d: PipelineDeps, *, limit: int = 500) -> int:
    """Publish one batch of committed outbox events, oldest first; return how many.

    The rows stay claimed while they are published, so several relays can run at once. A relay
    that dies after publishing and before marking publishes them again: consumers dedupe.
    """
    async with d.uow() as uow:
        records = await uow.outbox.claim(limit)
        if not records:
            return 0
        await d.publisher.publish([Event(r.topic, r.key, r.payload, headers=r.headers) for r in records])
        await uow.outbox.mark_published([r.id for r in records], at=d.clock.now())
        await uow.commit()
    return len(records)


async def outbox_backlog(d: PipelineDeps) -> int:
    """How many committed outbox events wait for the relay (a gauge's sample)."""
    async with d.uow() as uow:
        return await uow.outbox.backlog()


async def republish_outbox(d: PipelineDeps, *, since: datetime) -> int:
    """Publish again every event published since ``since``: the broker lost its log (it restarted empty).

    Consumers dedupe what they had already handled (the send ledger, monotonic statuses), so a
    generous ``since`` costs work, never a second platform message.
    """
    async with d.uow() as uow:
        again = await uow.outbox.unpublish(published_after=since, published_before=d.clock.now())
        await uow.commit()
    return again


async def purge_outbox(d: PipelineDeps, *, keep: timedelta, limit: int = 10_000) -> int:
    """Delete events published longer than ``keep`` ago (they are in the log); return how many."""
    async with d.uow() as uow:
        purged = await uow.outbox.purge(published_before=d.clock.now() - keep, limit=limit)
        await uow.commit()
    return purged


# --- the router ----------------------------------------------------------------------


@attrs.frozen
class DeliveryJob:
    """One delivery to hand to a platform: the payload of a ``chat.outbound.<channel>`` event."""

    message_id: MessageId
    conversation_id: ConversationId
    seq: int
    recipient: str
    channel: Channel
    to: ChannelAddress
    sender: str
    payload: Mapping[str, Any]
    created_at: datetime
    replayed: bool = False
    """A dead letter published again (`chat4all dlq replay`): it goes out although its delivery FAILED."""

    @property
    def key(self) -> DeliveryKey:
        return (self.message_id, self.recipient, self.channel)

    def to_event(self) -> Event:
        return Event(
            topics.outbound(self.channel),
            str(self.conversation_id),
            {
                "type": "delivery.job",
                "message_id": str(self.message_id),
                "conversation_id": str(self.conversation_id),
                "seq": self.seq,
                "recipient": self.recipient,
                "channel": self.channel.value,
                "to": str(self.to),
                "sender": self.sender,
                "payload": dict(self.payload),
                "created_at": self.created_at.isoformat(),
                **({"replayed": True} if self.replayed else {}),
            },
        )

    @classmethod
    def from_event(cls, event: Mapping[str, Any]) -> DeliveryJob:
        """Parse a job event.

        Raises:
            ValueError: the event is not a well-formed job.
        """
        try:
            return cls(
                message_id=MessageId(UUID(str(event["message_id"]))),
                conversation_id=ConversationId(UUID(str(event["conversation_id"]))),
                seq=int(event["seq"]),
                recipient=str(event["recipient"]),
                channel=Channel(event["channel"]),
                to=ChannelAddress.parse(str(event["to"])),
                sender=str(event["sender"]),
                payload=dict(event["payload"]),
                created_at=datetime.fromisoformat(str(event["created_at"])),
                replayed=event.get("replayed") is True,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a delivery job: {exc}") from exc

    def outbound(self) -> OutboundMessage:
        return OutboundMessage(
            delivery=self.key,
            conversation_id=self.conversation_id,
            seq=self.seq,
            to=self.to,
            sender=self.sender,
            payload=self.payload,
        )


def routing_targets(events: Iterable[Mapping[str, Any]]) -> dict[ConversationId, int]:
    """The highest seq per conversation among ``message.created`` events; anything else is ignored."""
    targets: dict[ConversationId, int] = {}
    for e in events:
        if e.get("type") != "message.created":
            continue
        try:
            conv = ConversationId(UUID(str(e["conversation_id"])))
            seq = int(e["seq"])
        except (KeyError, TypeError, ValueError):
            continue
        targets[conv] = max(seq, targets.get(conv, 0))
    return targets


async def jobs_for(
    uow: UnitOfWork, messages: Sequence[Message], keys: Sequence[DeliveryKey], *, at: datetime
) -> list[DeliveryJob]:
    """A job per platform delivery in ``keys`` (deliveries still SENT) whose message is in ``messages``.

    Deliveries whose recipient has no address on the channel any more become FAILED, in ``uow``
    (with their status events): the caller commits.
    """
    by_id = {m.id: m for m in messages}
    platform = [k for k in keys if k[2].is_platform and k[0] in by_id]
    addresses = await _addresses_of(uow, platform)
    jobs: list[DeliveryJob] = []
    unreachable: list[DeliveryKey] = []
    for key in platform:
        m, channel, address = by_id[key[0]], key[2], addresses.get(key)
        if address is None:
            unreachable.append(key)
            continue
        jobs.append(
            DeliveryJob(
                message_id=m.id,
                conversation_id=m.conversation_id,
                seq=m.seq,
                recipient=key[1],
                channel=channel,
                to=address,
                sender=m.sender.key,
                payload=payload_of(m.content),
                created_at=m.created_at,
            )
        )
    if unreachable:
        failed = [
            dl
            for dl in await uow.messages.lock_deliveries(unreachable)
            if dl.advance(DeliveryStatus.FAILED, at=at, error=f"the recipient has no {dl.channel.value} identity")
        ]
        await uow.messages.save_progress(failed)
        for dl in failed:
            m = by_id[dl.message_id]
            await emit_status(uow.outbox, m.conversation_id, m.sender.key, [dl])
    return jobs


async def _addresses_of(uow: UnitOfWork, keys: Sequence[DeliveryKey]) -> dict[DeliveryKey, ChannelAddress]:
    """The address each platform delivery goes to: the contact's own, or the user's identity on the channel.

    Deliveries whose recipient has no address on their channel are absent.
    """
    recipients = {k: Participant.from_key(k[1]) for k in keys}
    user_ids = list({p.user_id for p in recipients.values() if p.user_id is not None})
    identities: dict[tuple[UserId, Channel], ChannelAddress] = {
        (i.user_id, i.channel): i.address for i in await uow.identities.list_for_users(user_ids)
    }
    found: dict[DeliveryKey, ChannelAddress] = {}
    for key, r in recipients.items():
        if r.kind is ParticipantKind.CONTACT:
            address = r.address
        else:
            assert r.user_id is not None
            address = identities.get((r.user_id, key[2]))
        if address is not None and address.channel is key[2]:
            found[key] = address
    return found


@attrs.frozen
class Routed:
    """What one routing pass did."""

    messages: int
    jobs: int
    message_ids: frozenset[MessageId] = attrs.field(factory=frozenset, eq=False, repr=False)


async def route_conversations(d: PipelineDeps, targets: Mapping[ConversationId, int]) -> Routed:
    """Route every message of each conversation up to its target seq, in seq order, once.

    The conversations' progress rows are locked (in id order, against deadlocks) for the
    duration, so two routers never route the same messages concurrently. Jobs are published
    before the progress commits: a router that dies in between publishes them again, and the
    channel workers' ledger turns that into no second send.
    """
    if not targets:
        return Routed(0, 0)
    now = d.clock.now()
    async with d.uow() as uow:
        progress = await uow.routing.lock(sorted(targets, key=str), at=now)
        ranges = {c: (progress.get(c, 0), up_to) for c, up_to in targets.items() if up_to > progress.get(c, 0)}
        messages = list(await uow.messages.in_ranges(ranges)) if ranges else []
        if not messages:
            return Routed(0, 0)
        advanced: dict[ConversationId, int] = {}
        for m in messages:  # each conversation's messages come in seq order
            advanced[m.conversation_id] = m.seq
        jobs = await jobs_for(uow, messages, await uow.messages.unsent_of([m.id for m in messages]), at=now)
        await uow.routing.advance(advanced, at=now)
        await d.publisher.publish([j.to_event() for j in jobs])
        await uow.commit()
    return Routed(len(messages), len(jobs), frozenset(m.id for m in messages))


async def route_events(d: PipelineDeps, events: Iterable[Mapping[str, Any]]) -> Routed:
    """Route what a batch of ``chat.messages`` events points at."""
    return await route_conversations(d, routing_targets(events))


# --- channel workers -----------------------------------------------------------------


class CircuitBreaker:
    """Stops calling a platform that keeps failing, and probes it again after a pause.

    Closed: calls go through; ``threshold`` consecutive failures open it. Open: nothing goes
    through for ``reset_after``. Then half-open: one call goes through; success closes it, a
    failure opens it again.
    """

    def __init__(self, clock: Clock, *, threshold: int = 5, reset_after: timedelta = timedelta(seconds=10)) -> None:
        self._clock = clock
        self.threshold = threshold
        self.reset_after = reset_after
        self._failures = 0
        self._opened_at: datetime | None = None
        self._probing = False

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return "closed"
        return "half-open" if self._clock.now() >= self._opened_at + self.reset_after else "open"

    def allow(self) -> bool:
        """May a call go through now? In half-open state only one call (the probe) may."""
        state = self.state
        if state == "closed":
            return True
        if state == "half-open" and not self._probing:
            self._probing = True
            return True
        return False

    def retry_in(self) -> float:
        """Seconds until the breaker lets a probe through (0 when it would now)."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, (self._opened_at + self.reset_after - self._clock.now()).total_seconds())

    def succeeded(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._probing = False

    def failed(self) -> None:
        self._failures += 1
        if self._probing or self._failures >= self.threshold:
            self._opened_at = self._clock.now()
        self._probing = False


@attrs.frozen
class RetryPolicy:
    """Exponential backoff with full jitter, capped; the platform's retry-after wins when longer."""

    max_attempts: int = 5
    base_delay: float = 0.2
    max_delay: float = 30.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` >= 1 failed so far)."""
        backoff = random.uniform(0, min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))  # noqa: S311
        return max(backoff, min(retry_after or 0.0, self.max_delay))


class Outcome(StrEnum):
    """What became of one delivery job."""

    HANDED_OVER = "handed_over"
    ALREADY_SENT = "already_sent"
    FAILED = "failed"
    """The platform refused it for good: the delivery is FAILED."""
    DEAD = "dead"
    """Every attempt failed: the delivery is FAILED and the job went to the dead-letter topic."""
    DEFERRED = "deferred"
    """The circuit is open, the platform's pace is used up, another worker may be sending it, or a send in doubt
    waits for the platform's echo or for its claim's lease: offer it again later."""
    RECOVERED = "recovered"
    """A worker died between the platform's acceptance and the ledger: the platform had it (it said so when asked,
    or echoed it), it was not resent."""
    DISCARDED = "discarded"
    """The delivery no longer exists."""


@attrs.frozen
class JobResult:
    job: DeliveryJob
    outcome: Outcome
    claimed: bool = attrs.field(default=False, kw_only=True)
    """This worker holds the job's claim in the send ledger (and must complete or release it)."""
    platform_message_id: str | None = None
    error: str | None = None
    attempts: int = 0
    retry_in: float | None = attrs.field(default=None, kw_only=True)
    """Deferred by pacing, or a send in doubt waiting for an echo or a lease: seconds until it may be sent."""


@attrs.frozen
class ChannelDeps:
    """A channel worker's collaborators."""

    pipeline: PipelineDeps
    connector: ChannelConnector
    breaker: CircuitBreaker
    retry: RetryPolicy = RetryPolicy()
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    concurrency: int = 32
    """Conversations served at once; jobs of one conversation always go one after another."""
    gap_limit: int = 500
    """Most earlier, missing deliveries one batch re-builds (see ``_missing_before``)."""
    claim_lease: timedelta = timedelta(seconds=60)
    """How long an unfinished claim of a platform that can neither be asked nor echoes our sends blocks a re-send."""
    echo_grace: timedelta = timedelta(seconds=10)
    """How long after an unfinished claim a platform that echoes our sends has for its echo to complete the
    ledger; a send still unrecorded then never reached it, and is sent. Must exceed the echo's way here
    (the platform's webhook, the outbox relay, the status worker), or a send in doubt may go twice."""
    attachments: Attachments | None = None
    """How file messages go out (an attachment or a link); without it they fail."""
    pacer: Pacer | None = None
    """Keeps sends under the platform's rate limits; without it they go as fast as they come."""


async def _send_in_order(
    d: ChannelDeps,
    jobs: Sequence[DeliveryJob],
    claims: Mapping[DeliveryKey, SendClaim],
    doubts: Mapping[DeliveryKey, JobResult],
    sent: Callable[[JobResult], None] | None = None,
) -> list[JobResult]:
    """Send one conversation's jobs in seq order; once one is deferred, the rest wait too.

    ``doubts`` holds what became of the claims in doubt that were not taken over (see ``_settle_doubts``).
    ``sent`` hears each result as soon as it is known, before the next job is sent.
    """
    results: list[JobResult] = []
    deferred = False
    for job in jobs:
        claim = claims.get(job.key)
        if claim is None:
            result = JobResult(job, Outcome.DISCARDED)
        elif claim.platform_message_id is not None:
            result = JobResult(job, Outcome.ALREADY_SENT, platform_message_id=claim.platform_message_id)
        elif deferred:
            result = JobResult(job, Outcome.DEFERRED, claimed=claim.fresh)
        else:
            result = doubts[job.key] if not claim.fresh else await _send_one(d, job)
            deferred = result.outcome is Outcome.DEFERRED
        results.append(result)
        if sent is not None:
            sent(result)
    return results


async def _settle_doubts(
    d: ChannelDeps, jobs: Sequence[DeliveryJob], claims: Mapping[DeliveryKey, SendClaim], now: datetime
) -> tuple[dict[DeliveryKey, SendClaim], dict[DeliveryKey, JobResult]]:
    """Decide about the jobs whose earlier send has no known outcome: its worker died mid-batch, or is sending now.

    Returns the claims, those this worker took over now fresh (to be sent), and the outcome of the
    others: RECOVERED when the platform has the message (it says so, or its echo completed the
    ledger), DEFERRED while that may still turn out. What is left goes again, claimed anew:

    - a platform with a lookup is asked at once;
    - a platform that echoes our sends had ``echo_grace`` since the claim for its echo: a send
      still unrecorded then never reached it (no second copy, and no minute's wait);
    - any other platform gets the claim's lease to see it finished, and is then sent to again: at
      least once beats never (Telegram: a send whose answer was lost may arrive twice).
    """
    doubtful = [
        j for j in jobs if (c := claims.get(j.key)) is not None and c.platform_message_id is None and not c.fresh
    ]
    if not doubtful:
        return dict(claims), {}
    settled: dict[DeliveryKey, JobResult] = {}
    candidates: dict[DeliveryKey, datetime] = {}
    for job in doubtful:
        outcome = await _doubt(d, job, claims[job.key], now)
        if outcome is not None:
            settled[job.key] = outcome
        else:
            claimed_at = claims[job.key].claimed_at
            assert claimed_at is not None
            candidates[job.key] = claimed_at
    if not candidates:
        return dict(claims), settled
    async with d.pipeline.uow() as uow:
        recorded = await uow.sends.sent(list(candidates))  # an echo (or the late worker itself) completed it
        taken = await uow.sends.take_over({k: t for k, t in candidates.items() if k not in recorded}, at=now)
        await uow.commit()
    updated = dict(claims)
    by_key = {j.key: j for j in doubtful}
    for key in candidates:
        if key in recorded:
            settled[key] = JobResult(by_key[key], Outcome.RECOVERED, platform_message_id=recorded[key])
        elif key in taken:
            updated[key] = SendClaim(platform_message_id=None, claimed_at=now, fresh=True)
        else:  # another worker took it over, or the platform's echo came just now
            settled[key] = JobResult(by_key[key], Outcome.DEFERRED)
    return updated, settled


async def _doubt(d: ChannelDeps, job: DeliveryJob, claim: SendClaim, now: datetime) -> JobResult | None:
    """What is known of one send in doubt before the ledger is read again; None: it may be taken over."""
    if claim.claimed_at is None:
        return JobResult(job, Outcome.DEFERRED)  # another worker claimed it this very moment
    capabilities = d.connector.capabilities
    if capabilities.lookup:
        platform_id = await d.connector.find_sent(job.key)
        if platform_id is not None:
            return JobResult(job, Outcome.RECOVERED, platform_message_id=platform_id, claimed=True)
        return None  # the platform never got it: send
    wait = d.echo_grace if capabilities.echoes else d.claim_lease
    left = (claim.claimed_at + wait - now).total_seconds()
    if left > 0:
        return JobResult(job, Outcome.DEFERRED, retry_in=left)
    return None


async def _outbound(d: ChannelDeps, job: DeliveryJob) -> OutboundMessage:
    message = job.outbound()
    if message.payload.get("type") != "file":
        return message
    if d.attachments is None:
        raise ChannelError("this worker cannot send files", permanent=True)
    return await d.attachments.prepare(message, d.connector.capabilities)


async def _send_one(d: ChannelDeps, job: DeliveryJob) -> JobResult:
    attempts = 0
    try:
        outbound = await _outbound(d, job)
    except ChannelError as exc:
        return JobResult(job, Outcome.FAILED, error=exc.reason, claimed=True)
    while True:
        if d.pacer is not None:  # before the breaker: a probe it lets through must be sent
            slot = await d.pacer.slot(str(job.to))
            if not slot.granted:
                return JobResult(job, Outcome.DEFERRED, attempts=attempts, claimed=True, retry_in=slot.wait)
            if slot.wait:
                await d.sleep(slot.wait)
        if not d.breaker.allow():
            return JobResult(job, Outcome.DEFERRED, attempts=attempts, claimed=True)
        attempts += 1
        try:
            platform_id = await d.connector.send(outbound)
        except ChannelError as exc:
            if exc.permanent:
                d.breaker.succeeded()  # the platform answered: it is up
                return JobResult(job, Outcome.FAILED, error=exc.reason, attempts=attempts, claimed=True)
            d.breaker.failed()
            if d.breaker.state != "closed":
                # The platform is down, not this message: wait for it without spending the attempts.
                return JobResult(job, Outcome.DEFERRED, attempts=attempts, claimed=True)
            if attempts >= d.retry.max_attempts:
                return JobResult(job, Outcome.DEAD, error=exc.reason, attempts=attempts, claimed=True)
            await d.sleep(d.retry.delay(attempts, exc.retry_after))
            continue
        d.breaker.succeeded()
        return JobResult(job, Outcome.HANDED_OVER, platform_message_id=platform_id, attempts=attempts, claimed=True)


async def deliver_jobs(d: ChannelDeps, jobs: Sequence[DeliveryJob]) -> list[JobResult]:
    """Hand a batch of jobs to the platform and record the outcomes; results in input order.

    Every delivery is claimed in the send ledger (and the claim committed) before it is sent, so
    a worker that dies mid-send leaves a trace: the next one asks the platform whether it has the
    message, or waits for the platform's echo of it, or (for platforms that offer neither) waits out
    the claim's lease, instead of sending a second copy (``_settle_doubts``). Conversations are
    served concurrently, the jobs of each in order. Outcomes are recorded in one transaction; dead
    jobs are published to the dead-letter topic.

    A worker that serves conversations as their jobs arrive, instead of a batch at a time, runs the
    same three steps per conversation (:class:`application.lanes.DeliveryLanes`).
    """
    if not jobs:
        return []
    (plan,) = await plan_deliveries(d, [jobs])
    served = await plan.send(d)
    await record_deliveries(d.pipeline, [list(served.values())])
    return plan.results(served)


@attrs.frozen
class DeliveryPlan:
    """What a batch of jobs needs before sending: the earlier jobs missing from it, the claims, the doubts settled."""

    given: Sequence[DeliveryJob]
    missing: Sequence[DeliveryJob]
    """Jobs for earlier deliveries of the same threads that never reached the platform; they go first."""
    claims: Mapping[DeliveryKey, SendClaim]
    doubts: Mapping[DeliveryKey, JobResult]

    def unique(self) -> list[DeliveryJob]:
        """Every job once (the log may hold a job several times: a router or sweeper re-published it)."""
        jobs = [*self.missing, *self.given]
        return list({j.key: j for j in reversed(jobs)}.values())[::-1]  # the first copy of each

    def by_conversation(self) -> dict[ConversationId, list[DeliveryJob]]:
        grouped: dict[ConversationId, list[DeliveryJob]] = {}
        for job in self.unique():
            grouped.setdefault(job.conversation_id, []).append(job)
        return grouped

    async def send(
        self, d: ChannelDeps, sent: Callable[[JobResult], None] | None = None
    ) -> dict[DeliveryKey, JobResult]:
        """Send each conversation's jobs in seq order, up to ``d.concurrency`` conversations at once.

        ``sent`` hears each result as soon as it is known (to record it while the next job goes out).
        """
        gate = asyncio.Semaphore(d.concurrency)

        async def serve(group: list[DeliveryJob]) -> list[JobResult]:
            async with gate:
                return await _send_in_order(d, sorted(group, key=lambda j: j.seq), self.claims, self.doubts, sent)

        grouped = await asyncio.gather(*(serve(g) for g in self.by_conversation().values()))
        return {r.job.key: r for results in grouped for r in results}

    def results(self, served: Mapping[DeliveryKey, JobResult]) -> list[JobResult]:
        """The outcome of each given job, in order; a repeated job gets its first copy's outcome, as ALREADY_SENT."""
        results: list[JobResult] = []
        seen: set[DeliveryKey] = {j.key for j in self.missing}
        for j in self.given:
            results.append(_copy_of(served[j.key], j) if j.key in seen else served[j.key])
            seen.add(j.key)
        return results


async def plan_deliveries(d: ChannelDeps, batches: Sequence[Sequence[DeliveryJob]]) -> list[DeliveryPlan]:
    """Plan several batches of jobs in one go (one read of earlier missing jobs, one claim transaction).

    The batches must not share a thread (conversation, recipient, channel): each batch's plan holds only
    the missing jobs of its own threads.
    """
    p = d.pipeline
    now = p.clock.now()
    given = [j for batch in batches for j in batch]
    missing = await _missing_before(p, given, at=now, limit=d.gap_limit)
    replayed = {j.key for j in given if j.replayed}
    async with p.uow() as uow:
        claims = await uow.sends.claim(list({j.key: None for j in [*missing, *given]}), at=now, reopen=replayed)
        await uow.commit()
    unique = list({j.key: j for j in [*missing, *given]}.values())
    claims, doubts = await _settle_doubts(d, unique, claims, now)
    plans: list[DeliveryPlan] = []
    for batch in batches:
        threads = {(j.conversation_id, j.recipient, j.channel) for j in batch}
        own = [j for j in missing if (j.conversation_id, j.recipient, j.channel) in threads]
        keys = {j.key for j in [*own, *batch]}
        plans.append(
            DeliveryPlan(
                given=batch,
                missing=own,
                claims={k: c for k, c in claims.items() if k in keys},
                doubts={k: r for k, r in doubts.items() if k in keys},
            )
        )
    return plans


async def record_deliveries(p: PipelineDeps, batches: Sequence[Sequence[JobResult]]) -> None:
    """Record the outcomes of several batches in one transaction; publish the dead jobs to the dead-letter topic."""
    results = [r for batch in batches for r in batch]
    await _record(p, results)
    dead = [r for r in results if r.outcome is Outcome.DEAD]
    if dead:
        await p.publisher.publish([_dead_letter(r, at=p.clock.now()) for r in dead])


async def _missing_before(
    p: PipelineDeps, jobs: Sequence[DeliveryJob], *, at: datetime, limit: int
) -> list[DeliveryJob]:
    """Jobs for the earlier deliveries of the same threads that never reached the platform.

    Per (conversation, recipient, channel), seq n goes to the platform only after every earlier
    seq did. An earlier job can be missing from the log (a broker that lost its data, a job
    still in a dead router's hands): rather than wait for the sweeper, build it again here.

    The gaps are looked for below the highest seq of each thread in the batch, not the lowest: a
    batch can hold an old job published again (the relay replaying a lost log) beside new ones,
    and a lost job between them must still go first.
    """
    threads: dict[tuple[ConversationId, str, Channel], int] = {}
    for j in jobs:
        thread = (j.conversation_id, j.recipient, j.channel)
        threads[thread] = max(j.seq, threads.get(thread, j.seq))
    present = {j.key for j in jobs}
    async with p.uow() as uow:
        waiting = [dl for dl in await uow.messages.unsent_before(threads, limit=limit) if dl.key not in present]
        if not waiting:
            return []
        messages = list((await uow.messages.get_many(list({dl.message_id for dl in waiting}))).values())
        missing = await jobs_for(uow, messages, [dl.key for dl in waiting], at=at)
        await uow.commit()
    return sorted(missing, key=lambda j: j.seq)


def _copy_of(first: JobResult, job: DeliveryJob) -> JobResult:
    """The result of a repeated job: what was done for its first copy, without doing it again."""
    done = first.outcome in (Outcome.HANDED_OVER, Outcome.RECOVERED, Outcome.ALREADY_SENT)
    outcome = Outcome.ALREADY_SENT if done else first.outcome
    return JobResult(job, outcome, platform_message_id=first.platform_message_id, error=first.error)


async def _record(p: PipelineDeps, results: Sequence[JobResult]) -> None:
    handed = (Outcome.HANDED_OVER, Outcome.RECOVERED)
    settled = [r for r in results if r.outcome in (*handed, Outcome.FAILED, Outcome.DEAD)]
    released = [r.job.key for r in results if r.claimed and r.outcome not in handed]
    if not settled and not released:
        return
    now = p.clock.now()
    async with p.uow() as uow:
        deliveries = {dl.key: dl for dl in await uow.messages.lock_deliveries([r.job.key for r in settled])}
        touched: list[Delivery] = []
        sends: list[tuple[Delivery, str]] = []
        jobs: dict[DeliveryKey, DeliveryJob] = {}
        changed: list[tuple[DeliveryJob, Delivery]] = []
        for r in settled:
            dl = deliveries.get(r.job.key)
            if dl is None:
                continue  # the message is gone (deleted); nothing to record
            if r.outcome in handed:
                assert r.platform_message_id is not None
                sends.append((dl, r.platform_message_id))
                jobs[dl.key] = r.job
            else:
                reason = r.error if r.outcome is Outcome.FAILED else f"gave up after {r.attempts} attempts: {r.error}"
                if dl.advance(DeliveryStatus.FAILED, at=now, error=reason):
                    touched.append(dl)
                    changed.append((r.job, dl))
        completed = await _complete_sends(uow, sends, at=now)
        touched.extend(completed.touched)
        changed.extend((jobs[dl.key], dl) for dl in completed.changed)
        await uow.bindings.bind(_latest_per_address([r.job for r in settled if r.outcome in handed]), at=now)
        await uow.sends.release(released)
        await uow.messages.save_progress(_each_once([*touched, *(dl for _, dl in changed)]))
        for job, dl in changed:
            await emit_status(uow.outbox, job.conversation_id, job.sender, [dl])
        await uow.commit()


@attrs.frozen
class _Completed:
    """What recording the platform's acceptance of some sends did."""

    claimed_at: Mapping[DeliveryKey, datetime]
    """The sends whose ledger entries this completed, with their claim times."""
    touched: list[Delivery]
    """Deliveries whose history now tells the hand-over."""
    changed: list[Delivery]
    """Deliveries that receipts or watermarks kept for them moved on (each once)."""


async def _complete_sends(uow: UnitOfWork, sends: Sequence[tuple[Delivery, str]], *, at: datetime) -> _Completed:
    """Record that the platform accepted these (locked) deliveries under these ids, and what follows from it.

    The channel worker that sent them records them, or the status worker that got the platform's
    echo of them first (its worker may have died before recording): whichever completes a ledger
    entry tells the hand-over in the delivery's history, once. Receipts and watermarks that outran
    the entry apply now: a watermark covers the send if it was claimed by the watermark's time.
    """
    unique: dict[DeliveryKey, tuple[Delivery, str]] = {}
    for dl, platform_id in sends:
        unique.setdefault(dl.key, (dl, platform_id))
    claimed_at = await uow.sends.record([(key, pid) for key, (_, pid) in unique.items()], at=at)
    touched = []
    for key, (dl, platform_id) in unique.items():
        if key in claimed_at:
            dl.record_handoff(platform_id, at=at)
            touched.append(dl)
    changed: dict[DeliveryKey, Delivery] = {}
    for channel in {dl.channel for dl, _ in unique.values()}:
        mine = {pid: dl for dl, pid in unique.values() if dl.channel is channel}
        for early in await uow.early_receipts.take(channel, list(mine)):
            dl = mine[early.platform_message_id]
            if dl.advance(early.status, at=early.at, error=early.error):
                changed[dl.key] = dl
        claims = {dl.key: claimed_at[dl.key] for dl in mine.values() if dl.key in claimed_at}
        for key, watermark in await uow.early_watermarks.covering(channel, claims) if claims else ():
            dl = unique[key][0]
            if dl.advance(watermark.status, at=watermark.at):
                changed[key] = dl
    return _Completed(claimed_at, touched, list(changed.values()))


def _each_once(deliveries: Iterable[Delivery]) -> list[Delivery]:
    return list({dl.key: dl for dl in deliveries}.values())


def _latest_per_address(jobs: Iterable[DeliveryJob]) -> dict[ChannelAddress, ConversationId]:
    """Each address's conversation that last sent to it: where the platform user's replies go."""
    latest: dict[ChannelAddress, DeliveryJob] = {}
    for job in jobs:
        current = latest.get(job.to)
        if current is None or (job.created_at, job.seq) > (current.created_at, current.seq):
            latest[job.to] = job
    return {address: job.conversation_id for address, job in latest.items()}


def _dead_letter(r: JobResult, *, at: datetime) -> Event:
    job = r.job.to_event()
    return Event(
        topics.DEAD_LETTERS,
        job.key,
        {
            "type": "delivery.dead",
            "topic": job.topic,
            "job": dict(job.payload),
            "error": r.error,
            "attempts": r.attempts,
            "at": at.isoformat(),
        },
    )


# --- receipts ------------------------------------------------------------------------


@attrs.frozen
class Receipt:
    """A platform (or a Chat4All client) reporting a delivery's progress.

    A SENT receipt naming both the delivery and the platform's id is a *sent confirmation*: the
    platform's echo of a send of ours, carrying the delivery key the connector attached (WhatsApp's
    ``biz_opaque_callback_data``, Messenger's and Instagram's ``metadata``). It completes the send's
    ledger entry if its worker has not, which settles a send in doubt without sending it again.
    """

    channel: Channel
    status: DeliveryStatus
    at: datetime
    platform_message_id: str | None = None
    delivery: DeliveryKey | None = None
    """Set when the reporter knows the delivery itself (Chat4All clients, connectors, echoes of our sends)."""
    error: str | None = None

    @property
    def confirms_send(self) -> bool:
        """True for the platform's word that it accepted the send of ``delivery`` as ``platform_message_id``."""
        return self.status is DeliveryStatus.SENT and self.delivery is not None and bool(self.platform_message_id)

    def to_event(self, key: str) -> Event:
        body: dict[str, Any] = {
            "type": "delivery.receipt",
            "channel": self.channel.value,
            "status": self.status.value,
            "at": self.at.isoformat(),
        }
        if self.platform_message_id is not None:
            body["platform_message_id"] = self.platform_message_id
        if self.delivery is not None:
            message_id, recipient, channel = self.delivery
            body["delivery"] = {"message_id": str(message_id), "recipient": recipient, "channel": channel.value}
        if self.error is not None:
            body["error"] = self.error
        return Event(topics.RECEIPTS, key, body)

    @classmethod
    def from_event(cls, event: Mapping[str, Any]) -> Receipt:
        """Parse a receipt event.

        Raises:
            ValueError: the event is not a well-formed receipt.
        """
        try:
            delivery = event.get("delivery")
            key: DeliveryKey | None = None
            if delivery is not None:
                key = (
                    MessageId(UUID(str(delivery["message_id"]))),
                    str(delivery["recipient"]),
                    Channel(delivery["channel"]),
                )
            platform_id = event.get("platform_message_id")
            if key is None and not platform_id:
                raise ValueError("a receipt names its delivery or its platform message id")
            return cls(
                channel=Channel(event["channel"]),
                status=DeliveryStatus(event["status"]),
                at=datetime.fromisoformat(str(event["at"])),
                platform_message_id=None if platform_id is None else str(platform_id),
                delivery=key,
                error=None if event.get("error") is None else str(event["error"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a receipt: {exc}") from exc


@attrs.frozen(kw_only=True)
class Watermark:
    """A platform's "everything sent to ``reader`` up to ``up_to`` is ``status``" (Messenger's receipts)."""

    channel: Channel
    reader: ChannelAddress
    status: DeliveryStatus
    up_to: datetime
    at: datetime

    def to_event(self) -> Event:
        return Event(
            topics.RECEIPTS,
            str(self.reader),
            {
                "type": "delivery.watermark",
                "channel": self.channel.value,
                "reader": str(self.reader),
                "status": self.status.value,
                "up_to": self.up_to.isoformat(),
                "at": self.at.isoformat(),
            },
        )

    @classmethod
    def from_event(cls, event: Mapping[str, Any]) -> Watermark:
        """Parse a watermark event.

        Raises:
            ValueError: the event is not a well-formed watermark.
        """
        try:
            return cls(
                channel=Channel(event["channel"]),
                reader=ChannelAddress.parse(str(event["reader"])),
                status=DeliveryStatus(event["status"]),
                up_to=datetime.fromisoformat(str(event["up_to"])),
                at=datetime.fromisoformat(str(event["at"])),
            )
        except (KeyError, TypeError, ValueError, BusinessRuleViolation) as exc:
            raise ValueError(f"not a watermark: {exc}") from exc


async def apply_receipts(d: PipelineDeps, receipts: Sequence[Receipt | Watermark]) -> int:
    """Move deliveries forward as the receipts say, in order; return how many changed.

    Late, repeated and unknown receipts change nothing. A watermark stands for a receipt of each
    recorded send it covers, and is kept for the claims it covers whose answer is not recorded yet.
    Sent confirmations complete the ledger first. Each change is kept in the history and announced
    as a ``message.status`` event.
    """
    if not receipts:
        return 0
    async with d.uow() as uow:
        changed = await _apply(uow, receipts, at=d.clock.now())
        await uow.commit()  # the changes, or only the early receipts kept
    return changed


async def _apply(uow: UnitOfWork, given: Sequence[Receipt | Watermark], *, at: datetime) -> int:
    receipts = await _covered(uow, given, at=at)
    keys = await _deliveries_named(uow, receipts, at=at)
    wanted = list({k: None for k in keys if k is not None})
    deliveries = {dl.key: dl for dl in await uow.messages.lock_deliveries(wanted)}
    # After the keeps above: the receipts and watermarks of this batch that outran these sends apply too.
    confirmed = await _confirm_sends(uow, [r for r in receipts if r.confirms_send], deliveries, at=at)
    changed: dict[DeliveryKey, Delivery] = {dl.key: dl for dl in confirmed.changed}
    for wanted_key, r in zip(keys, receipts, strict=True):
        dl = deliveries.get(wanted_key) if wanted_key is not None else None
        if dl is not None and dl.channel is r.channel and dl.advance(r.status, at=r.at, error=r.error):
            changed[dl.key] = dl
    await uow.messages.save_progress(_each_once([*confirmed.touched, *changed.values()]))
    if not changed:
        return 0
    origins = await uow.messages.origins_of(list({k[0] for k in changed}))
    for dl in changed.values():
        origin = origins.get(dl.message_id)
        if origin is not None:
            await emit_status(uow.outbox, origin.conversation_id, origin.sender.key, [dl])
    return len(changed)


async def _confirm_sends(
    uow: UnitOfWork, confirmations: Sequence[Receipt], deliveries: Mapping[DeliveryKey, Delivery], *, at: datetime
) -> _Completed:
    """Complete the ledger entries of the sends the platform echoed, doing what their worker's record would have.

    The worker may have died between the send and its record: the next one finds the entry
    complete and sends nothing. The addresses are bound as of the claims, so that a later send's
    binding is never undone.
    """
    sends = [
        (dl, r.platform_message_id)
        for r in confirmations
        if r.delivery is not None
        and r.platform_message_id is not None
        and (dl := deliveries.get(r.delivery)) is not None
        and dl.channel is r.channel
    ]
    completed = await _complete_sends(uow, sends, at=at)
    if completed.claimed_at:
        origins = await uow.messages.origins_of(list({k[0] for k in completed.claimed_at}))
        addresses = await _addresses_of(uow, list(completed.claimed_at))
        latest: dict[ChannelAddress, tuple[datetime, ConversationId]] = {}
        for key, claimed_at in completed.claimed_at.items():
            origin, address = origins.get(key[0]), addresses.get(key)
            if origin is None or address is None:
                continue
            current = latest.get(address)
            if current is None or claimed_at >= current[0]:
                latest[address] = (claimed_at, origin.conversation_id)
        for address, (claimed_at, conversation_id) in latest.items():
            await uow.bindings.bind({address: conversation_id}, at=claimed_at)
    return completed


async def _deliveries_named(uow: UnitOfWork, receipts: Sequence[Receipt], *, at: datetime) -> list[DeliveryKey | None]:
    """The delivery each receipt is about, None when unknown.

    A platform id without a ledger entry may belong to a send whose answer is not recorded yet:
    its receipt is kept, and recording that id applies it.
    """
    keys: list[DeliveryKey | None] = [r.delivery for r in receipts]
    by_channel: dict[Channel, list[str]] = {}
    for r in receipts:
        if r.delivery is None and r.platform_message_id is not None:
            by_channel.setdefault(r.channel, []).append(r.platform_message_id)
    found: dict[tuple[Channel, str], DeliveryKey] = {}
    for channel, ids in by_channel.items():
        for platform_id, found_key in (await uow.sends.find(channel, ids)).items():
            found[(channel, platform_id)] = found_key
    early: list[EarlyReceipt] = []
    for i, r in enumerate(receipts):
        if keys[i] is None and r.platform_message_id is not None:
            keys[i] = found.get((r.channel, r.platform_message_id))
            if keys[i] is None:
                early.append(EarlyReceipt(r.channel, r.platform_message_id, r.status, r.at, r.error))
    await uow.early_receipts.keep(early, at=at)
    return keys


async def _covered(uow: UnitOfWork, receipts: Sequence[Receipt | Watermark], *, at: datetime) -> list[Receipt]:
    """``receipts`` with each watermark replaced by a receipt per recorded send it covers.

    A claim it covers whose answer is not recorded may be a send the platform never got (its worker
    died before sending it): the watermark is kept for it, and recording the send applies it then.
    """
    out: list[Receipt] = []
    early: list[EarlyWatermark] = []
    for r in receipts:
        if isinstance(r, Receipt):
            out.append(r)
            continue
        readers = [str(r.reader)]
        identity = await uow.identities.find_by_address(r.reader)
        if identity is not None:
            readers.append(Participant.user(identity.user_id).key)
        for key in await uow.sends.sent_up_to(r.channel, readers, up_to=r.up_to, below=r.status):
            out.append(Receipt(channel=r.channel, status=r.status, at=r.at, delivery=key))
        early.extend(
            EarlyWatermark(channel=r.channel, reader=reader, status=r.status, up_to=r.up_to, at=r.at)
            for reader in await uow.sends.unrecorded_up_to(r.channel, readers, up_to=r.up_to)
        )
    await uow.early_watermarks.keep(early, at=at)
    return out


# --- the sweeper ---------------------------------------------------------------------


async def _apply_known_early_receipts(d: PipelineDeps, *, limit: int) -> int:
    """Apply kept receipts whose send is recorded now (a keep that raced the record); return how many moved."""
    async with d.uow() as uow:
        taken = await uow.early_receipts.take_known(limit=limit)
        if not taken:
            return 0
        receipts = [Receipt(e.channel, e.status, e.at, delivery=key, error=e.error) for e, key in taken]
        changed = await _apply(uow, receipts, at=d.clock.now())
        await uow.commit()  # taken and applied together: nothing is lost in between
    return changed


async def _apply_known_early_watermarks(d: PipelineDeps, *, received_after: datetime, limit: int) -> int:
    """Apply kept watermarks to the recorded sends they cover (a keep that raced the record); return how many moved."""
    async with d.uow() as uow:
        known = await uow.early_watermarks.known(received_after=received_after, limit=limit)
        if not known:
            return 0
        receipts = [Receipt(w.channel, w.status, w.at, delivery=key) for key, w in known]
        changed = await _apply(uow, receipts, at=d.clock.now())
        await uow.commit()
    return changed


@attrs.frozen
class Swept:
    """What one sweep re-drove."""

    conversations: int
    jobs: int


async def sweep(
    d: PipelineDeps, *, deadline: timedelta, window: timedelta = timedelta(days=1), limit: int = 500
) -> Swept:
    """Re-drive what is stuck past ``deadline``: unrouted conversations and platform deliveries never handed over.

    This is what makes a lost event (a broker that lost its data, a dropped publish) end
    delivered anyway: the database knows what is still to do. Conversations idle for longer
    than ``window`` are not looked at (they were swept long ago).
    """
    cutoff = d.clock.now() - deadline
    async with d.uow() as uow:
        behind = await uow.routing.behind(active_after=cutoff - window, idle_since=cutoff, limit=limit)
        # Early receipts that never met their send were for messages someone else sent; early
        # watermarks have long been applied to the sends they waited for.
        await uow.early_receipts.purge(received_before=cutoff - window, limit=limit)
        await uow.early_watermarks.purge(received_before=cutoff - window, limit=limit)
        await uow.commit()
    await _apply_known_early_receipts(d, limit=limit)
    await _apply_known_early_watermarks(d, received_after=cutoff, limit=limit)
    routed = await route_conversations(d, behind) if behind else Routed(0, 0)
    async with d.uow() as uow:
        # Messages routed just now already had their jobs published.
        stuck = [
            dl
            for dl in await uow.messages.unsent(updated_before=cutoff, limit=limit)
            if dl.message_id not in routed.message_ids
        ]
        messages = list((await uow.messages.get_many(list({dl.message_id for dl in stuck}))).values())
        jobs = await jobs_for(uow, messages, [dl.key for dl in stuck], at=d.clock.now())
        await uow.commit()
    if jobs:
        await d.publisher.publish([j.to_event() for j in jobs])
    return Swept(conversations=len(behind), jobs=routed.jobs + len(jobs))


async def open_uploads(d: PipelineDeps) -> int:
    """How many upload sessions still take chunks (a gauge the sweeper samples as it expires abandoned ones)."""
    async with d.uow() as uow:
        return await uow.uploads.count_open()
