"""Sends in doubt (a channel worker died between its claims and its record) on the in-memory adapters.

A platform that echoes our sends (WhatsApp's statuses, Messenger's and Instagram's message echoes)
settles them: what it echoed is not sent again, what it did not echo within the grace never reached
it and is sent once. Watermarks only cover sends the platform had: a claim without a recorded answer
keeps the watermark waiting until the send is recorded, and a send made after the watermark is not
covered by it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timedelta

import pytest

from adapters.memory.unit_of_work import InMemorySendLedger
from application import pipeline, topics
from application.pipeline import (
    ChannelDeps,
    CircuitBreaker,
    DeliveryJob,
    JobResult,
    Outcome,
    PipelineDeps,
    Receipt,
    RetryPolicy,
    Watermark,
    apply_receipts,
    deliver_jobs,
    relay_outbox,
    route_events,
    sweep,
)
from application.ports import DeliveryKey, EarlyWatermark, OutboundMessage, SendClaim
from domain.channels import Channel, ChannelAddress
from domain.deliveries import DeliveryStatus, StatusChange
from domain.ids import ConversationId
from tests.builders import Chat4All, FakeClock, FakePublisher, ScriptedConnector, a_chat4all

pytestmark = pytest.mark.unit

BRUNO_TELEGRAM = ChannelAddress.parse("telegram:4242")
BIA_MESSENGER = ChannelAddress.parse("messenger:1234")


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
    """ana and bruno; bruno is on telegram (a platform that echoes, in these tests)."""
    await app.register_all("ana", "bruno", "bia")
    await app.link("bruno", "telegram", "4242")
    await app.link("bia", "messenger", "1234")
    return await app.start("ana", "bruno")


@pytest.fixture
async def with_bia(app: Chat4All, pair: ConversationId) -> ConversationId:
    """ana and bia; bia is on messenger, whose receipts are watermarks."""
    return await app.start("ana", "bia")


def channel_deps(deps: PipelineDeps, connector: ScriptedConnector) -> ChannelDeps:
    async def no_sleep(_: float) -> None:
        return None

    return ChannelDeps(
        pipeline=deps,
        connector=connector,
        breaker=CircuitBreaker(deps.clock, threshold=100),
        retry=RetryPolicy(max_attempts=1),
        sleep=no_sleep,
    )


async def routed(deps: PipelineDeps, log: FakePublisher, channel: Channel = Channel.TELEGRAM) -> list[DeliveryJob]:
    """Relay and route what was sent; the channel's jobs not seen before, in seq order."""
    while await relay_outbox(deps):
        pass
    await route_events(deps, log.on(topics.MESSAGES))
    log.events = [e for e in log.events if e.topic != topics.MESSAGES]
    jobs = [DeliveryJob.from_event(e) for e in log.on(topics.outbound(channel))]
    log.events = [e for e in log.events if e.topic != topics.outbound(channel)]
    return sorted({j.key: j for j in jobs}.values(), key=lambda j: j.seq)


async def claim_as_a_dead_worker(deps: PipelineDeps, jobs: Sequence[DeliveryJob]) -> None:
    """What a worker leaves behind when it dies after claiming, before recording any outcome."""
    async with deps.uow() as uow:
        await uow.sends.claim([j.key for j in jobs], at=deps.clock.now())
        await uow.commit()


def echo_of(job: DeliveryJob, platform_id: str, at: datetime) -> Receipt:
    """The platform's echo of a send of ``job``: the delivery key the connector attached, with its id."""
    return Receipt(job.channel, DeliveryStatus.SENT, at, platform_message_id=platform_id, delivery=job.key)


def statuses(app: Chat4All, channel: Channel) -> list[DeliveryStatus]:
    return [h[-1].status for h in histories(app, channel)]


