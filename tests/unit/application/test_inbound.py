"""Inbound messages and receipts from the platforms, on the in-memory adapters: where a message goes,
who it is from, that copies change nothing, and that receipts and watermarks reach the deliveries."""

from __future__ import annotations

from datetime import timedelta

import pytest

from application import topics
from application.inbound import (
    Inbound,
    InboundDeps,
    InboundMessage,
    Received,
    inbound_message_id,
    receive,
    text_of,
)
from application.pipeline import (
    ChannelDeps,
    CircuitBreaker,
    DeliveryJob,
    PipelineDeps,
    Receipt,
    RetryPolicy,
    Watermark,
    apply_receipts,
    deliver_jobs,
    relay_outbox,
    route_events,
)
from domain.channels import Channel, ChannelAddress
from domain.conversations import ConversationType, Participant
from domain.deliveries import DeliveryStatus
from tests.builders import Chat4All, FakeClock, FakePublisher, ScriptedConnector

pytestmark = pytest.mark.unit

ANA_WHATSAPP = "whatsapp:+5511911112222"
IG_CONTACT = "instagram:17841400000000077"


@pytest.fixture
def log() -> FakePublisher:
    return FakePublisher()


@pytest.fixture
def pipeline(app: Chat4All, log: FakePublisher) -> PipelineDeps:
    return PipelineDeps(uow=app.store.uow, clock=app.clock, publisher=log)


@pytest.fixture
async def inbound(app: Chat4All) -> InboundDeps:
    await app.register_all("ana", "sales")
    return InboundDeps(uow=app.store.uow, clock=app.clock, inbox_owners={Channel.WHATSAPP: "sales"})


def a_message(
    text: str = "oi", *, sender: str = ANA_WHATSAPP, pid: str = "wamid.1", reply_to: str | None = None
) -> InboundMessage:
    address = ChannelAddress.parse(sender)
    return InboundMessage(
        channel=address.channel,
        platform_message_id=pid,
        sender=address,
        text=text,
        at=FakeClock().now(),
        reply_to=reply_to,
        sender_name="Ana",
    )


async def deliver_all(pipeline: PipelineDeps, log: FakePublisher) -> dict[Channel, ScriptedConnector]:
    """Relay, route and hand every platform job to a scripted platform; return the platforms."""
    while await relay_outbox(pipeline):
        pass
    await route_events(pipeline, log.on(topics.MESSAGES))
    log.events = [e for e in log.events if e.topic != topics.MESSAGES]
    platforms: dict[Channel, ScriptedConnector] = {}
    for channel in (Channel.WHATSAPP, Channel.INSTAGRAM, Channel.MESSENGER, Channel.TELEGRAM):
        jobs = [DeliveryJob.from_event(e) for e in log.on(topics.outbound(channel))]
        platforms[channel] = ScriptedConnector(channel)
        if jobs:
            cd = ChannelDeps(
                pipeline=pipeline,
                connector=platforms[channel],
                breaker=CircuitBreaker(pipeline.clock),
                retry=RetryPolicy(max_attempts=1),
            )
            await deliver_jobs(cd, jobs)
    log.events = []
    return platforms


async def test_without_a_conversation_or_an_inbox_owner_a_message_is_not_routed(app: Chat4All) -> None:
    nobody = InboundDeps(uow=app.store.uow, clock=app.clock)

    assert await receive(nobody, Inbound(messages=(a_message(),))) == [Received.UNROUTED]
    assert app.stored_messages() == []


async def test_a_first_message_starts_a_private_conversation_with_the_inbox_owner(
    app: Chat4All, inbound: InboundDeps
) -> None:
    outcomes = await receive(inbound, Inbound(messages=(a_message("oi"), a_message("tudo bem?", pid="wamid.2"))))

    assert outcomes == [Received.ACCEPTED, Received.ACCEPTED]
    first, second = sorted(app.stored_messages(), key=lambda m: m.seq)
    contact = Participant.contact(ChannelAddress.parse(ANA_WHATSAPP))
    assert first.conversation_id == second.conversation_id  # the address is bound to it now
    assert (first.sender, first.seq, second.seq) == (contact, 1, 2)
    assert dict(first.metadata) == {"source": {"channel": "whatsapp", "platform_message_id": "wamid.1", "name": "Ana"}}
    history = await app.history("sales", first.conversation_id)
    assert [m.payload["text"] for m in history.items] == ["oi", "tudo bem?"]
    conversation = app.store.state.conversations[first.conversation_id]
    assert conversation.type is ConversationType.PRIVATE
    assert conversation.members == (Participant.user(app.users["sales"]), contact)


async def test_a_redelivered_message_is_accepted_once(app: Chat4All, inbound: InboundDeps) -> None:
    first = await receive(inbound, Inbound(messages=(a_message(), a_message())))
    again = await receive(inbound, Inbound(messages=(a_message(),)))

    assert first == [Received.ACCEPTED, Received.DUPLICATE]
    assert again == [Received.DUPLICATE]
    (stored,) = app.stored_messages()
    assert stored.id == inbound_message_id(Channel.WHATSAPP, "wamid.1")
    assert len(app.events(topics.MESSAGES)) == 1


async def test_an_address_that_is_a_users_identity_writes_as_that_user(app: Chat4All, inbound: InboundDeps) -> None:
    await app.link("ana", "whatsapp", "+5511911112222")

    await receive(inbound, Inbound(messages=(a_message(),)))

    (stored,) = app.stored_messages()
    assert stored.sender == Participant.user(app.users["ana"])
    assert stored.recipients == (Participant.user(app.users["sales"]),)


