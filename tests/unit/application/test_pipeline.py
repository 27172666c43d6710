"""The pipeline's use cases on the in-memory adapters: relay, router, channel delivery, receipts, sweeper."""

from __future__ import annotations

import uuid
from datetime import timedelta

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.memory.limits import InMemoryRateLimiter
from application import commands as c
from application import topics
from application.errors import Unavailable
from application.limits import ChannelPace, Pacer
from application.pipeline import (
    ChannelDeps,
    CircuitBreaker,
    DeliveryJob,
    Outcome,
    PipelineDeps,
    Receipt,
    RetryPolicy,
    Swept,
    apply_receipts,
    deliver_jobs,
    relay_outbox,
    route_events,
    routing_targets,
    sweep,
)
from application.ports import ChannelError, EarlyReceipt, Rate
from domain.channels import Channel
from domain.deliveries import DeliveryStatus
from domain.ids import ConversationId
from tests.builders import Chat4All, FakeClock, FakePublisher, ScriptedConnector, a_chat4all

pytestmark = pytest.mark.unit


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def app(clock: FakeClock) -> Chat4All:
    return a_chat4all(clock=clock)


@pytest.fixture
def log() -> FakePublisher:
    return FakePublisher()


@pytest.fixture
def deps(app: Chat4All, log: FakePublisher) -> PipelineDeps:
    return PipelineDeps(uow=app.store.uow, clock=app.clock, publisher=log)


@pytest.fixture
async def pair(app: Chat4All) -> ConversationId:
    """ana and bruno; bruno is also on telegram."""
    await app.register_all("ana", "bruno")
    await app.link("bruno", "telegram", "4242")
    return await app.start("ana", "bruno")


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def channel_deps(
    deps: PipelineDeps, connector: ScriptedConnector, *, attempts: int = 3, threshold: int = 100
) -> ChannelDeps:
    return ChannelDeps(
        pipeline=deps,
        connector=connector,
        breaker=CircuitBreaker(deps.clock, threshold=threshold, reset_after=timedelta(seconds=10)),
        retry=RetryPolicy(max_attempts=attempts, base_delay=0.1, max_delay=5.0),
        sleep=Sleeps(),
    )


async def routed_jobs(deps: PipelineDeps, log: FakePublisher) -> list[DeliveryJob]:
    """Relay the outbox, route what it published, and return the telegram jobs (queued at acceptance or routed)."""
    while await relay_outbox(deps):
        pass
    await route_events(deps, log.on(topics.MESSAGES))
    return [DeliveryJob.from_event(e) for e in log.on(topics.outbound(Channel.TELEGRAM))]


def statuses(app: Chat4All, channel: Channel = Channel.TELEGRAM) -> list[DeliveryStatus]:
    return [
        dl.status
        for _, dls in sorted(app.store.state.deliveries.items(), key=lambda kv: app.store.state.messages[kv[0]].seq)
        for dl in dls
        if dl.channel is channel
    ]


# --- relay ---------------------------------------------------------------------------


async def test_the_relay_publishes_committed_events_once_in_order(
    app: Chat4All, pair: ConversationId, deps: PipelineDeps, log: FakePublisher
) -> None:
    for i in range(3):
        await app.send("ana", pair, f"m{i}")

    assert await relay_outbox(deps, limit=4) == 4
    assert await relay_outbox(deps, limit=4) == 3
    assert await relay_outbox(deps) == 0

    telegram = topics.outbound(Channel.TELEGRAM)
    started, *sent = log.events
    assert (started.topic, started.key, started.payload["type"]) == (topics.ACTIVITY, str(pair), "conversation.created")
    assert [(e.topic, e.key, e.payload["seq"]) for e in sent] == [
        (topics.MESSAGES, str(pair), 1),
        (telegram, str(pair), 1),  # each message's job is queued with it (ADR 004)
        (topics.MESSAGES, str(pair), 2),
        (telegram, str(pair), 2),
        (topics.MESSAGES, str(pair), 3),
        (telegram, str(pair), 3),
    ]


