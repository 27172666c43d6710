"""MessageRepository: messages, what each viewer's history shows, deliveries and their progress."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

import attrs
import pytest

from application.ports import DuplicateMessage, HistoryQuery, MessageOrigin
from domain.channels import Channel, ChannelAddress
from domain.conversations import Conversation, Participant
from domain.deliveries import Delivery, DeliveryStatus, StatusChange
from domain.ids import ConversationId, FileId, MessageId, UserId
from domain.messages import FileContent, FileInfo, Message, TextContent, plan_deliveries
from domain.users import ChannelIdentity
from tests.builders import T0, a_conversation, a_message, a_message_id, a_user_id
from tests.contract.backends import Backend, store

pytestmark = pytest.mark.contract

ALICE, BOB = Participant.user(UserId(uuid.uuid4())), Participant.user(UserId(uuid.uuid4()))
CONTACT = Participant.contact(ChannelAddress.parse("whatsapp:+5511999998888"))
LINKED = {BOB.user_id: {Channel.TELEGRAM}}  # bob is reachable on internal and telegram


def group() -> Conversation:
    assert ALICE.user_id is not None
    return a_conversation(creator=ALICE.user_id, others=[BOB, CONTACT])


def at(seq: int) -> datetime:
    return T0 + timedelta(minutes=seq, microseconds=seq)


def sent(
    conv: Conversation, seq: int, sender: Participant, to: Sequence[Participant], **overrides: object
) -> tuple[Message, list[Delivery]]:
    m = a_message(conv, sender=sender, seq=seq, recipients=tuple(to), at=at(seq), **overrides)
    deliveries = plan_deliveries(
        message_id=m.id, recipients=m.recipients, channels=m.channels, identities=LINKED, at=m.created_at
    )
    return m, deliveries


def fields(m: Message | None) -> dict[str, object]:
    assert m is not None
    return attrs.asdict(m, recurse=False)


def state(dl: Delivery) -> tuple[object, ...]:
    return (dl.message_id, dl.recipient, dl.channel, dl.status, dl.updated_at, dl.error, list(dl.history))


async def add_and_commit(uow_factory: Backend, *accepted: tuple[Message, Sequence[Delivery]]) -> None:
    """Add one by one, then commit: a clash may show at either step, depending on the adapter."""
    async with uow_factory() as uow:
        for message, deliveries in accepted:
            await uow.messages.add(message, deliveries)
        await uow.commit()


# --- messages ------------------------------------------------------------------------


async def test_a_text_message_reads_back_whole(uow_factory: Backend) -> None:
    conv = group()
    m, deliveries = sent(conv, 1, ALICE, [BOB, CONTACT], metadata={"client": "web", "n": [1, 2]}, fingerprint="ab" * 32)
    await store(uow_factory, conversations=[conv], messages=[(m, deliveries)])

    async with uow_factory() as uow:
        got = await uow.messages.get(m.id)
        missing = await uow.messages.get(MessageId(uuid.uuid4()))

    assert fields(got) == fields(m)
    assert missing is None


@pytest.mark.parametrize("caption", ["the report", None])
async def test_a_file_message_on_chosen_channels_reads_back_whole(uow_factory: Backend, caption: str | None) -> None:
    conv = group()
    content = FileContent(FileId(uuid.uuid4()), caption, FileInfo("relatório.pdf", 2 * 1024**3, "application/pdf"))
    m, deliveries = sent(conv, 1, BOB, [CONTACT, ALICE], content=content, channels=(Channel.WHATSAPP, Channel.INTERNAL))
    await store(uow_factory, conversations=[conv], messages=[(m, deliveries)])

    async with uow_factory() as uow:
        got = await uow.messages.get(m.id)

    assert fields(got) == fields(m)
    assert got is not None and got.recipients == (CONTACT, ALICE)
    assert got.channels == (Channel.WHATSAPP, Channel.INTERNAL)


async def test_a_file_is_shared_with_those_who_see_a_message_carrying_it(uow_factory: Backend) -> None:
    carol = Participant.user(a_user_id())
    conv = a_conversation(creator=ALICE.user_id, others=[BOB, carol])
    shared, other = FileId(uuid.uuid4()), FileId(uuid.uuid4())
    to_bob = sent(conv, 1, ALICE, [BOB], content=FileContent(shared, None, FileInfo("a.pdf", 1, "application/pdf")))
    text = sent(conv, 2, ALICE, [BOB, carol], content=TextContent(str(other)))
    await store(uow_factory, conversations=[conv], messages=[to_bob, text])

    async with uow_factory() as uow:
        seen = {p.key: await uow.messages.shares_file(shared, p) for p in (ALICE, BOB, carol, CONTACT)}
        unknown = await uow.messages.shares_file(other, BOB)

    assert seen == {ALICE.key: True, BOB.key: True, carol.key: False, CONTACT.key: False}
    assert not unknown  # a text that only mentions a file's id does not carry it


async def test_a_message_id_is_used_once(uow_factory: Backend) -> None:
    conv = group()
    first, deliveries = sent(conv, 1, ALICE, [BOB])
    clash, clash_deliveries = sent(conv, 2, BOB, [ALICE], id=first.id, content=TextContent("other"))
    await store(uow_factory, conversations=[conv], messages=[(first, deliveries)])

    # The clash is raised by add or, where the adapter writes with the commit, by commit.
    with pytest.raises(DuplicateMessage):
        await add_and_commit(uow_factory, (clash, clash_deliveries))
    m2 = sent(conv, 2, ALICE, [BOB])[0]
    with pytest.raises(DuplicateMessage):
        await add_and_commit(uow_factory, (m2, []), (attrs.evolve(m2, seq=3), []))
    async with uow_factory() as uow:
        stored = await uow.messages.get(first.id)
        stored_deliveries = await uow.messages.deliveries([first.id])
        nothing = await uow.messages.get_many([m2.id])

    assert fields(stored) == fields(first)
    assert [state(d) for d in stored_deliveries] == [state(d) for d in deliveries]
    assert nothing == {}


async def test_a_batch_of_messages_is_stored_whole_or_not_at_all(uow_factory: Backend) -> None:
    conv, other = group(), group()
    batch = [sent(conv, 1, ALICE, [BOB, CONTACT]), sent(other, 1, BOB, [ALICE]), sent(conv, 2, BOB, [ALICE])]
    await store(uow_factory, conversations=[conv, other])

    async with uow_factory() as uow:
        await uow.messages.add_many(batch)
        await uow.commit()
    ids = [m.id for m, _ in batch]
    async with uow_factory() as uow:
        got = await uow.messages.get_many([*ids, MessageId(uuid.uuid4())])
        deliveries = await uow.messages.deliveries(ids)
    assert {i: fields(m) for i, m in got.items()} == {m.id: fields(m) for m, _ in batch}
    async with uow_factory() as uow:
        where = await uow.messages.origins_of([*ids, MessageId(uuid.uuid4())])
        assert await uow.messages.origins_of([]) == {}
    assert where == {m.id: MessageOrigin(conversation_id=m.conversation_id, sender=m.sender) for m, _ in batch}
    assert sorted(map(state, deliveries), key=str) == sorted((state(d) for _, ds in batch for d in ds), key=str)

    fresh = sent(conv, 3, ALICE, [BOB])
    with pytest.raises(DuplicateMessage):
        await add_and_commit(uow_factory, fresh, (attrs.evolve(batch[0][0], seq=4), []))
    async with uow_factory() as uow:
        assert await uow.messages.get_many([fresh[0].id]) == {}


async def test_the_send_path_reads_what_it_needs_in_one_go(uow_factory: Backend) -> None:
    conv, elsewhere = group(), a_conversation()
    stored = sent(conv, 1, ALICE, [BOB])
    await store(uow_factory, conversations=[conv, elsewhere], messages=[stored])
    assert ALICE.user_id is not None and BOB.user_id is not None
    stranger = UserId(uuid.uuid4())
    async with uow_factory() as uow:
        for user_id, address in [
            (BOB.user_id, "telegram:4242"),
            (BOB.user_id, "whatsapp:+5511999990000"),
            (stranger, "telegram:77"),
        ]:
            await uow.identities.add(
                ChannelIdentity(user_id=user_id, address=ChannelAddress.parse(address), linked_at=T0)
            )
        await uow.commit()

    async with uow_factory() as uow:
        context = await uow.lookups.for_sending(
            [conv.id, ConversationId(uuid.uuid4())], [stored[0].id, MessageId(uuid.uuid4())]
        )
        nothing = await uow.lookups.for_sending([], [])

    assert {i: fields(m) for i, m in context.existing.items()} == {stored[0].id: fields(stored[0])}
    assert set(context.conversations) == {conv.id}
    assert context.conversations[conv.id].members == conv.members
    assert context.channels == {BOB.user_id: frozenset({Channel.TELEGRAM, Channel.WHATSAPP})}  # members' only
    assert (nothing.existing, nothing.conversations, nothing.channels) == ({}, {}, {})


# --- history ---------------------------------------------------------------------------


@pytest.fixture
async def chat(uow_factory: Backend) -> Conversation:
    """Eight messages; bob sees 1, 2, 4, 5, 7 and 8 (3 and 6 go only to the contact)."""
    conv, elsewhere = group(), group()
    script = [
        (ALICE, [BOB, CONTACT]),
        (BOB, [ALICE, CONTACT]),
        (ALICE, [CONTACT]),
        (CONTACT, [ALICE, BOB]),
        (ALICE, [BOB, CONTACT]),
        (ALICE, [CONTACT]),
        (BOB, [ALICE]),
        (ALICE, [BOB, CONTACT]),
    ]
    messages = [sent(conv, seq, sender, to) for seq, (sender, to) in enumerate(script, start=1)]
    await store(
        uow_factory, conversations=[conv, elsewhere], messages=[*messages, sent(elsewhere, 1, ALICE, [BOB, CONTACT])]
    )
    return conv


@pytest.mark.parametrize(
    ("viewer", "limit", "after_seq", "before_seq", "since_seq", "expected"),
    [
        pytest.param(BOB, 3, None, None, None, [5, 7, 8], id="the last N"),
        pytest.param(BOB, 100, None, None, None, [1, 2, 4, 5, 7, 8], id="everything the viewer sees"),
        pytest.param(ALICE, 100, None, None, None, [1, 2, 3, 4, 5, 6, 7, 8], id="the sender sees its own"),
        pytest.param(CONTACT, 100, None, None, None, [1, 2, 3, 4, 5, 6, 8], id="a contact viewer"),
        pytest.param(BOB, 3, None, 5, None, [1, 2, 4], id="the last N before"),
        pytest.param(BOB, 2, None, 5, None, [2, 4], id="the last N before, cut"),
        pytest.param(BOB, 3, None, 1, None, [], id="nothing before the first"),
        pytest.param(BOB, 2, 2, None, None, [4, 5], id="the first N after"),
        pytest.param(BOB, 10, 8, None, None, [], id="nothing after the last"),
        pytest.param(BOB, 3, 1, 5, None, [2, 4, 5], id="after wins over before"),
        pytest.param(BOB, 2, None, None, 4, [4, 5], id="since reads forward"),
        pytest.param(BOB, 10, 1, None, 5, [5, 7, 8], id="since and after"),
        pytest.param(BOB, 2, None, 8, 4, [5, 7], id="since and before reads backward"),
    ],
)
async def test_history_is_the_viewers_slice_in_ascending_order(
    uow_factory: Backend,
    chat: Conversation,
    viewer: Participant,
    limit: int,
    after_seq: int | None,
    before_seq: int | None,
    since_seq: int | None,
    expected: list[int],
) -> None:
    query = HistoryQuery(
        conversation_id=chat.id,
        viewer=viewer,
        limit=limit,
        after_seq=after_seq,
        before_seq=before_seq,
        since=None if since_seq is None else at(since_seq),
    )
    async with uow_factory() as uow:
        found = await uow.messages.history(query)

    assert [m.seq for m in found] == expected
    assert all(m.conversation_id == chat.id for m in found)


async def test_history_returns_whole_messages(uow_factory: Backend, chat: Conversation) -> None:
    async with uow_factory() as uow:
        found = await uow.messages.history(HistoryQuery(conversation_id=chat.id, viewer=BOB, limit=1))
        same = await uow.messages.get(found[0].id)

    assert fields(found[0]) == fields(same)


# --- deliveries ------------------------------------------------------------------------


async def test_deliveries_come_in_the_order_asked_each_in_planned_order(uow_factory: Backend) -> None:
    conv = group()
    m1, d1 = sent(conv, 1, ALICE, [BOB, CONTACT])
    m2, d2 = sent(conv, 2, CONTACT, [BOB, ALICE])
    await store(uow_factory, conversations=[conv], messages=[(m1, d1), (m2, d2)])

    async with uow_factory() as uow:
        found = await uow.messages.deliveries([m2.id, MessageId(uuid.uuid4()), m1.id])
        none = await uow.messages.deliveries([])

    assert [(d.recipient, d.channel) for d in d1] == [
        (BOB, Channel.INTERNAL),
        (BOB, Channel.TELEGRAM),
        (CONTACT, Channel.WHATSAPP),
    ]
    assert [state(d) for d in found] == [state(d) for d in [*d2, *d1]]
    assert all(d.history == [StatusChange(DeliveryStatus.SENT, d.updated_at)] for d in found)
    assert list(none) == []


async def test_saved_progress_is_read_back_in_the_same_unit_of_work_and_undone_by_a_rollback(
    uow_factory: Backend,
) -> None:
    # An adapter may send the write later (with the next statement or the commit): a read in the
    # same unit of work must see it all the same.
    conv = group()
    m, deliveries = sent(conv, 1, ALICE, [BOB, CONTACT])
    await store(uow_factory, conversations=[conv], messages=[(m, deliveries)])

    async with uow_factory() as uow:
        whatsapp = (await uow.messages.deliveries([m.id]))[2]
        assert whatsapp.advance(DeliveryStatus.DELIVERED, at=T0 + timedelta(hours=1))
        await uow.messages.save_progress([whatsapp])
        seen = (await uow.messages.deliveries([m.id]))[2]
        await uow.rollback()
        after_rollback = (await uow.messages.deliveries([m.id]))[2]

    assert state(seen) == state(whatsapp)
    assert after_rollback.status is DeliveryStatus.SENT
    assert after_rollback.history == [StatusChange(DeliveryStatus.SENT, m.created_at)]


async def test_progress_is_saved_with_its_whole_history(uow_factory: Backend) -> None:
    conv = group()
    m, deliveries = sent(conv, 1, ALICE, [BOB, CONTACT])
    await store(uow_factory, conversations=[conv], messages=[(m, deliveries)])
    t1, t2, t3 = T0 + timedelta(hours=1), T0 + timedelta(hours=2), T0 + timedelta(hours=3)

    async with uow_factory() as uow:
        telegram, whatsapp = (await uow.messages.deliveries([m.id]))[1:]
        assert telegram.advance(DeliveryStatus.FAILED, at=t1, error="bot was blocked")
        assert whatsapp.advance(DeliveryStatus.DELIVERED, at=t1)
        await uow.messages.save_progress([telegram, whatsapp])
        await uow.commit()
    async with uow_factory() as uow:
        telegram, whatsapp = (await uow.messages.deliveries([m.id]))[1:]
        assert telegram.error == "bot was blocked"
        assert telegram.advance(DeliveryStatus.DELIVERED, at=t2)
        assert whatsapp.advance(DeliveryStatus.READ, at=t3)
        await uow.messages.save_progress([telegram, whatsapp])
        await uow.commit()
    async with uow_factory() as uow:
        internal, telegram, whatsapp = await uow.messages.deliveries([m.id])

    assert state(internal) == state(deliveries[0])
    assert (telegram.status, telegram.updated_at, telegram.error) == (DeliveryStatus.DELIVERED, t2, None)
    assert telegram.history == [
        StatusChange(DeliveryStatus.SENT, m.created_at),
        StatusChange(DeliveryStatus.FAILED, t1, "bot was blocked"),
        StatusChange(DeliveryStatus.DELIVERED, t2),
    ]
    assert (whatsapp.status, whatsapp.updated_at) == (DeliveryStatus.READ, t3)
    assert [h.status for h in whatsapp.history] == [DeliveryStatus.SENT, DeliveryStatus.DELIVERED, DeliveryStatus.READ]


async def test_unsaved_or_rolled_back_progress_is_lost(uow_factory: Backend) -> None:
    conv = group()
    m, deliveries = sent(conv, 1, ALICE, [BOB])
    await store(uow_factory, conversations=[conv], messages=[(m, deliveries)])

    async with uow_factory() as uow:
        dl = (await uow.messages.deliveries([m.id]))[0]
        dl.advance(DeliveryStatus.READ, at=T0 + timedelta(hours=1))
        await uow.messages.save_progress([dl])
    async with uow_factory() as uow:
        found = await uow.messages.deliveries([m.id])

    assert [state(d) for d in found] == [state(d) for d in deliveries]


async def test_pending_for_is_the_recipients_unread_deliveries_up_to_a_position(uow_factory: Backend) -> None:
    conv, elsewhere = group(), group()
    m1, d1 = sent(conv, 1, ALICE, [BOB, CONTACT])
    m2, d2 = sent(conv, 2, CONTACT, [BOB, ALICE])
    m3, d3 = sent(conv, 3, ALICE, [BOB])
    m4, d4 = sent(conv, 4, ALICE, [BOB])
    other, d_other = sent(elsewhere, 1, ALICE, [BOB])
    await store(
        uow_factory,
        conversations=[conv, elsewhere],
        messages=[(m1, d1), (m2, d2), (m3, d3), (m4, d4), (other, d_other)],
    )
    async with uow_factory() as uow:
        read, delivered = d2[0], d3[1]  # bob's internal copy of 2 is read, his telegram copy of 3 delivered
        read.advance(DeliveryStatus.READ, at=T0 + timedelta(hours=1))
        delivered.advance(DeliveryStatus.DELIVERED, at=T0 + timedelta(hours=1))
        await uow.messages.save_progress([read, delivered])
        await uow.commit()

    async with uow_factory() as uow:
        pending = await uow.messages.pending_for(conv.id, BOB, up_to_seq=3)
        first = await uow.messages.pending_for(conv.id, BOB, up_to_seq=1)
        nobody = await uow.messages.pending_for(conv.id, ALICE, up_to_seq=1)

    assert [(d.message_id, d.channel, d.status) for d in pending] == [
        (m1.id, Channel.INTERNAL, DeliveryStatus.SENT),
        (m1.id, Channel.TELEGRAM, DeliveryStatus.SENT),
        (m2.id, Channel.TELEGRAM, DeliveryStatus.SENT),
        (m3.id, Channel.INTERNAL, DeliveryStatus.SENT),
        (m3.id, Channel.TELEGRAM, DeliveryStatus.DELIVERED),
    ]
    assert all(d.recipient == BOB for d in pending)
    assert [len(d.history) for d in pending] == [1, 1, 1, 1, 2]
    assert [(d.message_id, d.channel) for d in first] == [(m1.id, Channel.INTERNAL), (m1.id, Channel.TELEGRAM)]
    assert list(nobody) == []


async def test_unsent_of_names_the_platform_deliveries_still_sent_in_planned_order(uow_factory: Backend) -> None:
    alice, bob = a_user_id(), a_user_id()
    contact = Participant.contact(ChannelAddress.parse("telegram:42"))
    conv = a_conversation(creator=alice, others=[Participant.user(bob), contact])
    first, second = a_message(conv, seq=1), a_message(conv, seq=2)
    deliveries = {
        m.id: [
            Delivery.accepted(message_id=m.id, recipient=Participant.user(bob), channel=Channel.INTERNAL, at=T0),
            Delivery.accepted(message_id=m.id, recipient=Participant.user(bob), channel=Channel.WHATSAPP, at=T0),
            Delivery.accepted(message_id=m.id, recipient=contact, channel=Channel.TELEGRAM, at=T0),
        ]
        for m in (first, second)
    }
    await store(uow_factory, conversations=[conv], messages=[(m, deliveries[m.id]) for m in (second, first)])
    async with uow_factory() as uow:
        [handed] = await uow.messages.lock_deliveries([deliveries[first.id][2].key])
        handed.advance(DeliveryStatus.DELIVERED, at=T0)
        await uow.messages.save_progress([handed])
        await uow.commit()

    async with uow_factory() as uow:
        unsent = await uow.messages.unsent_of([second.id, first.id, a_message_id()])
        none = await uow.messages.unsent_of([])

    assert list(unsent) == [deliveries[second.id][1].key, deliveries[second.id][2].key, deliveries[first.id][1].key]
    assert list(none) == []


# --- conversation summaries ------------------------------------------------------------


async def test_a_summary_shows_the_last_message_the_viewer_sees_in_each_conversation(
    uow_factory: Backend, chat: Conversation
) -> None:
    # chat: bob sees 1, 2, 4, 5, 7 and 8 (3 and 6 go only to the contact).
    aside, empty = group(), group()
    to_all = sent(aside, 1, ALICE, [BOB, CONTACT])
    to_contact = sent(aside, 2, ALICE, [CONTACT])  # the group's latest, but not bob's
    await store(uow_factory, conversations=[aside, empty], messages=[to_all, to_contact])
    unknown = ConversationId(uuid.uuid4())

    async with uow_factory() as uow:
        for_bob = await uow.messages.summaries(BOB, [chat.id, aside.id, empty.id, unknown])
        for_alice = await uow.messages.summaries(ALICE, [aside.id])
        bobs_history = await uow.messages.history(HistoryQuery(conversation_id=chat.id, viewer=BOB, limit=1))
        nothing = await uow.messages.summaries(BOB, [])

    assert set(for_bob) == {chat.id, aside.id, empty.id, unknown}
    last = for_bob[chat.id].last_message
    assert last is not None and last.seq == 8
    assert fields(last) == fields(bobs_history[-1])  # whole, as history has it
    aside_last = for_bob[aside.id].last_message
    assert aside_last is not None and aside_last.id == to_all[0].id
    alices = for_alice[aside.id].last_message
    assert alices is not None and alices.id == to_contact[0].id  # the sender sees its own
    assert (for_bob[empty.id].last_message, for_bob[empty.id].unread) == (None, 0)
    assert (for_bob[unknown].last_message, for_bob[unknown].unread) == (None, 0)
    assert dict(nothing) == {}


async def test_a_file_message_is_summarised_whole(uow_factory: Backend) -> None:
    conv = group()
    content = FileContent(FileId(uuid.uuid4()), "see", FileInfo("plan.pdf", 1234, "application/pdf"))
    m, deliveries = sent(conv, 1, ALICE, [BOB], content=content)
    await store(uow_factory, conversations=[conv], messages=[(m, deliveries)])

    async with uow_factory() as uow:
        summary = (await uow.messages.summaries(BOB, [conv.id]))[conv.id]

    assert fields(summary.last_message) == fields(m)


async def read_on(
    uow_factory: Backend, message: Message, reader: Participant, status: DeliveryStatus, *on: Channel
) -> None:
    """The reader's deliveries of ``message`` on the channels ``on`` reach ``status``."""
    async with uow_factory() as uow:
        mine = [dl for dl in await uow.messages.deliveries([message.id]) if dl.recipient == reader and dl.channel in on]
        assert len(mine) == len(on)
        for dl in mine:
            assert dl.advance(status, at=message.created_at + timedelta(seconds=30))
        await uow.messages.save_progress(mine)
        await uow.commit()


