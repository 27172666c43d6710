"""Marking a message read: it and every earlier one the reader received, once, with a status event."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from application import commands as c
from application.errors import Forbidden, NotFound
from application.handlers import STATUS_TOPIC
from domain.conversations import Participant
from domain.deliveries import DeliveryStatus
from domain.ids import ConversationId, MessageId
from tests.builders import T0, Chat4All, FakeClock


@pytest.fixture
async def group(app: Chat4All) -> ConversationId:
    """ana, bruno (also on WhatsApp) and carla; eve is outside."""
    await app.register_all("ana", "bruno", "carla", "eve")
    await app.link("bruno", "whatsapp", "+5511999998888")
    return await app.start("ana", "bruno", "carla")


def statuses(app: Chat4All, message_id: MessageId, username: str) -> list[DeliveryStatus]:
    who = Participant.user(app.users[username])
    return [dl.status for dl in app.store.state.deliveries[message_id] if dl.recipient == who]


async def test_reading_moves_the_readers_deliveries_to_read(
    app: Chat4All, group: ConversationId, clock: FakeClock
) -> None:
    accepted = await app.send("ana", group)
    read_at = clock.advance(timedelta(minutes=1))

    receipt = await app.mark_read("bruno", accepted.message_id)

    assert receipt.message_id == accepted.message_id
    assert receipt.read_at == read_at
    assert receipt.status == "READ"
    assert statuses(app, accepted.message_id, "bruno") == [DeliveryStatus.READ, DeliveryStatus.READ]
    assert statuses(app, accepted.message_id, "carla") == [DeliveryStatus.SENT]


async def test_reading_a_message_reads_every_earlier_one_received(
    app: Chat4All, group: ConversationId, clock: FakeClock
) -> None:
    first = await app.send("ana", group, "1")
    second = await app.send("carla", group, "2")
    own = await app.send("bruno", group, "3 - bruno's own")
    fourth = await app.send("ana", group, "4")
    later = await app.send("ana", group, "5")
    clock.advance()

    await app.mark_read("bruno", fourth.message_id)

    for earlier in (first, second, fourth):
        assert set(statuses(app, earlier.message_id, "bruno")) == {DeliveryStatus.READ}
    assert set(statuses(app, later.message_id, "bruno")) == {DeliveryStatus.SENT}
    assert {dl.status for dl in app.store.state.deliveries[own.message_id]} == {DeliveryStatus.SENT}
    assert statuses(app, first.message_id, "carla") == [DeliveryStatus.SENT]


async def test_reading_does_not_touch_other_conversations(app: Chat4All, group: ConversationId) -> None:
    elsewhere = await app.start("ana", "bruno")
    other = await app.send("ana", elsewhere)
    accepted = await app.send("ana", group)

    await app.mark_read("bruno", accepted.message_id)

    assert set(statuses(app, other.message_id, "bruno")) == {DeliveryStatus.SENT}


async def test_reading_again_is_idempotent_and_keeps_the_first_read_at(
    app: Chat4All, group: ConversationId, clock: FakeClock
) -> None:
    accepted = await app.send("ana", group)
    first_at = clock.advance()
    first = await app.mark_read("bruno", accepted.message_id)
    history = [list(dl.history) for dl in app.store.state.deliveries[accepted.message_id]]
    events = len(app.events(STATUS_TOPIC))
    clock.advance(timedelta(hours=1))

    again = await app.mark_read("bruno", accepted.message_id)

    assert again == first
    assert again.read_at == first_at
    assert [list(dl.history) for dl in app.store.state.deliveries[accepted.message_id]] == history
    assert len(app.events(STATUS_TOPIC)) == events


async def test_a_late_receipt_for_an_earlier_message_changes_nothing(
    app: Chat4All, group: ConversationId, clock: FakeClock
) -> None:
    earlier = await app.send("ana", group, "1")
    later = await app.send("ana", group, "2")
    read_at = clock.advance()
    await app.mark_read("bruno", later.message_id)
    events = list(app.events(STATUS_TOPIC))
    clock.advance(timedelta(minutes=5))

    receipt = await app.mark_read("bruno", earlier.message_id)

    assert receipt.read_at == read_at  # it was read when the later message was
    assert app.events(STATUS_TOPIC) == events
    assert set(statuses(app, earlier.message_id, "bruno")) == {DeliveryStatus.READ}


async def test_the_sender_cannot_mark_its_own_message_read(app: Chat4All, group: ConversationId) -> None:
    accepted = await app.send("ana", group)

    with pytest.raises(Forbidden):
        await app.mark_read("ana", accepted.message_id)

    assert app.events(STATUS_TOPIC) == []


async def test_a_member_who_did_not_receive_it_does_not_find_it(app: Chat4All, group: ConversationId) -> None:
    accepted = await app.send("ana", group, to=["bruno"])

    with pytest.raises(NotFound):
        await app.mark_read("carla", accepted.message_id)

    assert set(statuses(app, accepted.message_id, "bruno")) == {DeliveryStatus.SENT}


async def test_an_outsider_or_an_unknown_message_is_not_found(app: Chat4All, group: ConversationId) -> None:
    accepted = await app.send("ana", group)

    with pytest.raises(NotFound):
        await app.mark_read("eve", accepted.message_id)
    with pytest.raises(NotFound):
        await app.handle(c.MarkRead(app.users["bruno"], MessageId(uuid.uuid4())))


async def test_the_status_history_records_the_read(app: Chat4All, group: ConversationId, clock: FakeClock) -> None:
    accepted = await app.send("ana", group)
    read_at = clock.advance(timedelta(seconds=30))
    await app.mark_read("carla", accepted.message_id)

    view = await app.status("ana", accepted.message_id)

    carla = [(e.status, e.at) for e in view.history if e.recipient.username == "carla"]
    assert carla == [("SENT", T0), ("DELIVERED", read_at), ("READ", read_at)]  # what was read was delivered
    (delivery,) = [d for d in view.deliveries if d.recipient.username == "carla"]
    assert (delivery.status, delivery.updated_at) == ("READ", read_at)


async def test_reading_emits_one_status_event_per_delivery_read(
    app: Chat4All, group: ConversationId, clock: FakeClock
) -> None:
    accepted = await app.send("ana", group)
    sent_at = clock.now()
    read_at = clock.advance()

    await app.mark_read("bruno", accepted.message_id)

    bruno = Participant.user(app.users["bruno"]).key
    outbox = [(topic, key) for topic, key, _ in app.store.state.outbox if topic == STATUS_TOPIC]
    assert outbox == [(STATUS_TOPIC, str(group))] * 2
    assert app.events(STATUS_TOPIC) == [
        {
            "type": "message.status",
            "message_id": str(accepted.message_id),
            "conversation_id": str(group),
            "sender": Participant.user(app.users["ana"]).key,
            "recipient": bruno,
            "channel": channel,
            "status": "READ",
            "at": read_at.isoformat(),
            "sent_at": sent_at.isoformat(),
        }
        for channel in ("internal", "whatsapp")
    ]


async def test_every_earlier_message_read_along_is_announced(
    app: Chat4All, group: ConversationId, clock: FakeClock
) -> None:
    # carla's message becomes READ for bruno when bruno reads ana's later one; carla must be told.
    from_carla = await app.send("carla", group, "1", to=["bruno"])
    from_ana = await app.send("ana", group, "2", to=["bruno"])
    clock.advance()

    await app.mark_read("bruno", from_ana.message_id)

    assert set(statuses(app, from_carla.message_id, "bruno")) == {DeliveryStatus.READ}
    announced = {(e["message_id"], e["channel"]) for e in app.events(STATUS_TOPIC)}
    assert announced == {
        (str(m.message_id), channel) for m in (from_carla, from_ana) for channel in ("internal", "whatsapp")
    }