async def test_a_relay_that_cannot_publish_leaves_the_events_for_the_next_attempt(
    app: Chat4All, pair: ConversationId, deps: PipelineDeps, log: FakePublisher
) -> None:
    await app.send("ana", pair)
    log.failing = True
    with pytest.raises(Unavailable):
        await relay_outbox(deps)

    log.failing = False
    assert await relay_outbox(deps) == 3  # the conversation's event, the message's and its telegram job
    assert len(log.on(topics.MESSAGES)) == 1


# --- router --------------------------------------------------------------------------
#
# Acceptance queues the jobs and marks the messages routed (ADR 004): the router is left for
# messages it finds behind (the sweeper's re-drive, data from before ADR 004). These tests make
# messages look that way.


def as_if_never_routed(app: Chat4All) -> None:
    """Forget that acceptance routed the messages: no queued jobs, no routing progress."""
    state = app.store.state
    state.outbox = [e for e in state.outbox if not e[0].startswith(topics.OUTBOUND_PREFIX)]
    state.routed.clear()


async def test_the_router_emits_a_job_per_platform_delivery_with_its_address(
    app: Chat4All, pair: ConversationId, deps: PipelineDeps, log: FakePublisher
) -> None:
    accepted = await app.send("ana", pair, "olá")

    (job,) = await routed_jobs(deps, log)

    assert job.message_id == accepted.message_id
    assert (job.channel, str(job.to), job.seq) == (Channel.TELEGRAM, "telegram:4242", 1)
    assert job.recipient == f"user:{app.users['bruno']}"
    assert job.sender == f"user:{app.users['ana']}"
    assert job.payload == {"type": "text", "text": "olá"}
    # internal deliveries need no job: Chat4All's own clients fetch or are pushed them
    assert [e.topic for e in log.events if e.topic.startswith(topics.OUTBOUND_PREFIX)] == [
        topics.outbound(Channel.TELEGRAM)
    ]
    assert log.events[-1].key == str(pair)


async def test_repeated_late_and_out_of_order_events_route_each_message_once_in_seq_order(
    app: Chat4All, pair: ConversationId, deps: PipelineDeps, log: FakePublisher
) -> None:
    for i in range(4):
        await app.send("ana", pair, f"m{i}")
    as_if_never_routed(app)
    events = [{"type": "message.created", "conversation_id": str(pair), "seq": s} for s in (2, 2, 1)]

    first = await route_events(deps, events)  # up to seq 2, whatever the order
    again = await route_events(deps, events)
    rest = await route_events(deps, [{"type": "message.created", "conversation_id": str(pair), "seq": 4}])

    assert (first.messages, again.messages, rest.messages) == (2, 0, 2)
    jobs = [DeliveryJob.from_event(e) for e in log.on(topics.outbound(Channel.TELEGRAM))]
    assert [j.seq for j in jobs] == [1, 2, 3, 4]


async def test_routing_ignores_what_is_not_a_message_event() -> None:
    conv = ConversationId(uuid.uuid4())
    targets = routing_targets(
        [
            {"type": "message.status", "conversation_id": str(conv), "seq": 9},
            {"type": "message.created", "conversation_id": "not a uuid", "seq": 1},
            {"type": "message.created", "conversation_id": str(conv)},
            {"type": "message.created", "conversation_id": str(conv), "seq": 3},
            {"type": "message.created", "conversation_id": str(conv), "seq": 2},
        ]
    )
    assert targets == {conv: 3}


async def test_a_job_carries_the_address_the_recipient_had_when_the_message_was_accepted(
    app: Chat4All, pair: ConversationId, deps: PipelineDeps, log: FakePublisher
) -> None:
    await app.send("ana", pair)
    await app.handle(c.UnlinkIdentity(app.users["bruno"], "telegram"))

    (job,) = await routed_jobs(deps, log)

    assert str(job.to) == "telegram:4242"