def histories(app: Chat4All, channel: Channel) -> list[list[StatusChange]]:
    """Each delivery's history on ``channel``, in seq order."""
    state = app.store.state
    return [
        dl.history
        for _, dls in sorted(state.deliveries.items(), key=lambda kv: state.messages[kv[0]].seq)
        for dl in dls
        if dl.channel is channel
    ]


def handoffs(history: list[StatusChange]) -> list[str | None]:
    return [h.detail for h in history if h.detail and "accepted it as" in h.detail]


async def ledger(deps: PipelineDeps, job: DeliveryJob) -> str | None:
    async with deps.uow() as uow:
        return (await uow.sends.sent([job.key])).get(job.key)


# --- echoes settle sends in doubt ------------------------------------------------------------------


async def test_a_send_in_doubt_that_the_platform_echoed_is_not_sent_again(
    app: Chat4All, pair: ConversationId, deps: PipelineDeps, log: FakePublisher, clock: FakeClock
) -> None:
    await app.send("ana", pair)
    (job,) = await routed(deps, log)
    await claim_as_a_dead_worker(deps, [job])  # it sent the message, and died before recording the answer
    platform = ScriptedConnector(echoes=True)

    # The platform's echo of that send reaches the status worker...
    assert await apply_receipts(deps, [echo_of(job, "telegram-9", clock.advance())]) == 0
    clock.advance(timedelta(seconds=20))
    # ...so the next worker finds the send recorded.
    (result,) = await deliver_jobs(channel_deps(deps, platform), [job])

    assert result.outcome is Outcome.ALREADY_SENT
    assert platform.calls == 0
    assert await ledger(deps, job) == "telegram-9"
    [history] = histories(app, Channel.TELEGRAM)
    assert handoffs(history) == ["telegram accepted it as telegram-9"]  # what the dead worker's record would say
    assert app.store.state.bindings[BRUNO_TELEGRAM][0] == pair  # bruno's replies go to the conversation


