"""The event pipeline's bookkeeping: the outbox relay's claims, routing progress, the send ledger,
and the message, delivery and identity reads the router, the channel workers and the sweeper rely on."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import attrs
import pytest

from application.ports import DeliveryKey, EarlyReceipt, OutboxRecord, SendClaim
from domain.channels import Channel, ChannelAddress
from domain.conversations import Conversation, Participant
from domain.deliveries import Delivery, DeliveryStatus, StatusChange
from domain.ids import ConversationId, MessageId, UserId
from domain.messages import Message, TextContent
from domain.users import ChannelIdentity
from tests.builders import T0, a_conversation, a_message
from tests.contract.backends import Backend, store

pytestmark = pytest.mark.contract

ALICE, BOB = Participant.user(UserId(uuid.uuid4())), Participant.user(UserId(uuid.uuid4()))
CONTACT = Participant.contact(ChannelAddress.parse("whatsapp:+5511999998888"))
LATER = T0 + timedelta(hours=1)


def group() -> Conversation:
    assert ALICE.user_id is not None
    return a_conversation(creator=ALICE.user_id, others=[BOB, CONTACT])


def minutes(n: float) -> datetime:
    return T0 + timedelta(minutes=n)


def message(conv: Conversation, seq: int, *, at: datetime | None = None, text: str | None = None) -> Message:
    return a_message(
        conv,
        sender=ALICE,
        seq=seq,
        recipients=(BOB, CONTACT),
        at=at or minutes(seq),
        content=TextContent(text or f"message {seq}"),
    )


def delivery(m: Message, recipient: Participant, channel: Channel, *, at: datetime | None = None) -> Delivery:
    return Delivery.accepted(message_id=m.id, recipient=recipient, channel=channel, at=at or m.created_at)


def fields(m: Message) -> dict[str, object]:
    return attrs.asdict(m, recurse=False)


def state(dl: Delivery) -> tuple[object, ...]:
    return (dl.message_id, dl.recipient, dl.channel, dl.status, dl.updated_at, dl.error, list(dl.history))


def unknown_key() -> DeliveryKey:
    return (MessageId(uuid.uuid4()), BOB.key, Channel.TELEGRAM)


async def queue(backend: Backend, *events: tuple[str, str, dict[str, Any]]) -> None:
    """Add outbox events and commit."""
    async with backend() as uow:
        for topic, key, event in events:
            await uow.outbox.add(topic, key, event)
        await uow.commit()


def contents(records: Sequence[OutboxRecord]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(r.topic, r.key, dict(r.payload)) for r in records]


def event(n: int) -> tuple[str, str, dict[str, Any]]:
    return ("chat.messages", f"conv-{n % 2}", {"type": "message.created", "n": n, "to": ["user:1"], "meta": None})


# --- the outbox ------------------------------------------------------------------------


async def test_claim_returns_committed_events_oldest_first_with_ids_up_to_the_limit(uow_factory: Backend) -> None:
    await queue(uow_factory, event(1), event(2), event(3))
    await queue(uow_factory, event(4), event(5))

    async with uow_factory() as uow:
        first_four = await uow.outbox.claim(4)
    async with uow_factory() as uow:
        everything = await uow.outbox.claim(100)
        nothing = await uow.outbox.claim(0)

    assert contents(first_four) == [event(1), event(2), event(3), event(4)]
    assert contents(everything) == [event(n) for n in range(1, 6)]
    ids = [r.id for r in everything]
    assert ids == sorted(ids) and len(set(ids)) == 5
    assert [r.id for r in first_four] == ids[:4]
    assert list(nothing) == []


async def test_claim_is_empty_when_nothing_was_queued(uow_factory: Backend) -> None:
    async with uow_factory() as uow:
        assert list(await uow.outbox.claim(10)) == []


async def test_published_events_are_not_claimed_again(uow_factory: Backend) -> None:
    await queue(uow_factory, event(1), event(2), event(3))

    async with uow_factory() as uow:
        batch = await uow.outbox.claim(2)
        await uow.outbox.mark_published([r.id for r in batch], at=LATER)
        await uow.commit()
    async with uow_factory() as uow:
        rest = await uow.outbox.claim(10)
        await uow.outbox.mark_published([r.id for r in rest], at=LATER)
        await uow.outbox.mark_published([], at=LATER)
        await uow.commit()
    async with uow_factory() as uow:
        after_all = await uow.outbox.claim(10)

    assert contents(batch) == [event(1), event(2)]
    assert contents(rest) == [event(3)]
    assert rest[0].id > batch[-1].id
    assert list(after_all) == []


async def test_purge_deletes_only_events_published_before_the_cutoff(uow_factory: Backend) -> None:
    await queue(uow_factory, event(1), event(2), event(3), event(4))
    async with uow_factory() as uow:
        old = await uow.outbox.claim(2)
        await uow.outbox.mark_published([r.id for r in old], at=T0)
        recent = await uow.outbox.claim(1)
        await uow.outbox.mark_published([r.id for r in recent], at=LATER)
        await uow.commit()

    async with uow_factory() as uow:
        first = await uow.outbox.purge(published_before=T0 + timedelta(minutes=1), limit=1)
        second = await uow.outbox.purge(published_before=T0 + timedelta(minutes=1), limit=10)
        third = await uow.outbox.purge(published_before=T0 + timedelta(minutes=1), limit=10)
        await uow.commit()
    async with uow_factory() as uow:
        waiting = await uow.outbox.claim(10)

    assert (first, second, third) == (1, 1, 0)  # the recent one and the unpublished one stay
    assert contents(waiting) == [event(4)]


async def test_unpublish_makes_events_published_in_the_window_claimable_again(uow_factory: Backend) -> None:
    """After the broker lost its log, the relay publishes the recent outbox again."""
    await queue(uow_factory, event(1), event(2), event(3), event(4))
    async with uow_factory() as uow:
        old = await uow.outbox.claim(1)
        await uow.outbox.mark_published([r.id for r in old], at=T0)
        recent = await uow.outbox.claim(2)
        await uow.outbox.mark_published([r.id for r in recent], at=LATER)
        await uow.commit()

    async with uow_factory() as uow:
        again = await uow.outbox.unpublish(
            published_after=T0 + timedelta(seconds=1), published_before=LATER + timedelta(seconds=1)
        )
        none = await uow.outbox.unpublish(published_after=LATER + timedelta(days=1), published_before=LATER)
        await uow.commit()
    async with uow_factory() as uow:
        waiting = await uow.outbox.claim(10)
        backlog = await uow.outbox.backlog()

    assert (again, none) == (2, 0)
    assert contents(waiting) == [event(2), event(3), event(4)]  # in id order; the old one stays published
    assert backlog == 3


async def test_events_not_committed_are_never_claimed(uow_factory: Backend) -> None:
    async with uow_factory() as uow:
        await uow.outbox.add("chat.messages", "k", {"type": "left without commit"})
    async with uow_factory() as uow:
        await uow.outbox.add("chat.messages", "k", {"type": "rolled back"})
        await uow.rollback()
        await uow.outbox.add(*event(1))
        await uow.commit()
        await uow.outbox.add("chat.messages", "k", {"type": "after the commit, never committed"})
    async with uow_factory() as uow:
        await uow.outbox.add("chat.messages", "k", {"type": "added in the claiming unit of work"})
        claimed = await uow.outbox.claim(10)

    assert contents(claimed) == [event(1)]


async def test_a_rolled_back_claim_and_mark_leave_the_events_claimable(uow_factory: Backend) -> None:
    await queue(uow_factory, event(1), event(2))

    async with uow_factory() as uow:
        first = await uow.outbox.claim(10)
        await uow.outbox.mark_published([r.id for r in first], at=LATER)  # and no commit
    async with uow_factory() as uow:
        second = await uow.outbox.claim(10)
        await uow.outbox.mark_published([r.id for r in second], at=LATER)
        await uow.rollback()
        third = await uow.outbox.claim(10)

    assert contents(first) == [event(1), event(2)]
    assert second == first
    assert third == first


async def test_the_backlog_counts_committed_events_not_yet_published(uow_factory: Backend) -> None:
    async with uow_factory() as uow:
        empty = await uow.outbox.backlog()
    await queue(uow_factory, event(1), event(2), event(3))
    async with uow_factory() as uow:
        await uow.outbox.add(*event(4))  # not committed: not waiting
        queued = await uow.outbox.backlog()
        claimed = await uow.outbox.claim(2)
        await uow.outbox.mark_published([r.id for r in claimed], at=T0)
        await uow.commit()
    async with uow_factory() as uow:
        left = await uow.outbox.backlog()
        rest = await uow.outbox.claim(10)
        await uow.outbox.mark_published([r.id for r in rest], at=T0)
        await uow.commit()
    async with uow_factory() as uow:
        await uow.outbox.purge(published_before=LATER, limit=10)
        await uow.commit()
    async with uow_factory() as uow:
        drained = await uow.outbox.backlog()

    assert (empty, queued, left, drained) == (0, 3, 2, 0)  # the 4th was committed with the claim


# --- routing progress ------------------------------------------------------------------


async def test_lock_gives_zero_until_routed_then_the_advanced_seq(uow_factory: Backend) -> None:
    a, b = group(), group()
    await store(uow_factory, conversations=[a, b])

    async with uow_factory() as uow:
        before = await uow.routing.lock([a.id, b.id], at=T0)
        await uow.routing.advance({a.id: 5}, at=T0)
        await uow.commit()
    async with uow_factory() as uow:
        after = await uow.routing.lock([b.id, a.id], at=LATER)

    assert before == {a.id: 0, b.id: 0}
    assert after == {a.id: 5, b.id: 0}


async def test_an_advance_that_is_not_committed_is_lost(uow_factory: Backend) -> None:
    a = group()
    await store(uow_factory, conversations=[a])

    async with uow_factory() as uow:
        await uow.routing.lock([a.id], at=T0)
        await uow.routing.advance({a.id: 3}, at=T0)
        assert await uow.routing.lock([a.id], at=T0) == {a.id: 3}  # visible to its own unit of work
    async with uow_factory() as uow:
        assert await uow.routing.lock([a.id], at=T0) == {a.id: 0}


async def test_routing_progress_never_moves_backwards(uow_factory: Backend) -> None:
    a = group()
    await store(uow_factory, conversations=[a])

    async with uow_factory() as uow:
        await uow.routing.lock([a.id], at=T0)
        await uow.routing.advance({a.id: 7}, at=T0)
        await uow.routing.advance({a.id: 4}, at=T0)
        await uow.commit()
    async with uow_factory() as uow:
        after_first = await uow.routing.lock([a.id], at=LATER)
        await uow.routing.advance({a.id: 3}, at=LATER)
        await uow.commit()
    async with uow_factory() as uow:
        after_second = await uow.routing.lock([a.id], at=LATER)
        await uow.routing.advance({a.id: 9}, at=LATER)
        await uow.commit()
    async with uow_factory() as uow:
        after_third = await uow.routing.lock([a.id], at=LATER)

    assert (after_first, after_second, after_third) == ({a.id: 7}, {a.id: 7}, {a.id: 9})


async def test_several_conversations_advance_at_once(uow_factory: Backend) -> None:
    a, b, c = group(), group(), group()
    await store(uow_factory, conversations=[a, b, c])

    async with uow_factory() as uow:
        await uow.routing.lock([a.id, b.id, c.id], at=T0)
        await uow.routing.advance({b.id: 9, a.id: 2}, at=T0)
        await uow.routing.advance({}, at=T0)
        await uow.commit()
    async with uow_factory() as uow:
        found = await uow.routing.lock([a.id, b.id, c.id], at=T0)

    assert found == {a.id: 2, b.id: 9, c.id: 0}


async def test_an_advance_without_a_lock_is_recorded_too(uow_factory: Backend) -> None:
    a, b = group(), group()
    await store(uow_factory, conversations=[a, b])

    async with uow_factory() as uow:
        await uow.routing.advance({a.id: 4, b.id: 1}, at=T0)
        await uow.commit()
    async with uow_factory() as uow:
        found = await uow.routing.lock([a.id, b.id], at=T0)

    assert found == {a.id: 4, b.id: 1}


async def test_unknown_conversations_are_absent_from_a_lock(uow_factory: Backend) -> None:
    a = group()
    await store(uow_factory, conversations=[a])
    ghost = ConversationId(uuid.uuid4())

    async with uow_factory() as uow:
        found = await uow.routing.lock([ghost, a.id], at=T0)
        none = await uow.routing.lock([], at=T0)
        await uow.routing.advance({a.id: 1}, at=T0)
        await uow.commit()  # the unit of work is still usable: nothing failed
    async with uow_factory() as uow:
        again = await uow.routing.lock([a.id, ghost], at=T0)

    assert found == {a.id: 0}
    assert dict(none) == {}
    assert again == {a.id: 1}


async def test_behind_finds_conversations_with_unrouted_messages_in_the_window(uow_factory: Backend) -> None:
    # The window is (minute 10, minute 20).
    late, routed, never, old, recent, partly = (group() for _ in range(6))
    messages = [
        message(late, 1, at=minutes(11)),  # routed
        message(late, 2, at=minutes(12)),
        message(late, 3, at=minutes(13)),
        message(late, 4, at=minutes(25)),  # after the window: not counted
        message(routed, 1, at=minutes(14)),
        message(routed, 2, at=minutes(15)),
        message(never, 1, at=minutes(16)),  # no progress at all
        message(never, 2, at=minutes(17)),
        message(old, 1, at=minutes(5)),  # before the window
        message(recent, 1, at=minutes(21)),  # after the window
        message(partly, 1, at=minutes(9)),  # before the window and unrouted...
        message(partly, 2, at=minutes(18)),  # ...but this one is in it, and routed
    ]
    await store(
        uow_factory,
        conversations=[late, routed, never, old, recent, partly],
        messages=[(m, []) for m in messages],
    )
    async with uow_factory() as uow:
        await uow.routing.lock([late.id, routed.id, partly.id], at=T0)
        await uow.routing.advance({late.id: 1, routed.id: 2, partly.id: 2}, at=T0)
        await uow.commit()

    async with uow_factory() as uow:
        found = await uow.routing.behind(active_after=minutes(10), idle_since=minutes(20), limit=100)
        one = await uow.routing.behind(active_after=minutes(10), idle_since=minutes(20), limit=1)
        empty_window = await uow.routing.behind(active_after=minutes(30), idle_since=minutes(40), limit=100)

    assert found == {late.id: 3, never.id: 2}
    assert len(one) == 1 and set(one.items()) <= set(found.items())
    assert dict(empty_window) == {}


async def test_behind_forgets_a_conversation_once_routed_up_to_its_last_message(uow_factory: Backend) -> None:
    conv = group()
    await store(
        uow_factory, conversations=[conv], messages=[(message(conv, s, at=minutes(10 + s)), []) for s in (1, 2)]
    )

    async with uow_factory() as uow:
        await uow.routing.lock([conv.id], at=T0)
        await uow.routing.advance({conv.id: 2}, at=T0)
        await uow.commit()
    async with uow_factory() as uow:
        found = await uow.routing.behind(active_after=minutes(0), idle_since=minutes(60), limit=10)

    assert dict(found) == {}


# --- the send ledger -------------------------------------------------------------------


@pytest.fixture
async def platform_deliveries(uow_factory: Backend) -> list[Delivery]:
    """A message to bob on whatsapp, telegram and messenger, and to the contact on whatsapp."""
    conv = group()
    m = message(conv, 1)
    deliveries = [
        delivery(m, BOB, Channel.WHATSAPP),
        delivery(m, BOB, Channel.TELEGRAM),
        delivery(m, BOB, Channel.MESSENGER),
        delivery(m, CONTACT, Channel.WHATSAPP),
    ]
    await store(uow_factory, conversations=[conv], messages=[(m, deliveries)])
    return deliveries


async def test_sent_gives_the_platform_ids_of_recorded_deliveries_only(
    uow_factory: Backend, platform_deliveries: list[Delivery]
) -> None:
    wa, tg, ms, _ = (dl.key for dl in platform_deliveries)

    async with uow_factory() as uow:
        before = await uow.sends.sent([wa, tg, ms])
        await uow.sends.record([(wa, "wamid.1"), (tg, "777")], at=T0)
        await uow.commit()
    async with uow_factory() as uow:
        after = await uow.sends.sent([wa, tg, ms, unknown_key()])
        none = await uow.sends.sent([])

    assert dict(before) == {}
    assert after == {wa: "wamid.1", tg: "777"}
    assert dict(none) == {}


async def test_a_claim_is_fresh_once_and_then_reports_its_entry(
    uow_factory: Backend, platform_deliveries: list[Delivery]
) -> None:
    wa, tg, ms, _ = (dl.key for dl in platform_deliveries)
    async with uow_factory() as uow:
        await uow.sends.record([(ms, "mid.9")], at=T0)
        first = await uow.sends.claim([wa, tg, ms, unknown_key()], at=minutes(1))
        await uow.commit()
    async with uow_factory() as uow:
        second = await uow.sends.claim([wa, tg], at=minutes(2))
        sent = await uow.sends.sent([wa, tg, ms])

    assert first == {
        wa: SendClaim(platform_message_id=None, claimed_at=minutes(1), fresh=True),
        tg: SendClaim(platform_message_id=None, claimed_at=minutes(1), fresh=True),
        ms: SendClaim(platform_message_id="mid.9", claimed_at=T0, fresh=False),
    }  # the unknown delivery is absent
    assert second == {
        wa: SendClaim(platform_message_id=None, claimed_at=minutes(1), fresh=False),
        tg: SendClaim(platform_message_id=None, claimed_at=minutes(1), fresh=False),
    }
    assert sent == {ms: "mid.9"}  # an unfinished claim is not a send


async def test_a_claim_completes_with_the_platform_id_and_release_drops_only_unfinished_ones(
    uow_factory: Backend, platform_deliveries: list[Delivery]
) -> None:
    wa, tg, _, contact = (dl.key for dl in platform_deliveries)
    async with uow_factory() as uow:
        await uow.sends.claim([wa, tg, contact], at=T0)
        await uow.commit()
    async with uow_factory() as uow:
        await uow.sends.record([(wa, "wamid.1")], at=minutes(1))
        await uow.sends.release([wa, tg])
        await uow.commit()
    async with uow_factory() as uow:
        again = await uow.sends.claim([wa, tg, contact], at=minutes(2))
        found = await uow.sends.find(Channel.WHATSAPP, ["wamid.1"])

    assert again[wa].platform_message_id == "wamid.1"  # completed: release left it alone
    assert again[tg] == SendClaim(platform_message_id=None, claimed_at=minutes(2), fresh=True)  # released
    assert again[contact] == SendClaim(platform_message_id=None, claimed_at=T0, fresh=False)  # still claimed
    assert found == {"wamid.1": wa}


async def test_a_failed_delivery_is_claimed_only_when_reopened(
    uow_factory: Backend, platform_deliveries: list[Delivery]
) -> None:
    whatsapp, telegram, *_ = platform_deliveries
    async with uow_factory() as uow:
        assert telegram.advance(DeliveryStatus.FAILED, at=T0, error="bot was blocked")
        await uow.messages.save_progress([telegram])
        await uow.commit()
    async with uow_factory() as uow:
        read_again = await uow.sends.claim([whatsapp.key, telegram.key], at=minutes(1))
        await uow.commit()
    async with uow_factory() as uow:
        replayed = await uow.sends.claim([whatsapp.key, telegram.key], at=minutes(2), reopen=[telegram.key])
        await uow.commit()

    assert read_again == {whatsapp.key: SendClaim(platform_message_id=None, claimed_at=minutes(1), fresh=True)}
    assert replayed == {
        whatsapp.key: SendClaim(platform_message_id=None, claimed_at=minutes(1), fresh=False),
        telegram.key: SendClaim(platform_message_id=None, claimed_at=minutes(2), fresh=True),
    }


async def test_a_ledger_entry_that_is_not_committed_is_lost(
    uow_factory: Backend, platform_deliveries: list[Delivery]
) -> None:
    wa = platform_deliveries[0].key

    async with uow_factory() as uow:
        await uow.sends.record([(wa, "wamid.1")], at=T0)
        assert await uow.sends.sent([wa]) == {wa: "wamid.1"}
    async with uow_factory() as uow:
        assert dict(await uow.sends.sent([wa])) == {}
        assert dict(await uow.sends.find(Channel.WHATSAPP, ["wamid.1"])) == {}


async def test_a_delivery_recorded_twice_keeps_its_first_platform_id(
    uow_factory: Backend, platform_deliveries: list[Delivery]
) -> None:
    wa, tg, _, _ = (dl.key for dl in platform_deliveries)

    async with uow_factory() as uow:
        await uow.sends.record([(wa, "first")], at=T0)
        await uow.sends.record([], at=T0)
        await uow.commit()
    async with uow_factory() as uow:
        await uow.sends.record([(wa, "second"), (tg, "tg-1"), (tg, "tg-2")], at=LATER)
        await uow.commit()
    async with uow_factory() as uow:
        found = await uow.sends.sent([wa, tg])
        by_later_ids = await uow.sends.find(Channel.WHATSAPP, ["second"])
        by_first_id = await uow.sends.find(Channel.WHATSAPP, ["first"])

    assert found == {wa: "first", tg: "tg-1"}
    assert dict(by_later_ids) == {}
    assert by_first_id == {"first": wa}


async def test_find_maps_a_channels_platform_ids_back_to_deliveries(
    uow_factory: Backend, platform_deliveries: list[Delivery]
) -> None:
    bob_wa, bob_tg, bob_ms, contact_wa = (dl.key for dl in platform_deliveries)
    async with uow_factory() as uow:
        # Platform ids are only unique per platform: "42" on whatsapp and on telegram are two sends.
        await uow.sends.record([(bob_wa, "42"), (bob_tg, "42"), (bob_ms, "m.9"), (contact_wa, "wamid.7")], at=T0)
        await uow.commit()

    async with uow_factory() as uow:
        whatsapp = await uow.sends.find(Channel.WHATSAPP, ["42", "wamid.7", "m.9", "nope"])
        telegram = await uow.sends.find(Channel.TELEGRAM, ["42", "wamid.7"])
        instagram = await uow.sends.find(Channel.INSTAGRAM, ["42"])
        nothing = await uow.sends.find(Channel.WHATSAPP, [])
        recorded = await uow.sends.sent([bob_wa, bob_tg, bob_ms, contact_wa])

    assert whatsapp == {"42": bob_wa, "wamid.7": contact_wa}
    assert telegram == {"42": bob_tg}
    assert dict(instagram) == {}
    assert dict(nothing) == {}
    assert recorded == {bob_wa: "42", bob_tg: "42", bob_ms: "m.9", contact_wa: "wamid.7"}


# --- messages and deliveries -----------------------------------------------------------


async def test_in_range_is_the_conversations_messages_after_one_seq_up_to_another(uow_factory: Backend) -> None:
    conv, other = group(), group()
    mine = {seq: message(conv, seq) for seq in range(1, 6)}
    theirs = [message(other, seq) for seq in range(1, 6)]
    await store(
        uow_factory,
        conversations=[conv, other],
        messages=[(mine[s], []) for s in (3, 1, 5, 2, 4)] + [(m, []) for m in theirs],
    )

    async with uow_factory() as uow:
        middle = await uow.messages.in_ranges({conv.id: (1, 4)})
        everything = await uow.messages.in_ranges({conv.id: (0, 100)})
        both = await uow.messages.in_ranges({conv.id: (3, 5), other.id: (0, 2), ConversationId(uuid.uuid4()): (0, 9)})
        empty = await uow.messages.in_ranges({conv.id: (4, 4)})
        past_the_end = await uow.messages.in_ranges({conv.id: (5, 9)})
        unknown = await uow.messages.in_ranges({ConversationId(uuid.uuid4()): (0, 9)})

    assert [fields(m) for m in middle] == [fields(mine[s]) for s in (2, 3, 4)]
    assert [m.seq for m in everything] == [1, 2, 3, 4, 5]
    assert all(m.conversation_id == conv.id for m in everything)
    assert [m.seq for m in both if m.conversation_id == conv.id] == [4, 5]
    assert [m.seq for m in both if m.conversation_id == other.id] == [1, 2]
    assert len(both) == 4
    assert (list(empty), list(past_the_end), list(unknown)) == ([], [], [])


async def test_lock_deliveries_gives_the_current_state_of_the_named_deliveries(uow_factory: Backend) -> None:
    conv = group()
    m1, m2 = message(conv, 1), message(conv, 2)
    d1 = [
        delivery(m1, BOB, Channel.INTERNAL),
        delivery(m1, BOB, Channel.TELEGRAM),
        delivery(m1, CONTACT, Channel.WHATSAPP),
    ]
    d2 = [delivery(m2, BOB, Channel.INTERNAL)]
    await store(uow_factory, conversations=[conv], messages=[(m1, d1), (m2, d2)])
    async with uow_factory() as uow:
        telegram = (await uow.messages.deliveries([m1.id]))[1]
        assert telegram.advance(DeliveryStatus.FAILED, at=minutes(30), error="bot was blocked")
        assert telegram.advance(DeliveryStatus.DELIVERED, at=minutes(40))
        await uow.messages.save_progress([telegram])
        await uow.commit()

    async with uow_factory() as uow:
        found = await uow.messages.lock_deliveries(
            [
                d2[0].key,
                telegram.key,
                unknown_key(),  # no such message
                (m1.id, ALICE.key, Channel.INTERNAL),  # no such recipient
                (m2.id, BOB.key, Channel.TELEGRAM),  # no such channel
                telegram.key,  # asked twice
            ]
        )
        none = await uow.messages.lock_deliveries([])

    by_key = {dl.key: dl for dl in found}
    assert len(found) == 2
    assert set(by_key) == {telegram.key, d2[0].key}
    assert state(by_key[telegram.key]) == state(telegram)
    assert by_key[telegram.key].history == [
        StatusChange(DeliveryStatus.SENT, m1.created_at),
        StatusChange(DeliveryStatus.FAILED, minutes(30), "bot was blocked"),
        StatusChange(DeliveryStatus.DELIVERED, minutes(40)),
    ]
    assert state(by_key[d2[0].key]) == state(d2[0])
    assert list(none) == []


async def test_unsent_are_the_stale_platform_deliveries_nobody_handed_over(uow_factory: Backend) -> None:
    conv = group()
    cutoff = minutes(60)
    m1, m2, m3 = message(conv, 1, at=minutes(1)), message(conv, 2, at=minutes(2)), message(conv, 3, at=minutes(3))
    stale_contact = delivery(m3, CONTACT, Channel.WHATSAPP, at=minutes(5))  # the oldest waiting
    stale_bob = delivery(m1, BOB, Channel.TELEGRAM, at=minutes(20))
    stale_last = delivery(m2, BOB, Channel.INSTAGRAM, at=minutes(59))
    internal = delivery(m1, BOB, Channel.INTERNAL, at=minutes(1))
    handed_over = delivery(m1, CONTACT, Channel.WHATSAPP, at=minutes(2))
    delivered = delivery(m2, BOB, Channel.MESSENGER, at=minutes(3))
    failed = delivery(m2, CONTACT, Channel.WHATSAPP, at=minutes(4))
    fresh = delivery(m3, BOB, Channel.TELEGRAM, at=minutes(61))
    assert delivered.advance(DeliveryStatus.DELIVERED, at=minutes(6))
    assert failed.advance(DeliveryStatus.FAILED, at=minutes(7), error="blocked")
    await store(
        uow_factory,
        conversations=[conv],
        messages=[
            (m1, [internal, stale_bob, handed_over]),
            (m2, [delivered, failed, stale_last]),
            (m3, [stale_contact, fresh]),
        ],
    )
    async with uow_factory() as uow:
        await uow.sends.record([(handed_over.key, "wamid.1")], at=minutes(8))
        await uow.commit()

    async with uow_factory() as uow:
        found = await uow.messages.unsent(updated_before=cutoff, limit=100)
        oldest_two = await uow.messages.unsent(updated_before=cutoff, limit=2)
        earlier = await uow.messages.unsent(updated_before=minutes(20), limit=100)

    assert [state(dl) for dl in found] == [state(dl) for dl in (stale_contact, stale_bob, stale_last)]
    assert [dl.key for dl in oldest_two] == [stale_contact.key, stale_bob.key]
    assert [dl.key for dl in earlier] == [stale_contact.key]


# --- identities ------------------------------------------------------------------------


async def test_list_for_users_gives_every_identity_of_those_users_only(uow_factory: Backend) -> None:
    ana, bruno, carla = (UserId(uuid.uuid4()) for _ in range(3))

    def identity(user_id: UserId, address: str, minute: int) -> ChannelIdentity:
        return ChannelIdentity(user_id=user_id, address=ChannelAddress.parse(address), linked_at=minutes(minute))

    anas = [
        identity(ana, "whatsapp:+5511911110000", 1),
        identity(ana, "telegram:111", 2),
        identity(ana, "instagram:ana", 3),
    ]
    brunos = [identity(bruno, "telegram:222", 4)]
    carlas = [identity(carla, "whatsapp:+5511922220000", 5), identity(carla, "messenger:333", 6)]
    async with uow_factory() as uow:
        for i in [*anas, *carlas, *brunos]:
            await uow.identities.add(i)
        await uow.commit()

    def ordered(found: Sequence[ChannelIdentity]) -> list[ChannelIdentity]:
        return sorted(found, key=lambda i: (str(i.user_id), i.channel.value))

    async with uow_factory() as uow:
        found = await uow.identities.list_for_users([bruno, UserId(uuid.uuid4()), ana])
        just_carla = await uow.identities.list_for_users([carla])
        nobody = await uow.identities.list_for_users([])

    assert ordered(found) == ordered([*anas, *brunos])
    assert ordered(just_carla) == ordered(carlas)
    assert list(nobody) == []


async def test_unsent_before_names_what_must_reach_the_platform_first(uow_factory: Backend) -> None:
    conv, other = group(), group()
    ms = [message(conv, seq) for seq in range(1, 6)]
    elsewhere = message(other, 1)
    plan = {m.id: [delivery(m, BOB, Channel.TELEGRAM), delivery(m, BOB, Channel.INTERNAL)] for m in ms}
    plan[elsewhere.id] = [delivery(elsewhere, BOB, Channel.TELEGRAM)]
    await store(
        uow_factory,
        conversations=[conv, other],
        messages=[(m, plan[m.id]) for m in [*ms, elsewhere]],
    )
    telegram = {m.seq: plan[m.id][0] for m in ms}
    async with uow_factory() as uow:
        await uow.sends.record([(telegram[1].key, "t-1")], at=T0)  # handed over
        await uow.sends.claim([telegram[2].key], at=T0)  # claimed, outcome unknown: still missing
        failed = telegram[3]
        failed.advance(DeliveryStatus.FAILED, at=T0, error="blocked")
        await uow.messages.save_progress([failed])
        await uow.commit()

    async with uow_factory() as uow:
        below_five = await uow.messages.unsent_before({(conv.id, BOB.key, Channel.TELEGRAM): 5}, limit=10)
        limited = await uow.messages.unsent_before({(conv.id, BOB.key, Channel.TELEGRAM): 5}, limit=1)
        internal = await uow.messages.unsent_before({(conv.id, BOB.key, Channel.INTERNAL): 5}, limit=10)
        none = await uow.messages.unsent_before({}, limit=10)

    assert [dl.key for dl in below_five] == [telegram[2].key, telegram[4].key]  # oldest first
    assert [dl.key for dl in limited] == [telegram[2].key]
    assert list(internal) == [] and list(none) == []  # internal copies are never handed to a platform


# --- inbound: watermarks, address bindings, conversations created once -------------------------


async def test_sent_up_to_names_a_readers_deliveries_handed_over_by_then_and_still_below(
    uow_factory: Backend,
) -> None:
    conv = group()
    first, second, third = message(conv, 1), message(conv, 2), message(conv, 3)
    to_bob = [delivery(m, BOB, Channel.MESSENGER) for m in (first, second, third)]
    to_contact = delivery(first, CONTACT, Channel.WHATSAPP)
    await store(
        uow_factory,
        conversations=[conv],
        messages=[(first, [to_bob[0], to_contact]), (second, [to_bob[1]]), (third, [to_bob[2]])],
    )
    async with uow_factory() as uow:
        await uow.sends.record([(to_bob[1].key, "m.2")], at=minutes(2))
        await uow.sends.record([(to_bob[0].key, "m.1"), (to_contact.key, "wamid.1")], at=minutes(1))
        await uow.sends.record([(to_bob[2].key, "m.3")], at=minutes(10))
        await uow.commit()
    async with uow_factory() as uow:
        [dl] = await uow.messages.lock_deliveries([to_bob[1].key])
        dl.advance(DeliveryStatus.READ, at=minutes(3))
        await uow.messages.save_progress([dl])
        await uow.commit()

    async with uow_factory() as uow:
        unread = await uow.sends.sent_up_to(Channel.MESSENGER, [BOB.key], up_to=minutes(5), below=DeliveryStatus.READ)
        undelivered = await uow.sends.sent_up_to(
            Channel.MESSENGER, [BOB.key, CONTACT.key], up_to=minutes(10), below=DeliveryStatus.DELIVERED
        )
        other_channel = await uow.sends.sent_up_to(
            Channel.WHATSAPP, [BOB.key], up_to=minutes(10), below=DeliveryStatus.READ
        )
        nobody = await uow.sends.sent_up_to(Channel.MESSENGER, [], up_to=minutes(10), below=DeliveryStatus.READ)

    assert list(unread) == [to_bob[0].key]  # the second is read already, the third was sent later
    assert list(undelivered) == [to_bob[0].key, to_bob[2].key]  # oldest first; the contact is on whatsapp
    assert list(other_channel) == []
    assert list(nobody) == []


async def test_an_address_is_bound_to_the_conversation_that_last_sent_to_it(uow_factory: Backend) -> None:
    first, second = group(), group()
    address = ChannelAddress.parse("whatsapp:+5511999998888")
    other = ChannelAddress.parse("instagram:17841400000000001")
    await store(uow_factory, conversations=[first, second])

    async with uow_factory() as uow:
        before = await uow.bindings.bound(address)
        await uow.bindings.bind({address: first.id, other: second.id}, at=minutes(1))
        await uow.commit()
    async with uow_factory() as uow:
        await uow.bindings.bind({address: second.id}, at=minutes(2))
        await uow.bindings.bind({other: first.id}, at=T0)  # older than its binding: ignored
        await uow.bindings.bind({}, at=minutes(3))
        await uow.commit()
    async with uow_factory() as uow:
        now_bound = (await uow.bindings.bound(address), await uow.bindings.bound(other))

    assert before is None
    assert now_bound == (second.id, second.id)


async def test_a_binding_that_is_not_committed_is_lost(uow_factory: Backend) -> None:
    conv = group()
    address = ChannelAddress.parse("telegram:42")
    await store(uow_factory, conversations=[conv])

    async with uow_factory() as uow:
        await uow.bindings.bind({address: conv.id}, at=T0)
        assert await uow.bindings.bound(address) == conv.id
    async with uow_factory() as uow:
        assert await uow.bindings.bound(address) is None


async def test_add_if_absent_stores_a_conversation_once(uow_factory: Backend) -> None:
    conv = group()
    twin = attrs.evolve(conv, metadata={"second": True})

    async with uow_factory() as uow:
        stored = await uow.conversations.add_if_absent(conv)
        await uow.commit()
    async with uow_factory() as uow:
        again = await uow.conversations.add_if_absent(twin)
        await uow.commit()
    async with uow_factory() as uow:
        found = await uow.conversations.get(conv.id)

    assert (stored, again) == (True, False)
    assert found is not None
    assert found.members == conv.members
    assert dict(found.metadata) == dict(conv.metadata)


async def test_sent_up_to_leaves_out_a_send_whose_answer_is_not_recorded_and_unrecorded_up_to_names_its_reader(
    uow_factory: Backend,
) -> None:
    conv = group()
    m = message(conv, 1)
    to_bob = delivery(m, BOB, Channel.MESSENGER)
    to_contact = delivery(m, CONTACT, Channel.WHATSAPP)
    await store(uow_factory, conversations=[conv], messages=[(m, [to_bob, to_contact])])
    async with uow_factory() as uow:
        # Sending, or its worker died: the platform may have it, or may never get it.
        await uow.sends.claim([to_bob.key, to_contact.key], at=minutes(1))
        await uow.commit()

    async with uow_factory() as uow:
        covered = await uow.sends.sent_up_to(Channel.MESSENGER, [BOB.key], up_to=minutes(2), below=DeliveryStatus.READ)
        unrecorded = await uow.sends.unrecorded_up_to(
            Channel.MESSENGER, [CONTACT.key, BOB.key, BOB.key], up_to=minutes(2)
        )
        earlier = await uow.sends.unrecorded_up_to(Channel.MESSENGER, [BOB.key], up_to=T0)
        whatsapp = await uow.sends.unrecorded_up_to(Channel.WHATSAPP, [CONTACT.key], up_to=minutes(2))
        nobody = await uow.sends.unrecorded_up_to(Channel.MESSENGER, [], up_to=minutes(2))
    async with uow_factory() as uow:
        await uow.sends.record([(to_bob.key, "m.1")], at=minutes(3))
        await uow.commit()
    async with uow_factory() as uow:
        recorded = await uow.sends.sent_up_to(Channel.MESSENGER, [BOB.key], up_to=minutes(2), below=DeliveryStatus.READ)
        none_left = await uow.sends.unrecorded_up_to(Channel.MESSENGER, [BOB.key], up_to=minutes(2))

    assert list(covered) == []
    assert list(unrecorded) == [BOB.key]  # once, and only this channel's claims
    assert (list(earlier), list(whatsapp), list(nobody)) == ([], [CONTACT.key], [])
    assert list(recorded) == [to_bob.key]  # covered by its claim time once recorded
    assert list(none_left) == []


async def test_early_receipts_are_kept_once_taken_once_and_purged_when_stale(uow_factory: Backend) -> None:
    read = EarlyReceipt(Channel.MESSENGER, "m_1", DeliveryStatus.READ, minutes(2))
    delivered = EarlyReceipt(Channel.MESSENGER, "m_1", DeliveryStatus.DELIVERED, minutes(1))
    failed = EarlyReceipt(Channel.WHATSAPP, "wamid.1", DeliveryStatus.FAILED, minutes(1), "window closed")
    stale = EarlyReceipt(Channel.MESSENGER, "m_old", DeliveryStatus.READ, T0)
    async with uow_factory() as uow:
        await uow.early_receipts.keep([read, delivered, failed, read], at=LATER)
        await uow.early_receipts.keep([stale], at=T0)
        await uow.early_receipts.keep([], at=LATER)
        await uow.commit()

    async with uow_factory() as uow:
        taken = await uow.early_receipts.take(Channel.MESSENGER, ["m_1", "wamid.1", "unknown"])
        again = await uow.early_receipts.take(Channel.MESSENGER, ["m_1"])
        purged = await uow.early_receipts.purge(received_before=minutes(30), limit=10)
        whatsapp = await uow.early_receipts.take(Channel.WHATSAPP, ["wamid.1"])
        gone = await uow.early_receipts.take(Channel.MESSENGER, ["m_old"])
        await uow.commit()

    assert list(taken) == [delivered, read]  # oldest first; each once; only this channel's
    assert (list(again), purged, list(gone)) == ([], 1, [])
    assert list(whatsapp) == [failed]


async def test_a_delivery_saved_again_and_again_keeps_its_whole_history_once(uow_factory: Backend) -> None:
    conv = group()
    m = message(conv, 1)
    await store(uow_factory, conversations=[conv], messages=[(m, [delivery(m, BOB, Channel.TELEGRAM)])])
    key = (m.id, BOB.key, Channel.TELEGRAM)

    async with uow_factory() as uow:
        [dl] = await uow.messages.lock_deliveries([key])
        dl.record_handoff("42:1", at=minutes(2))  # a new entry, the same status
        await uow.messages.save_progress([dl])
        await uow.commit()
        dl.advance(DeliveryStatus.DELIVERED, at=minutes(3))  # the same object, saved again
        await uow.messages.save_progress([dl])
        await uow.commit()
    async with uow_factory() as uow:
        [dl] = await uow.messages.lock_deliveries([key])
        dl.advance(DeliveryStatus.READ, at=minutes(4))
        await uow.messages.save_progress([dl])
        await uow.rollback()  # not kept: the next save sends this entry again
        await uow.messages.save_progress([dl])
        await uow.commit()
    async with uow_factory() as uow:
        [stored] = await uow.messages.lock_deliveries([key])

    assert [(h.status, h.at) for h in stored.history] == [
        (DeliveryStatus.SENT, m.created_at),
        (DeliveryStatus.SENT, minutes(2)),
        (DeliveryStatus.DELIVERED, minutes(3)),
        (DeliveryStatus.READ, minutes(4)),
    ]
    assert (stored.status, stored.updated_at) == (DeliveryStatus.READ, minutes(4))


async def test_take_known_removes_the_kept_receipts_the_ledger_matches_now(
    uow_factory: Backend, platform_deliveries: list[Delivery]
) -> None:
    wa, tg, _, _ = (dl.key for dl in platform_deliveries)
    matched = EarlyReceipt(Channel.WHATSAPP, "wamid.1", DeliveryStatus.READ, minutes(2))
    earlier = EarlyReceipt(Channel.WHATSAPP, "wamid.1", DeliveryStatus.DELIVERED, minutes(1))
    other_channel = EarlyReceipt(Channel.TELEGRAM, "wamid.1", DeliveryStatus.READ, minutes(1))
    unknown = EarlyReceipt(Channel.WHATSAPP, "wamid.9", DeliveryStatus.READ, minutes(1))
    async with uow_factory() as uow:
        await uow.early_receipts.keep([matched, earlier, other_channel, unknown], at=T0)
        await uow.sends.record([(wa, "wamid.1"), (tg, "42:1")], at=T0)
        await uow.commit()

    async with uow_factory() as uow:
        taken = await uow.early_receipts.take_known(limit=10)
        again = await uow.early_receipts.take_known(limit=10)
        await uow.commit()
    async with uow_factory() as uow:
        left = await uow.early_receipts.take(Channel.TELEGRAM, ["wamid.1"])
        still_unknown = await uow.early_receipts.take(Channel.WHATSAPP, ["wamid.9"])

    assert list(taken) == [(earlier, wa), (matched, wa)]  # oldest first
    assert list(again) == []
    assert list(left) == [other_channel]  # telegram's "wamid.1" is no send of ours
    assert list(still_unknown) == [unknown]