async def test_a_recipient_who_unlinked_the_channel_before_routing_gets_a_failed_delivery(
    app: Chat4All, pair: ConversationId, deps: PipelineDeps, log: FakePublisher
) -> None:
    accepted = await app.send("ana", pair)
    as_if_never_routed(app)
    await app.handle(c.UnlinkIdentity(app.users["bruno"], "telegram"))

    assert await routed_jobs(deps, log) == []

    status = await app.status("ana", accepted.message_id)
    (telegram,) = [d for d in status.deliveries if d.channel == "telegram"]
    assert (telegram.status, telegram.error) == ("FAILED", "the recipient has no telegram identity")
    assert any(e["status"] == "FAILED" for e in app.events(topics.STATUS))


# --- channel workers -----------------------------------------------------------------


async def test_a_job_is_handed_over_once_and_the_hand_over_is_kept_as_history(
    app: Chat4All, pair: ConversationId, deps: PipelineDeps, log: FakePublisher
) -> None:
    accepted = await app.send("ana", pair, "olá")
    jobs = await routed_jobs(deps, log)
    telegram = ScriptedConnector()

    (first,) = await deliver_jobs(channel_deps(deps, telegram), jobs)
    (second,) = await deliver_jobs(channel_deps(deps, telegram), jobs)  # redelivered by the log

    assert (first.outcome, first.platform_message_id) == (Outcome.HANDED_OVER, "telegram-1")
    assert (second.outcome, second.platform_message_id) == (Outcome.ALREADY_SENT, "telegram-1")
    assert telegram.calls == 1
    assert str(telegram.accepted[0].to) == "telegram:4242"
    status = await app.status("ana", accepted.message_id)
    history = [(h.channel, h.status, h.detail) for h in status.history if h.channel == "telegram"]
    assert history == [("telegram", "SENT", None), ("telegram", "SENT", "telegram accepted it as telegram-1")]


async def test_transient_errors_are_retried_with_backoff_honouring_retry_after(
    app: Chat4All, pair: ConversationId, deps: PipelineDeps, log: FakePublisher
) -> None:
    await app.send("ana", pair)
    jobs = await routed_jobs(deps, log)
    telegram = ScriptedConnector(Channel.TELEGRAM, ChannelError("503"), ChannelError("429", retry_after=3.0))
    cd = channel_deps(deps, telegram, attempts=5)

    (result,) = await deliver_jobs(cd, jobs)

    assert (result.outcome, result.attempts) == (Outcome.HANDED_OVER, 3)
    assert isinstance(cd.sleep, Sleeps)
    first, second = cd.sleep.delays
    assert 0 <= first <= 0.1
    assert second == 3.0  # the platform's retry-after wins over a shorter backoff


async def test_a_permanent_error_fails_the_delivery_with_the_platforms_reason(
    app: Chat4All, pair: ConversationId, deps: PipelineDeps, log: FakePublisher
) -> None:
    accepted = await app.send("ana", pair)
    jobs = await routed_jobs(deps, log)
    telegram = ScriptedConnector(Channel.TELEGRAM, ChannelError("bot was blocked by the user", permanent=True))

    (result,) = await deliver_jobs(channel_deps(deps, telegram), jobs)

    assert result.outcome is Outcome.FAILED
    status = await app.status("ana", accepted.message_id)
    (failed,) = [d for d in status.deliveries if d.channel == "telegram"]
    assert (failed.status, failed.error) == ("FAILED", "bot was blocked by the user")
    assert log.on(topics.DEAD_LETTERS) == []

    # Read again (a rebalance, or the sweeper or relay published it twice), the refused job is not sent again.
    (again,) = await deliver_jobs(channel_deps(deps, telegram), jobs)
    assert again.outcome is Outcome.DISCARDED
    assert telegram.calls == 1


async def test_a_job_that_exhausts_its_attempts_goes_to_the_dead_letter_topic(
    app: Chat4All, pair: ConversationId, deps: PipelineDeps, log: FakePublisher
) -> None:
    accepted = await app.send("ana", pair)
    jobs = await routed_jobs(deps, log)
    telegram = ScriptedConnector(Channel.TELEGRAM, *[ChannelError("timeout")] * 3)

    (result,) = await deliver_jobs(channel_deps(deps, telegram, attempts=3), jobs)

    assert (result.outcome, result.attempts) == (Outcome.DEAD, 3)
    (dead,) = log.on(topics.DEAD_LETTERS)
    assert dead["job"]["message_id"] == str(accepted.message_id)
    assert (dead["topic"], dead["attempts"], dead["error"]) == (topics.outbound(Channel.TELEGRAM), 3, "timeout")
    assert statuses(app) == [DeliveryStatus.FAILED]


