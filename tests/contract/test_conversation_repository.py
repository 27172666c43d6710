"""ConversationRepository: members, listing by recent activity, and the message counter."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import pytest

from application.ports import PageRequest, UnitOfWork
from domain.channels import ChannelAddress
from domain.conversations import Conversation, ConversationType, Participant
from domain.errors import BusinessRuleViolation
from domain.ids import ConversationId, UserId
from tests.builders import T0, a_conversation
from tests.contract.backends import Backend, store

pytestmark = pytest.mark.contract

ALICE, BOB, CAROL = (UserId(uuid.uuid4()) for _ in range(3))
CONTACT = Participant.contact(ChannelAddress.parse("whatsapp:+5511999998888"))


def snapshot(c: Conversation) -> tuple[object, ...]:
    return (c.id, c.type, c.members, c.created_by, c.created_at, dict(c.metadata), c.last_seq, c.last_activity_at)


def started(*, minutes: float, creator: UserId = ALICE, conversation_id: uuid.UUID | None = None) -> Conversation:
    return a_conversation(
        creator=creator,
        others=[Participant.user(ALICE if creator == BOB else BOB)],
        at=T0 + timedelta(minutes=minutes),
        id=ConversationId(conversation_id or uuid.uuid4()),
    )


async def test_a_conversation_reads_back_whole_with_its_members_in_order(uow_factory: Backend) -> None:
    group = a_conversation(
        creator=ALICE,
        others=[Participant.user(CAROL), CONTACT, Participant.user(BOB)],
        metadata={"topic": "launch", "priority": 2, "tags": ["a", "b"], "nested": {"ok": True, "none": None}},
        at=T0 + timedelta(microseconds=1),
    )
    await store(uow_factory, conversations=[group])

    async with uow_factory() as uow:
        got = await uow.conversations.get(group.id)
        missing = await uow.conversations.get(ConversationId(uuid.uuid4()))

    assert got is not None
    assert snapshot(got) == snapshot(group)
    assert got.type is ConversationType.GROUP
    assert got.members == (Participant.user(ALICE), Participant.user(CAROL), CONTACT, Participant.user(BOB))
    assert got.last_seq == 0
    assert missing is None


async def test_list_for_pages_through_a_members_conversations_most_recent_first(uow_factory: Backend) -> None:
    tie = [uuid.UUID(int=i) for i in (7, 3, 12)]  # same activity time: ordered by id, descending
    mine = [
        started(minutes=1),
        started(minutes=5),
        started(minutes=2, creator=BOB),
        *(started(minutes=3, conversation_id=t) for t in tie),
        started(minutes=4),
    ]
    theirs = a_conversation(creator=BOB, others=[Participant.user(CAROL)], at=T0 + timedelta(minutes=9))
    await store(uow_factory, conversations=[*mine, theirs])
    expected = sorted(mine, key=lambda c: (c.last_activity_at, str(c.id)), reverse=True)

    pages = []
    cursor = None
    async with uow_factory() as uow:
        while True:
            page = await uow.conversations.list_for(Participant.user(ALICE), PageRequest(limit=3, cursor=cursor))
            pages.append([c.id for c in page.items])
            cursor = page.next_cursor
            if cursor is None:
                break

    assert pages == [[c.id for c in expected[i : i + 3]] for i in range(0, len(expected), 3)]
    assert [c.id for c in expected[2:5]] == [tie[2], tie[0], tie[1]]


async def test_a_page_that_holds_everything_has_no_next_cursor(uow_factory: Backend) -> None:
    await store(uow_factory, conversations=[started(minutes=1), started(minutes=2)])

    async with uow_factory() as uow:
        exact = await uow.conversations.list_for(Participant.user(BOB), PageRequest(limit=2))
        roomy = await uow.conversations.list_for(Participant.user(BOB), PageRequest(limit=50))
        nobody = await uow.conversations.list_for(Participant.user(CAROL), PageRequest(limit=50))

    assert len(exact.items) == 2 and exact.next_cursor is None
    assert len(roomy.items) == 2 and roomy.next_cursor is None
    assert list(nobody.items) == [] and nobody.next_cursor is None


async def test_a_contact_lists_the_conversations_it_belongs_to(uow_factory: Backend) -> None:
    with_contact = a_conversation(creator=ALICE, others=[CONTACT])
    await store(uow_factory, conversations=[with_contact, started(minutes=1)])

    async with uow_factory() as uow:
        page = await uow.conversations.list_for(CONTACT, PageRequest(limit=10))

    assert [c.id for c in page.items] == [with_contact.id]
    assert page.items[0].members == (Participant.user(ALICE), CONTACT)


@pytest.mark.parametrize("cursor", ["%%%", "bm90IGEgY3Vyc29y", "////"])
async def test_a_cursor_this_server_did_not_make_is_rejected(uow_factory: Backend, cursor: str) -> None:
    await store(uow_factory, conversations=[started(minutes=1)])

    async with uow_factory() as uow:
        with pytest.raises(BusinessRuleViolation) as raised:
            await uow.conversations.list_for(Participant.user(ALICE), PageRequest(limit=1, cursor=cursor))

    assert raised.value.field == "cursor"


async def test_reserving_seqs_counts_up_per_conversation_and_marks_activity(uow_factory: Backend) -> None:
    conv, other = started(minutes=0), started(minutes=1)
    await store(uow_factory, conversations=[conv, other])
    later = T0 + timedelta(hours=1, microseconds=5)

    async with uow_factory() as uow:
        first = await uow.conversations.reserve_seqs({conv.id: 2, other.id: 1}, at=later)
        then = await uow.conversations.reserve_seqs({conv.id: 3}, at=later + timedelta(seconds=2))
        await uow.commit()

    assert first == {conv.id: 1, other.id: 1}
    assert then == {conv.id: 3}
    async with uow_factory() as uow:
        got = {c.id: c for c in [await uow.conversations.get(conv.id), await uow.conversations.get(other.id)] if c}
    assert set(got) == {conv.id, other.id}
    assert (got[conv.id].last_seq, got[other.id].last_seq) == (5, 1)
    assert got[conv.id].last_activity_at == later + timedelta(seconds=2)
    assert got[other.id].last_activity_at == later


async def test_reserving_in_an_unknown_conversation_fails(uow_factory: Backend) -> None:
    conv = started(minutes=0)
    await store(uow_factory, conversations=[conv])

    async with uow_factory() as uow:
        with pytest.raises(KeyError):
            await uow.conversations.reserve_seqs({conv.id: 1, ConversationId(uuid.uuid4()): 1}, at=T0)


async def _next_seq(uow: UnitOfWork, conversation_id: ConversationId, at: datetime) -> int:
    return (await uow.conversations.reserve_seqs({conversation_id: 1}, at=at))[conversation_id]


async def test_a_rolled_back_seq_is_given_again(uow_factory: Backend) -> None:
    conv = started(minutes=0)
    await store(uow_factory, conversations=[conv])

    async with uow_factory() as uow:
        first = await _next_seq(uow, conv.id, T0)
    async with uow_factory() as uow:
        again = await _next_seq(uow, conv.id, T0)
        await uow.commit()
    async with uow_factory() as uow:
        after = await _next_seq(uow, conv.id, T0)

    assert (first, again, after) == (1, 1, 2)


async def test_activity_moves_a_conversation_to_the_top_of_the_list(uow_factory: Backend) -> None:
    old, new = started(minutes=1), started(minutes=2)
    await store(uow_factory, conversations=[old, new])

    async with uow_factory() as uow:
        before = await uow.conversations.list_for(Participant.user(ALICE), PageRequest(limit=10))
        await _next_seq(uow, old.id, T0 + timedelta(minutes=3))
        after = await uow.conversations.list_for(Participant.user(ALICE), PageRequest(limit=10))

    assert [c.id for c in before.items] == [new.id, old.id]
    assert [c.id for c in after.items] == [old.id, new.id]
    assert after.items[0].last_seq == 1
