"""A message's status: the sender sees every delivery, a recipient only its own."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from application import views as v
from application.errors import NotFound
from domain.ids import ConversationId, MessageId
from tests.builders import T0, Chat4All, FakeClock


@pytest.fixture
async def group(app: Chat4All) -> ConversationId:
    """ana, bruno (also on WhatsApp), carla and a Telegram contact; eve is outside."""
    await app.register_all("ana", "bruno", "carla", "eve")
    await app.link("bruno", "whatsapp", "+5511999998888")
    return await app.start("ana", "bruno", "carla", "telegram:42")


def member(app: Chat4All, username: str) -> v.MemberView:
    return v.MemberView(kind="user", user_id=app.users[username], username=username)


def rows(view: v.MessageStatusView) -> list[tuple[str | None, str, str]]:
    return [(d.recipient.username or d.recipient.address, d.channel, d.status) for d in view.deliveries]


async def test_the_sender_sees_every_delivery(app: Chat4All, group: ConversationId) -> None:
    accepted = await app.send("ana", group)

    view = await app.status("ana", accepted.message_id)

    assert view.message_id == accepted.message_id
    assert view.status == "SENT"
    assert rows(view) == [
        ("bruno", "internal", "SENT"),
        ("bruno", "whatsapp", "SENT"),
        ("carla", "internal", "SENT"),
        ("telegram:42", "telegram", "SENT"),
    ]
    assert view.deliveries[0] == v.DeliveryView(
        recipient=member(app, "bruno"), channel="internal", status="SENT", updated_at=T0, error=None
    )
    assert view.deliveries[3].recipient == v.MemberView(kind="contact", address="telegram:42")
    assert [(e.status, e.channel, e.at) for e in view.history] == [
        ("SENT", "internal", T0),
        ("SENT", "whatsapp", T0),
        ("SENT", "internal", T0),
        ("SENT", "telegram", T0),
    ]


async def test_a_recipient_sees_only_its_own_deliveries(app: Chat4All, group: ConversationId) -> None:
    accepted = await app.send("ana", group)

    view = await app.status("bruno", accepted.message_id)

    assert rows(view) == [("bruno", "internal", "SENT"), ("bruno", "whatsapp", "SENT")]
    assert {e.recipient for e in view.history} == {member(app, "bruno")}


async def test_a_recipient_sees_its_own_progress_as_the_overall_status(
    app: Chat4All, group: ConversationId, clock: FakeClock
) -> None:
    accepted = await app.send("ana", group)
    clock.advance()
    await app.mark_read("carla", accepted.message_id)

    assert (await app.status("carla", accepted.message_id)).status == "READ"
    assert (await app.status("bruno", accepted.message_id)).status == "SENT"
    assert (await app.status("ana", accepted.message_id)).status == "SENT"


async def test_the_history_lists_changes_in_time_order(app: Chat4All, group: ConversationId, clock: FakeClock) -> None:
    accepted = await app.send("ana", group)
    clock.advance(timedelta(seconds=10))
    await app.mark_read("carla", accepted.message_id)
    clock.advance(timedelta(seconds=10))
    await app.mark_read("bruno", accepted.message_id)

    view = await app.status("ana", accepted.message_id)

    assert [e.at for e in view.history] == sorted(e.at for e in view.history)
    reads = [(e.recipient.username, e.channel, e.at) for e in view.history if e.status == "READ"]
    assert reads == [
        ("carla", "internal", T0 + timedelta(seconds=10)),
        ("bruno", "internal", T0 + timedelta(seconds=20)),
        ("bruno", "whatsapp", T0 + timedelta(seconds=20)),
    ]


async def test_everyone_reading_makes_the_message_read_except_for_a_contact(
    app: Chat4All, group: ConversationId
) -> None:
    accepted = await app.send("ana", group)
    await app.mark_read("bruno", accepted.message_id)
    await app.mark_read("carla", accepted.message_id)

    # The Telegram contact has not reported anything, so the message as a whole is still only SENT.
    assert (await app.status("ana", accepted.message_id)).status == "SENT"


async def test_a_private_message_read_by_its_recipient_is_read(app: Chat4All) -> None:
    await app.register_all("ana", "bruno")
    pair = await app.start("ana", "bruno")
    accepted = await app.send("ana", pair)

    await app.mark_read("bruno", accepted.message_id)

    assert (await app.status("ana", accepted.message_id)).status == "READ"


async def test_a_member_who_is_not_a_recipient_does_not_find_it(app: Chat4All, group: ConversationId) -> None:
    accepted = await app.send("ana", group, to=["bruno"])

    with pytest.raises(NotFound):
        await app.status("carla", accepted.message_id)


async def test_an_outsider_does_not_find_it(app: Chat4All, group: ConversationId) -> None:
    accepted = await app.send("ana", group)

    with pytest.raises(NotFound):
        await app.status("eve", accepted.message_id)


async def test_an_unknown_message_is_not_found(app: Chat4All, group: ConversationId) -> None:
    with pytest.raises(NotFound):
        await app.status("ana", MessageId(uuid.uuid4()))


async def test_a_telegram_delivery_handed_over_is_final_at_sent_and_the_others_wait(
    app: Chat4All, group: ConversationId
) -> None:
    accepted = await app.send("ana", group)
    telegram = next(dl for dl in app.store.state.deliveries[accepted.message_id] if dl.channel.value == "telegram")
    before = await app.status("ana", accepted.message_id)
    async with app.store.uow() as uow:
        await uow.sends.record([(telegram.key, "42:7")], at=T0)
        whatsapp = next(dl for dl in app.store.state.deliveries[accepted.message_id] if dl.channel.value == "whatsapp")
        await uow.sends.record([(whatsapp.key, "wamid.1")], at=T0)
        await uow.commit()

    after = await app.status("ana", accepted.message_id)

    assert [d.final for d in before.deliveries] == [False, False, False, False]  # nothing handed over yet
    assert [(d.channel, d.status, d.final) for d in after.deliveries] == [
        ("internal", "SENT", False),
        ("whatsapp", "SENT", False),  # WhatsApp's receipts are still to come
        ("internal", "SENT", False),
        ("telegram", "SENT", True),  # Telegram reports nothing more: final, not stuck
    ]