async def test_an_open_circuit_defers_jobs_and_a_probe_after_the_pause_closes_it(
    app: Chat4All, pair: ConversationId, deps: PipelineDeps, log: FakePublisher, clock: FakeClock
) -> None:
    for i in range(3):
        await app.send("ana", pair, f"m{i}")
    jobs = await routed_jobs(deps, log)
    telegram = ScriptedConnector(Channel.TELEGRAM, ChannelError("down"), ChannelError("down"))
    cd = channel_deps(deps, telegram, attempts=10, threshold=2)

    results = await deliver_jobs(cd, jobs)

    # Two failures open the circuit: the first job and, to keep the order, the ones after it wait.
    assert [r.outcome for r in results] == [Outcome.DEFERRED] * 3
    assert cd.breaker.state == "open"
    assert statuses(app) == [DeliveryStatus.SENT] * 3
    still_open = await deliver_jobs(cd, jobs)
    assert [(r.outcome, r.attempts) for r in still_open] == [(Outcome.DEFERRED, 0)] * 3  # nothing is even tried
    assert telegram.calls == 2

    clock.advance(timedelta(seconds=10))
    later = await deliver_jobs(cd, jobs)

    assert [r.outcome for r in later] == [Outcome.HANDED_OVER] * 3
    assert [m.seq for m in telegram.accepted] == [1, 2, 3]
    assert cd.breaker.state == "closed"


async def test_the_platforms_pace_holds_sends_back_waiting_briefly_and_deferring_beyond_that(
    app: Chat4All, pair: ConversationId, deps: PipelineDeps, log: FakePublisher
) -> None:
    for i in range(4):
        await app.send("ana", pair, f"m{i}")
    jobs = await routed_jobs(deps, log)
    telegram = ScriptedConnector()
    ticks = [0.0]
    pace = ChannelPace(per_recipient=Rate(per_second=1, burst=2))
    cd = attrs.evolve(
        channel_deps(deps, telegram),
        pacer=Pacer(InMemoryRateLimiter(lambda: ticks[0]), Channel.TELEGRAM, pace, max_wait=1.0),
    )

    results = await deliver_jobs(cd, jobs)

    # Two at once (the burst), the third after waiting its slot, the fourth would wait too long: it and the
    # ones after it wait for a later batch, in order.
    assert [r.outcome for r in results] == [Outcome.HANDED_OVER] * 3 + [Outcome.DEFERRED]
    assert results[3].retry_in == pytest.approx(2.0)
    assert cd.sleep.delays == [1.0]  # type: ignore[attr-defined]
    assert [m.seq for m in telegram.accepted] == [1, 2, 3]
    ticks[0] += 3
    later = await deliver_jobs(cd, jobs)
    assert [r.outcome for r in later] == [Outcome.ALREADY_SENT] * 3 + [Outcome.HANDED_OVER]
    assert [m.seq for m in telegram.accepted] == [1, 2, 3, 4]


async def test_each_conversation_is_sent_in_seq_order(
    app: Chat4All, pair: ConversationId, deps: PipelineDeps, log: FakePublisher
) -> None:
    for i in range(5):
        await app.send("ana", pair, f"m{i}")
    jobs = await routed_jobs(deps, log)
    telegram = ScriptedConnector()

    await deliver_jobs(channel_deps(deps, telegram), list(reversed(jobs)))

    assert [m.seq for m in telegram.accepted] == [1, 2, 3, 4, 5]


# --- receipts ------------------------------------------------------------------------


async def handed_over(app: Chat4All, pair: ConversationId, deps: PipelineDeps, log: FakePublisher) -> str:
    await app.send("ana", pair)
    (result,) = await deliver_jobs(channel_deps(deps, ScriptedConnector()), await routed_jobs(deps, log))
    assert result.platform_message_id is not None
    return result.platform_message_id


