"""The reads behind sync and presence: what changed for a viewer after a position, and who a user's peers are."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from application.cursors import SyncPosition
from application.ports import MessageOrigin
from domain.channels import Channel
from domain.conversations import Participant
from domain.deliveries import DeliveryStatus
from domain.ids import UserId
from tests.builders import T0, a_conversation
from tests.contract.backends import Backend, store
from tests.contract.test_message_repository import ALICE, BOB, CONTACT, group, sent

pytestmark = pytest.mark.contract


async def test_created_since_is_the_viewers_messages_after_a_position_in_time_then_id_order(
    uow_factory: Backend,
) -> None:
    conv = group()
    carol = Participant.user(UserId(uuid.uuid4()))
    elsewhere = a_conversation(creator=carol.user_id, others=[BOB])
    first, second, to_contact_only = (
        sent(conv, 1, ALICE, [BOB]),
        sent(conv, 2, BOB, [ALICE]),
        sent(conv, 3, ALICE, [CONTACT]),
    )
    not_mine = sent(elsewhere, 4, carol, [BOB])
    await store(uow_factory, conversations=[conv, elsewhere], messages=[first, second, to_contact_only, not_mine])

    async with uow_factory() as uow:
        everything = await uow.messages.created_since(BOB, SyncPosition(T0 - timedelta(days=1)), limit=10)
        after_first = await uow.messages.created_since(BOB, SyncPosition.of_message(first[0]), limit=10)
        one = await uow.messages.created_since(BOB, SyncPosition(T0 - timedelta(days=1)), limit=1)
        for_alice = await uow.messages.created_since(ALICE, SyncPosition(T0 - timedelta(days=1)), limit=10)

    assert [m.id for m in everything] == [first[0].id, second[0].id, not_mine[0].id]
    assert [m.id for m in after_first] == [second[0].id, not_mine[0].id]
    assert [m.id for m in one] == [first[0].id]
    assert [m.id for m in for_alice] == [first[0].id, second[0].id, to_contact_only[0].id]  # sent ones too


async def test_changed_since_is_the_senders_deliveries_and_the_viewers_own_reads(uow_factory: Backend) -> None:
    conv = group()
    m, deliveries = sent(conv, 1, ALICE, [BOB, CONTACT])
    await store(uow_factory, conversations=[conv], messages=[(m, deliveries)])
    later = m.created_at + timedelta(seconds=5)
    async with uow_factory() as uow:
        by_key = {(dl.recipient, dl.channel): dl for dl in await uow.messages.deliveries([m.id])}
        internal, telegram = by_key[(BOB, Channel.INTERNAL)], by_key[(BOB, Channel.TELEGRAM)]
        assert internal.advance(DeliveryStatus.READ, at=later)
        assert telegram.advance(DeliveryStatus.DELIVERED, at=later)
        await uow.messages.save_progress([internal, telegram])
        await uow.commit()

    since = SyncPosition(m.created_at + timedelta(seconds=1))  # the planned deliveries are older
    async with uow_factory() as uow:
        for_alice = await uow.messages.changed_since(ALICE, since, limit=10)
        for_bob = await uow.messages.changed_since(BOB, since, limit=10)
        first = await uow.messages.changed_since(ALICE, since, limit=1)
        rest = await uow.messages.changed_since(ALICE, SyncPosition.of_delivery(first[0][0]), limit=10)

    origin = MessageOrigin(conversation_id=conv.id, sender=ALICE)
    assert [(dl.recipient, dl.channel, dl.status, o) for dl, o in for_alice] == [
        (BOB, Channel.INTERNAL, DeliveryStatus.READ, origin),
        (BOB, Channel.TELEGRAM, DeliveryStatus.DELIVERED, origin),
    ]
    assert [(dl.channel, dl.status) for dl, _ in for_bob] == [(Channel.INTERNAL, DeliveryStatus.READ)]
    assert [dl.key for dl, _ in first + rest] == [dl.key for dl, _ in for_alice]
    assert for_alice[0][0].history[-1].status is DeliveryStatus.READ


async def test_peers_are_the_other_users_of_ones_conversations(uow_factory: Backend) -> None:
    carol, dan = Participant.user(UserId(uuid.uuid4())), Participant.user(UserId(uuid.uuid4()))
    assert ALICE.user_id is not None and BOB.user_id is not None
    await store(
        uow_factory,
        conversations=[
            group(),
            a_conversation(creator=ALICE.user_id, others=[carol, BOB]),
            a_conversation(creator=dan.user_id),
        ],
    )
    async with uow_factory() as uow:
        peers = await uow.conversations.peers_of(ALICE.user_id)
        lonely = await uow.conversations.peers_of(UserId(uuid.uuid4()))
    assert sorted(peers, key=str) == sorted([BOB.user_id, carol.user_id], key=str)
    assert lonely == []