async def test_an_echo_recorded_while_the_next_worker_looks_settles_the_send_as_recovered(
    app: Chat4All,
    pair: ConversationId,
    deps: PipelineDeps,
    log: FakePublisher,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await app.send("ana", pair)
    (job,) = await routed(deps, log)
    await claim_as_a_dead_worker(deps, [job])
    clock.advance(timedelta(seconds=20))
    claim = InMemorySendLedger.claim

    async def claim_then_echo(
        self: InMemorySendLedger, keys: Sequence[DeliveryKey], *, at: datetime, reopen: Collection[DeliveryKey] = ()
    ) -> Mapping[DeliveryKey, SendClaim]:
        claims = await claim(self, keys, at=at, reopen=reopen)
        self.s.sends[job.key] = ("telegram-9", self.s.sends[job.key][1])  # the echo's record lands just after
        return claims

    monkeypatch.setattr(InMemorySendLedger, "claim", claim_then_echo)
    platform = ScriptedConnector(echoes=True)

    (result,) = await deliver_jobs(channel_deps(deps, platform), [job])

    assert (result.outcome, result.platform_message_id) == (Outcome.RECOVERED, "telegram-9")
    assert platform.calls == 0


async def test_a_send_in_doubt_not_echoed_within_the_grace_is_sent_once(
    app: Chat4All, pair: ConversationId, deps: PipelineDeps, log: FakePublisher, clock: FakeClock
) -> None:
    await app.send("ana", pair)
    (job,) = await routed(deps, log)
    await claim_as_a_dead_worker(deps, [job])  # it died before sending
    platform = ScriptedConnector(echoes=True)
    cd = channel_deps(deps, platform)

    clock.advance(timedelta(seconds=4))
    (waiting,) = await deliver_jobs(cd, [job])  # the echo may still be on its way
    clock.advance(cd.echo_grace - timedelta(seconds=4))
    (sent,) = await deliver_jobs(cd, [job])  # it was not: the platform never got the message
    (again,) = await deliver_jobs(cd, [job])

    assert (waiting.outcome, waiting.retry_in) == (Outcome.DEFERRED, 6.0)
    assert sent.outcome is Outcome.HANDED_OVER
    assert again.outcome is Outcome.ALREADY_SENT
    assert platform.calls == 1
    assert cd.echo_grace < cd.claim_lease  # much sooner than a platform without echoes


async def test_without_echoes_a_send_in_doubt_still_waits_out_the_lease(
    app: Chat4All, pair: ConversationId, deps: PipelineDeps, log: FakePublisher, clock: FakeClock
) -> None:
    await app.send("ana", pair)
    (job,) = await routed(deps, log)
    await claim_as_a_dead_worker(deps, [job])
    platform = ScriptedConnector()  # Telegram: no lookup, no echo
    cd = channel_deps(deps, platform)

    clock.advance(cd.echo_grace)
    (waiting,) = await deliver_jobs(cd, [job])
    clock.advance(cd.claim_lease - cd.echo_grace)
    (sent,) = await deliver_jobs(cd, [job])

    assert waiting.outcome is Outcome.DEFERRED
    assert sent.outcome is Outcome.HANDED_OVER  # at least once: it may have reached the chat before
    assert platform.calls == 1


async def test_two_workers_that_find_the_same_send_in_doubt_send_it_once(
    app: Chat4All,
    pair: ConversationId,
    deps: PipelineDeps,
    log: FakePublisher,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await app.send("ana", pair)
    (job,) = await routed(deps, log)
    await claim_as_a_dead_worker(deps, [job])
    clock.advance(timedelta(seconds=20))
    doubt = pipeline._doubt

    async def slow_doubt(d: ChannelDeps, job: DeliveryJob, claim: SendClaim, now: datetime) -> JobResult | None:
        await asyncio.sleep(0.01)  # both workers have read the dead worker's claim before either takes it over
        return await doubt(d, job, claim, now)

    monkeypatch.setattr(pipeline, "_doubt", slow_doubt)
    first, second = ScriptedConnector(echoes=True), ScriptedConnector(echoes=True)
    results = await asyncio.gather(
        deliver_jobs(channel_deps(deps, first), [job]), deliver_jobs(channel_deps(deps, second), [job])
    )

    outcomes = sorted((r.outcome for (r,) in results), key=lambda o: o is not Outcome.HANDED_OVER)
    # One sends. The other either finds the take-over still in flight (deferred) or, if the first was quicker,
    # its send already recorded (recovered): which one depends on timing; never a second send.
    assert outcomes[0] is Outcome.HANDED_OVER
    assert outcomes[1] in (Outcome.DEFERRED, Outcome.RECOVERED, Outcome.ALREADY_SENT)
    assert first.calls + second.calls == 1


async def test_a_late_echo_of_a_send_made_again_keeps_the_recorded_id(
    app: Chat4All, pair: ConversationId, deps: PipelineDeps, log: FakePublisher, clock: FakeClock
) -> None:
    await app.send("ana", pair)
    (job,) = await routed(deps, log)
    await claim_as_a_dead_worker(deps, [job])
    platform = ScriptedConnector(echoes=True)
    cd = channel_deps(deps, platform)
    clock.advance(cd.echo_grace)
    (sent,) = await deliver_jobs(cd, [job])

    # The dead worker's send did reach the platform after all, and its echo came too late.
    assert await apply_receipts(deps, [echo_of(job, "telegram-late", clock.advance())]) == 0

    assert sent.platform_message_id == "telegram-1"
    assert await ledger(deps, job) == "telegram-1"
    [history] = histories(app, Channel.TELEGRAM)
    assert handoffs(history) == ["telegram accepted it as telegram-1"]


async def test_an_echo_that_beats_the_senders_record_tells_the_hand_over_once(
    app: Chat4All, pair: ConversationId, deps: PipelineDeps, log: FakePublisher, clock: FakeClock
) -> None:
    await app.send("ana", pair)
    (job,) = await routed(deps, log)

    class EchoesAtOnce(ScriptedConnector):
        async def send(self, message: OutboundMessage) -> str:
            platform_id = await super().send(message)
            await apply_receipts(deps, [echo_of(job, platform_id, clock.now())])  # before the worker records
            return platform_id

    (result,) = await deliver_jobs(channel_deps(deps, EchoesAtOnce(echoes=True)), [job])

    assert result.outcome is Outcome.HANDED_OVER
    [history] = histories(app, Channel.TELEGRAM)
    assert handoffs(history) == ["telegram accepted it as telegram-1"]


async def test_an_echo_of_a_delivery_that_is_gone_or_elsewhere_changes_nothing(
    app: Chat4All, pair: ConversationId, deps: PipelineDeps, log: FakePublisher, clock: FakeClock
) -> None:
    await app.send("ana", pair)
    (job,) = await routed(deps, log)
    unknown = DeliveryJob.from_event({**job.to_event().payload, "message_id": "00000000-0000-4000-8000-000000000000"})
    elsewhere = Receipt(Channel.WHATSAPP, DeliveryStatus.SENT, clock.now(), platform_message_id="w", delivery=job.key)

    assert await apply_receipts(deps, [echo_of(unknown, "telegram-1", clock.now()), elsewhere]) == 0

    assert await ledger(deps, job) is None
    assert app.store.state.sends == {}


# --- watermarks cover what the platform had ------------------------------------------------------------


def watermark(status: DeliveryStatus, up_to: datetime) -> Watermark:
    return Watermark(channel=Channel.MESSENGER, reader=BIA_MESSENGER, status=status, up_to=up_to, at=up_to)


async def test_a_watermark_does_not_cover_a_claim_the_platform_never_got(
    app: Chat4All, with_bia: ConversationId, deps: PipelineDeps, log: FakePublisher, clock: FakeClock
) -> None:
    messenger = ScriptedConnector(Channel.MESSENGER, echoes=True)
    cd = channel_deps(deps, messenger)
    await app.send("ana", with_bia, "one")
    await deliver_jobs(cd, await routed(deps, log, Channel.MESSENGER))
    clock.advance()
    await app.send("ana", with_bia, "two")
    (two,) = await routed(deps, log, Channel.MESSENGER)
    await claim_as_a_dead_worker(deps, [two])  # and died before sending it

    assert await apply_receipts(deps, [watermark(DeliveryStatus.DELIVERED, clock.advance())]) == 1
    assert statuses(app, Channel.MESSENGER) == [DeliveryStatus.DELIVERED, DeliveryStatus.SENT]

    clock.advance(cd.echo_grace)
    (sent,) = await deliver_jobs(cd, [two])  # no echo: it never reached the platform, so it goes now

    assert sent.outcome is Outcome.HANDED_OVER
    # Sent after the watermark, so not covered by it: it waits for a receipt of its own.
    assert statuses(app, Channel.MESSENGER) == [DeliveryStatus.DELIVERED, DeliveryStatus.SENT]
    assert await apply_receipts(deps, [watermark(DeliveryStatus.DELIVERED, clock.advance())]) == 1
    assert statuses(app, Channel.MESSENGER) == [DeliveryStatus.DELIVERED, DeliveryStatus.DELIVERED]


async def test_a_watermark_that_outruns_the_senders_record_applies_when_the_send_is_recorded(
    app: Chat4All, with_bia: ConversationId, deps: PipelineDeps, log: FakePublisher, clock: FakeClock
) -> None:
    await app.send("ana", with_bia, "one")
    (job,) = await routed(deps, log, Channel.MESSENGER)
    during_send: list[int] = []

    class ReportsAtOnce(ScriptedConnector):
        async def send(self, message: OutboundMessage) -> str:
            platform_id = await super().send(message)
            during_send.append(await apply_receipts(deps, [watermark(DeliveryStatus.READ, clock.advance())]))
            return platform_id

    (result,) = await deliver_jobs(channel_deps(deps, ReportsAtOnce(Channel.MESSENGER)), [job])

    assert result.outcome is Outcome.HANDED_OVER
    assert during_send == [0]  # kept: the send's answer was not recorded yet
    assert statuses(app, Channel.MESSENGER) == [DeliveryStatus.READ]  # recording it applied the watermark
    [history] = histories(app, Channel.MESSENGER)
    assert [h.status for h in history] == [
        DeliveryStatus.SENT,
        DeliveryStatus.SENT,  # the hand-over
        DeliveryStatus.DELIVERED,  # implied by the read
        DeliveryStatus.READ,
    ]


async def test_a_watermark_kept_for_a_send_in_doubt_applies_when_its_echo_completes_it(
    app: Chat4All, with_bia: ConversationId, deps: PipelineDeps, log: FakePublisher, clock: FakeClock
) -> None:
    await app.send("ana", with_bia, "one")
    (job,) = await routed(deps, log, Channel.MESSENGER)
    await claim_as_a_dead_worker(deps, [job])  # it sent the message and died

    assert await apply_receipts(deps, [watermark(DeliveryStatus.DELIVERED, clock.advance())]) == 0
    assert await apply_receipts(deps, [echo_of(job, "m_1", clock.advance())]) == 1

    assert statuses(app, Channel.MESSENGER) == [DeliveryStatus.DELIVERED]
    assert app.store.state.bindings[BIA_MESSENGER][0] == with_bia


async def test_an_echo_and_a_watermark_in_one_batch_both_apply(
    app: Chat4All, with_bia: ConversationId, deps: PipelineDeps, log: FakePublisher, clock: FakeClock
) -> None:
    await app.send("ana", with_bia, "one")
    (job,) = await routed(deps, log, Channel.MESSENGER)
    await claim_as_a_dead_worker(deps, [job])
    sent_at = clock.advance()
    delivered = Receipt(Channel.MESSENGER, DeliveryStatus.DELIVERED, clock.advance(), platform_message_id="m_1")

    changed = await apply_receipts(deps, [delivered, echo_of(job, "m_1", sent_at)])

    assert changed == 1
    assert statuses(app, Channel.MESSENGER) == [DeliveryStatus.DELIVERED]
    assert app.store.state.early_receipts == {}


async def test_the_sweeper_applies_a_watermark_kept_as_its_send_was_recorded_and_forgets_old_ones(
    app: Chat4All, with_bia: ConversationId, deps: PipelineDeps, log: FakePublisher, clock: FakeClock
) -> None:
    await app.send("ana", with_bia, "one")
    await deliver_jobs(
        channel_deps(deps, ScriptedConnector(Channel.MESSENGER)), await routed(deps, log, Channel.MESSENGER)
    )
    bia = f"user:{app.users['bia']}"
    up_to = clock.advance()
    # The race: the status worker saw the claim unrecorded, the channel worker missed the kept watermark.
    async with app.store.uow() as uow:
        await uow.early_watermarks.keep(
            [EarlyWatermark(channel=Channel.MESSENGER, reader=bia, status=DeliveryStatus.READ, up_to=up_to, at=up_to)],
            at=up_to,
        )
        await uow.early_watermarks.keep(
            [
                EarlyWatermark(
                    channel=Channel.MESSENGER, reader="messenger:99", status=DeliveryStatus.READ, up_to=up_to, at=up_to
                )
            ],
            at=up_to - timedelta(days=2),
        )
        await uow.commit()

    await sweep(deps, deadline=timedelta(minutes=5))

    assert statuses(app, Channel.MESSENGER) == [DeliveryStatus.READ]
    assert [k[1] for k in app.store.state.early_watermarks] == [bia]  # the stale one is forgotten