async def test_receipts_move_the_delivery_forward_and_are_announced(
    app: Chat4All, pair: ConversationId, deps: PipelineDeps, log: FakePublisher, clock: FakeClock
) -> None:
    platform_id = await handed_over(app, pair, deps, log)
    at = clock.advance()

    changed = await apply_receipts(
        deps, [Receipt(Channel.TELEGRAM, DeliveryStatus.DELIVERED, at, platform_message_id=platform_id)]
    )

    assert changed == 1
    assert statuses(app) == [DeliveryStatus.DELIVERED]
    (event,) = [e for e in app.events(topics.STATUS) if e["channel"] == "telegram"]
    assert (event["status"], event["recipient"]) == ("DELIVERED", f"user:{app.users['bruno']}")


async def test_unknown_late_and_repeated_receipts_change_nothing(
    app: Chat4All, pair: ConversationId, deps: PipelineDeps, log: FakePublisher, clock: FakeClock
) -> None:
    platform_id = await handed_over(app, pair, deps, log)
    read = Receipt(Channel.TELEGRAM, DeliveryStatus.READ, clock.advance(), platform_message_id=platform_id)
    delivered = Receipt(Channel.TELEGRAM, DeliveryStatus.DELIVERED, clock.advance(), platform_message_id=platform_id)
    unknown = Receipt(Channel.TELEGRAM, DeliveryStatus.READ, clock.now(), platform_message_id="nobody-knows")
    other_channel = Receipt(Channel.WHATSAPP, DeliveryStatus.READ, clock.now(), platform_message_id=platform_id)

    assert await apply_receipts(deps, [read]) == 1
    assert await apply_receipts(deps, [delivered, read, unknown, other_channel]) == 0

    assert statuses(app) == [DeliveryStatus.READ]


RECEIPT_STATUSES = st.sampled_from([DeliveryStatus.DELIVERED, DeliveryStatus.READ, DeliveryStatus.FAILED])


@settings(max_examples=40, deadline=None)
@given(batches=st.lists(st.lists(RECEIPT_STATUSES, min_size=1, max_size=4), min_size=1, max_size=4))
async def test_receipts_in_any_order_and_batching_end_at_the_highest_status(
    batches: list[list[DeliveryStatus]],
) -> None:
    app = a_chat4all()
    log = FakePublisher()
    deps = PipelineDeps(uow=app.store.uow, clock=app.clock, publisher=log)
    await app.register_all("ana", "bruno")
    await app.link("bruno", "telegram", "4242")
    pair = await app.start("ana", "bruno")
    platform_id = await handed_over(app, pair, deps, log)

    for batch in batches:
        await apply_receipts(
            deps, [Receipt(Channel.TELEGRAM, s, app.clock.advance(), platform_message_id=platform_id) for s in batch]
        )

    rank = {DeliveryStatus.FAILED: 1, DeliveryStatus.DELIVERED: 2, DeliveryStatus.READ: 3}
    assert statuses(app) == [max((s for b in batches for s in b), key=rank.__getitem__)]


def test_receipts_round_trip_through_their_event_and_reject_nonsense(clock: FakeClock) -> None:
    r = Receipt(Channel.WHATSAPP, DeliveryStatus.READ, clock.now(), platform_message_id="wamid.1", error=None)
    assert Receipt.from_event(r.to_event("k").payload) == r
    for bad in ({}, {"channel": "whatsapp", "status": "READ", "at": clock.now().isoformat()}, {"channel": "fax"}):
        with pytest.raises(ValueError, match="not a receipt"):
            Receipt.from_event(bad)


# --- sweeper -------------------------------------------------------------------------