async def test_a_reply_bridges_the_conversation_that_last_sent_to_the_address(
    app: Chat4All, inbound: InboundDeps, pipeline: PipelineDeps, log: FakePublisher
) -> None:
    group = await app.start("ana", ANA_WHATSAPP, IG_CONTACT)
    await app.send("ana", group, "who is coming?")
    await deliver_all(pipeline, log)

    assert await receive(inbound, Inbound(messages=(a_message("me!"),))) == [Received.ACCEPTED]
    platforms = await deliver_all(pipeline, log)

    reply = max(app.stored_messages(), key=lambda m: m.seq)
    assert (reply.conversation_id, reply.seq) == (group, 2)
    assert reply.sender == Participant.contact(ChannelAddress.parse(ANA_WHATSAPP))
    (bridged,) = platforms[Channel.INSTAGRAM].accepted  # the WhatsApp user's words reach Instagram
    assert (str(bridged.to), bridged.payload["text"]) == (IG_CONTACT, "me!")
    assert platforms[Channel.WHATSAPP].accepted == []  # and never echo back to their author


async def test_a_reply_context_wins_over_the_binding(
    app: Chat4All, inbound: InboundDeps, pipeline: PipelineDeps, log: FakePublisher
) -> None:
    older = await app.start("ana", ANA_WHATSAPP)
    await app.send("ana", older, "first question")
    platforms = await deliver_all(pipeline, log)
    app.clock.advance(timedelta(seconds=5))
    newer = await app.start("sales", ANA_WHATSAPP)
    await app.send("sales", newer, "an offer")
    await deliver_all(pipeline, log)
    replied_to = "whatsapp-1"  # the scripted platform's id of "first question"
    assert platforms[Channel.WHATSAPP].accepted[0].payload["text"] == "first question"

    await receive(inbound, Inbound(messages=(a_message("answer", pid="wamid.9", reply_to=replied_to),)))
    await receive(inbound, Inbound(messages=(a_message("no context", pid="wamid.10"),)))

    by_text = {m.content.text: m.conversation_id for m in app.stored_messages()}  # type: ignore[union-attr]
    assert by_text["answer"] == older
    assert by_text["no context"] == older  # the reply moved the binding along


async def test_receipts_and_watermarks_are_queued_for_the_status_worker(app: Chat4All, inbound: InboundDeps) -> None:
    at = app.clock.now()
    receipt = Receipt(Channel.WHATSAPP, DeliveryStatus.READ, at, platform_message_id="wamid.1")
    watermark = Watermark(
        channel=Channel.MESSENGER,
        reader=ChannelAddress.parse("messenger:1234"),
        status=DeliveryStatus.DELIVERED,
        up_to=at,
        at=at,
    )

    assert await receive(inbound, Inbound(receipts=(receipt,), watermarks=(watermark,))) == []

    queued = app.events(topics.RECEIPTS)
    assert [Receipt.from_event(queued[0]), Watermark.from_event(queued[1])] == [receipt, watermark]


async def test_a_watermark_moves_every_delivery_handed_over_before_it(
    app: Chat4All, pipeline: PipelineDeps, log: FakePublisher
) -> None:
    await app.register_all("ana", "bia")
    await app.link("bia", "messenger", "1234")
    pair = await app.start("ana", "bia")
    await app.send("ana", pair, "one")
    await app.send("ana", pair, "two")
    await deliver_all(pipeline, log)
    cut = app.clock.advance()
    app.clock.advance()
    await app.send("ana", pair, "three")
    await deliver_all(pipeline, log)
    reader = ChannelAddress.parse("messenger:1234")

    read = Watermark(channel=Channel.MESSENGER, reader=reader, status=DeliveryStatus.READ, up_to=cut, at=cut)
    assert await apply_receipts(pipeline, [read]) == 2

    by_text = {
        m.content.text: dl.status  # type: ignore[union-attr]
        for m in app.stored_messages()
        for dl in app.store.state.deliveries[m.id]
        if dl.channel is Channel.MESSENGER
    }
    assert by_text == {"one": DeliveryStatus.READ, "two": DeliveryStatus.READ, "three": DeliveryStatus.SENT}
    assert await apply_receipts(pipeline, [read]) == 0  # a repeated watermark changes nothing


def test_a_watermark_round_trips_through_its_event_and_rejects_nonsense(clock: FakeClock) -> None:
    w = Watermark(
        channel=Channel.MESSENGER,
        reader=ChannelAddress.parse("messenger:99"),
        status=DeliveryStatus.READ,
        up_to=clock.now(),
        at=clock.now(),
    )
    assert Watermark.from_event(w.to_event().payload) == w
    for bad in ({}, {**w.to_event().payload, "reader": "fax:1"}, {**w.to_event().payload, "status": "LOST"}):
        with pytest.raises(ValueError, match="not a watermark"):
            Watermark.from_event(bad)


@pytest.mark.parametrize(
    ("text", "stored"),
    [
        ("hello\nworld\t!", "hello\nworld\t!"),
        ("bell\x07 and nul\x00", "bell and nul"),
        ("   ", "(an empty whatsapp message)"),
        ("x" * 5000, "x" * 4096),
    ],
)
def test_inbound_text_is_cleaned_and_cut_to_our_limit(text: str, stored: str) -> None:
    assert text_of(a_message(text)).text == stored


async def test_an_inbox_conversation_is_started_once_per_address(app: Chat4All, inbound: InboundDeps) -> None:
    other = "whatsapp:+5511933334444"
    await receive(inbound, Inbound(messages=(a_message(pid="a"), a_message(sender=other, pid="b"))))

    members = {app.store.state.conversations[m.conversation_id].members[1] for m in app.stored_messages()}
    assert len({m.conversation_id for m in app.stored_messages()}) == 2
    assert {str(p.address) for p in members} == {ANA_WHATSAPP, other}