async def unread(uow_factory: Backend, viewer: Participant, conv: Conversation) -> int:
    async with uow_factory() as uow:
        return (await uow.messages.summaries(viewer, [conv.id]))[conv.id].unread


async def test_unread_counts_the_messages_the_viewer_received_and_read_on_no_channel(uow_factory: Backend) -> None:
    conv = group()
    # bob is reached on internal and telegram: two deliveries of each message to him, counted once.
    first, second, third = (sent(conv, seq, ALICE, [BOB]) for seq in (1, 2, 3))
    reply = sent(conv, 4, BOB, [ALICE, CONTACT])
    later = sent(conv, 5, ALICE, [BOB, CONTACT])
    aside = sent(conv, 6, ALICE, [CONTACT])  # not bob's
    await store(uow_factory, conversations=[conv], messages=[first, second, third, reply, later, aside])

    assert await unread(uow_factory, BOB, conv) == 4  # 1, 2, 3 and 5: not his own reply, not 6
    assert await unread(uow_factory, ALICE, conv) == 1  # bob's reply: what she sent is never unread
    assert await unread(uow_factory, CONTACT, conv) == 3  # 4, 5 and 6, on its channel

    # POST /v1/messages/{id}/read reads every channel of this and the earlier messages.
    for m, _ in (first, second):
        await read_on(uow_factory, m, BOB, DeliveryStatus.READ, Channel.INTERNAL, Channel.TELEGRAM)
    assert await unread(uow_factory, BOB, conv) == 2
    # A platform's read receipt reads one channel: read on any channel is read.
    await read_on(uow_factory, third[0], BOB, DeliveryStatus.READ, Channel.TELEGRAM)
    assert await unread(uow_factory, BOB, conv) == 1
    # Delivered is not read.
    await read_on(uow_factory, later[0], BOB, DeliveryStatus.DELIVERED, Channel.INTERNAL)
    assert await unread(uow_factory, BOB, conv) == 1
    await read_on(uow_factory, reply[0], ALICE, DeliveryStatus.READ, Channel.INTERNAL)
    assert await unread(uow_factory, ALICE, conv) == 0