async def test_the_sweeper_routes_what_the_log_lost_and_re_drives_unsent_deliveries(
    app: Chat4All, pair: ConversationId, deps: PipelineDeps, log: FakePublisher, clock: FakeClock
) -> None:
    await app.send("ana", pair, "lost on the way")
    as_if_never_routed(app)  # its event never reaches the router, and its job never went out
    fresh = await sweep(deps, deadline=timedelta(minutes=1))
    clock.advance(timedelta(minutes=2))

    late = await sweep(deps, deadline=timedelta(minutes=1))

    assert (fresh.conversations, fresh.jobs) == (0, 0)
    assert (late.conversations, late.jobs) == (1, 1)
    (job,) = [DeliveryJob.from_event(e) for e in log.on(topics.outbound(Channel.TELEGRAM))]
    assert job.payload["text"] == "lost on the way"

    # The job is lost too (the broker restarted): the next sweep publishes it again...
    log.events.clear()
    clock.advance(timedelta(minutes=2))
    assert (await sweep(deps, deadline=timedelta(minutes=1))).jobs == 1
    # ...until a channel worker has handed it over.
    await deliver_jobs(channel_deps(deps, ScriptedConnector()), [DeliveryJob.from_event(log.events[0].payload)])
    clock.advance(timedelta(minutes=2))
    assert await sweep(deps, deadline=timedelta(minutes=1)) == Swept(0, 0)


# --- the circuit breaker -------------------------------------------------------------


def test_the_breaker_opens_after_consecutive_failures_and_lets_one_probe_through(clock: FakeClock) -> None:
    breaker = CircuitBreaker(clock, threshold=2, reset_after=timedelta(seconds=5))
    breaker.failed()
    breaker.succeeded()  # a success resets the count
    breaker.failed()
    assert breaker.allow()
    breaker.failed()
    assert (breaker.state, breaker.allow(), breaker.retry_in()) == ("open", False, 5.0)

    clock.advance(timedelta(seconds=5))
    assert breaker.state == "half-open"
    assert breaker.allow()
    assert not breaker.allow()  # one probe at a time
    breaker.failed()  # the probe failed: open again for a full pause
    assert (breaker.state, breaker.retry_in()) == ("open", 5.0)

    clock.advance(timedelta(seconds=5))
    assert breaker.allow()
    breaker.succeeded()
    assert (breaker.state, breaker.allow()) == ("closed", True)


@given(attempt=st.integers(1, 30), retry_after=st.none() | st.floats(0, 100))
def test_backoff_is_capped_and_never_shorter_than_the_platform_asked(attempt: int, retry_after: float | None) -> None:
    policy = RetryPolicy(base_delay=0.2, max_delay=30.0)
    delay = policy.delay(attempt, retry_after)
    assert 0 <= delay <= 30.0
    assert delay >= min(retry_after or 0.0, 30.0)


# --- claims: a worker that dies mid-send --------------------------------------------


async def claim_as_a_dead_worker(deps: PipelineDeps, jobs: list[DeliveryJob]) -> None:
    """What a worker leaves behind when it dies after claiming, before recording any outcome."""
    async with deps.uow() as uow:
        await uow.sends.claim([j.key for j in jobs], at=deps.clock.now())
        await uow.commit()


async def test_a_platform_that_already_has_the_message_is_not_sent_it_again(
    app: Chat4All, pair: ConversationId, deps: PipelineDeps, log: FakePublisher
) -> None:
    await app.send("ana", pair)
    jobs = await routed_jobs(deps, log)
    telegram = ScriptedConnector(lookup=True)
    telegram.accepted.append(jobs[0].outbound())  # the dead worker's send did reach the platform
    await claim_as_a_dead_worker(deps, jobs)

    (result,) = await deliver_jobs(channel_deps(deps, telegram), jobs)

    assert (result.outcome, result.platform_message_id) == (Outcome.RECOVERED, "telegram-1")
    assert telegram.calls == 0
    async with deps.uow() as uow:
        assert await uow.sends.sent([jobs[0].key]) == {jobs[0].key: "telegram-1"}


async def test_a_platform_that_never_got_the_message_is_sent_it(
    app: Chat4All, pair: ConversationId, deps: PipelineDeps, log: FakePublisher
) -> None:
    await app.send("ana", pair)
    jobs = await routed_jobs(deps, log)
    telegram = ScriptedConnector(lookup=True)
    await claim_as_a_dead_worker(deps, jobs)

    (result,) = await deliver_jobs(channel_deps(deps, telegram), jobs)

    assert result.outcome is Outcome.HANDED_OVER
    assert telegram.calls == 1


async def test_without_lookup_an_unfinished_claim_waits_out_its_lease_before_a_resend(
    app: Chat4All, pair: ConversationId, deps: PipelineDeps, log: FakePublisher, clock: FakeClock
) -> None:
    await app.send("ana", pair)
    jobs = await routed_jobs(deps, log)
    telegram = ScriptedConnector()  # cannot say what it has
    await claim_as_a_dead_worker(deps, jobs)
    cd = channel_deps(deps, telegram)

    (young,) = await deliver_jobs(cd, jobs)  # maybe another worker is sending it right now
    clock.advance(cd.claim_lease)
    (expired,) = await deliver_jobs(cd, jobs)

    assert young.outcome is Outcome.DEFERRED
    assert expired.outcome is Outcome.HANDED_OVER
    assert telegram.calls == 1


async def test_claims_of_jobs_not_handed_over_are_released(
    app: Chat4All, pair: ConversationId, deps: PipelineDeps, log: FakePublisher
) -> None:
    await app.send("ana", pair)
    jobs = await routed_jobs(deps, log)
    failing = ScriptedConnector(Channel.TELEGRAM, ChannelError("timeout"))

    (dead,) = await deliver_jobs(channel_deps(deps, failing, attempts=1), jobs)
    assert dead.outcome is Outcome.DEAD

    # Read again as it was, the dead job is not sent: its delivery FAILED.
    telegram = ScriptedConnector()
    (again,) = await deliver_jobs(channel_deps(deps, telegram), jobs)
    assert (again.outcome, telegram.calls) == (Outcome.DISCARDED, 0)

    # Replayed from the dead letters, the job is claimed afresh and sent (no lease to wait out).
    replay = [DeliveryJob.from_event({**job.to_event().payload, "replayed": True}) for job in jobs]
    (replayed,) = await deliver_jobs(channel_deps(deps, telegram), replay)
    assert replayed.outcome is Outcome.HANDED_OVER
    assert telegram.calls == 1
    assert replay[0].to_event().payload == {**jobs[0].to_event().payload, "replayed": True}


async def test_a_job_whose_delivery_is_gone_is_discarded(deps: PipelineDeps) -> None:
    job = DeliveryJob.from_event(
        {
            "message_id": str(uuid.uuid4()),
            "conversation_id": str(uuid.uuid4()),
            "seq": 1,
            "recipient": f"user:{uuid.uuid4()}",
            "channel": "telegram",
            "to": "telegram:1",
            "sender": f"user:{uuid.uuid4()}",
            "payload": {"type": "text", "text": "x"},
            "created_at": "2025-01-06T09:00:00+00:00",
        }
    )
    telegram = ScriptedConnector()

    (result,) = await deliver_jobs(channel_deps(deps, telegram), [job])

    assert result.outcome is Outcome.DISCARDED
    assert telegram.calls == 0


async def test_a_job_repeated_in_one_batch_is_sent_once(
    app: Chat4All, pair: ConversationId, deps: PipelineDeps, log: FakePublisher
) -> None:
    await app.send("ana", pair)
    (job,) = await routed_jobs(deps, log)
    telegram = ScriptedConnector()

    results = await deliver_jobs(channel_deps(deps, telegram), [job, job, job])

    assert [r.outcome for r in results] == [Outcome.HANDED_OVER, Outcome.ALREADY_SENT, Outcome.ALREADY_SENT]
    assert telegram.calls == 1


async def test_a_job_whose_predecessors_never_reached_the_platform_sends_them_first(
    app: Chat4All, pair: ConversationId, deps: PipelineDeps, log: FakePublisher
) -> None:
    for i in range(4):
        await app.send("ana", pair, f"m{i}")
    jobs = await routed_jobs(deps, log)  # seq 1-4; the jobs of 1-3 are lost (a broker restarted)
    telegram = ScriptedConnector()

    (result,) = await deliver_jobs(channel_deps(deps, telegram), [jobs[3]])

    assert result.outcome is Outcome.HANDED_OVER
    assert [m.seq for m in telegram.accepted] == [1, 2, 3, 4]
    assert statuses(app) == [DeliveryStatus.SENT] * 4  # handed over, awaiting receipts
    async with deps.uow() as uow:
        assert len(await uow.sends.sent([j.key for j in jobs])) == 4
    # ...and the lost jobs, should they turn up after all, send nothing more.
    later = await deliver_jobs(channel_deps(deps, telegram), jobs[:3])
    assert [r.outcome for r in later] == [Outcome.ALREADY_SENT] * 3
    assert telegram.calls == 4


async def test_a_lost_job_between_a_replayed_one_and_a_new_one_is_sent_before_the_new_one(
    app: Chat4All, pair: ConversationId, deps: PipelineDeps, log: FakePublisher
) -> None:
    """After a broker lost its log: the relay replays seq 1 (already sent), seq 2's job is lost, seq 3 is new."""
    for i in range(3):
        await app.send("ana", pair, f"m{i}")
    jobs = await routed_jobs(deps, log)
    telegram = ScriptedConnector()
    await deliver_jobs(channel_deps(deps, telegram), [jobs[0]])

    results = await deliver_jobs(channel_deps(deps, telegram), [jobs[0], jobs[2]])

    assert [m.seq for m in telegram.accepted] == [1, 2, 3]  # 2 rebuilt and sent before 3, 1 not again
    assert [r.outcome for r in results] == [Outcome.ALREADY_SENT, Outcome.HANDED_OVER]


async def test_a_platform_going_down_defers_its_jobs_instead_of_dead_lettering_them(
    app: Chat4All, pair: ConversationId, deps: PipelineDeps, log: FakePublisher
) -> None:
    await app.send("ana", pair)
    jobs = await routed_jobs(deps, log)
    telegram = ScriptedConnector(Channel.TELEGRAM, *[ChannelError("down")] * 3)

    (result,) = await deliver_jobs(channel_deps(deps, telegram, attempts=3, threshold=3), jobs)

    assert (result.outcome, result.attempts) == (Outcome.DEFERRED, 3)
    assert log.on(topics.DEAD_LETTERS) == []
    assert statuses(app) == [DeliveryStatus.SENT]


async def test_a_receipt_that_outruns_the_senders_record_is_applied_when_the_record_is_written(
    app: Chat4All, pair: ConversationId, deps: PipelineDeps, log: FakePublisher, clock: FakeClock
) -> None:
    await app.send("ana", pair)
    jobs = await routed_jobs(deps, log)
    early = Receipt(Channel.TELEGRAM, DeliveryStatus.READ, clock.advance(), platform_message_id="telegram-1")

    # The platform reports the message before the channel worker has recorded what the platform said.
    assert await apply_receipts(deps, [early]) == 0
    (result,) = await deliver_jobs(channel_deps(deps, ScriptedConnector()), jobs)

    assert result.platform_message_id == "telegram-1"
    assert statuses(app) == [DeliveryStatus.READ]
    (event,) = [e for e in app.events(topics.STATUS) if e["channel"] == "telegram"]
    assert event["status"] == "READ"
    assert await apply_receipts(deps, [early]) == 0  # a late copy changes nothing


async def test_a_receipt_kept_just_as_its_send_was_recorded_is_applied_by_the_sweeper(
    app: Chat4All, pair: ConversationId, deps: PipelineDeps, log: FakePublisher, clock: FakeClock
) -> None:
    platform_id = await handed_over(app, pair, deps, log)
    # The race: the status worker missed the ledger entry, the channel worker missed the kept receipt.
    async with app.store.uow() as uow:
        await uow.early_receipts.keep(
            [EarlyReceipt(Channel.TELEGRAM, platform_id, DeliveryStatus.DELIVERED, clock.advance())], at=clock.now()
        )
        await uow.commit()

    await sweep(deps, deadline=timedelta(minutes=5))

    assert statuses(app) == [DeliveryStatus.DELIVERED]
    assert app.store.state.early_receipts == {}
