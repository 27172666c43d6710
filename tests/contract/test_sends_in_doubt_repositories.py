"""What settles sends in doubt, on the in-memory twin and PostgreSQL: the send ledger's record (what it
completed, with the claim times), its take-over of unfinished claims, and the early watermarks kept for
claims whose answer is not recorded yet."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import pytest

from application.ports import DeliveryKey, EarlyWatermark, SendClaim
from domain.channels import Channel, ChannelAddress
from domain.conversations import Conversation, Participant
from domain.deliveries import Delivery, DeliveryStatus
from domain.ids import MessageId, UserId
from domain.messages import Message, TextContent
from tests.builders import T0, a_conversation, a_message
from tests.contract.backends import Backend, store

pytestmark = pytest.mark.contract

ALICE, BOB = Participant.user(UserId(uuid.uuid4())), Participant.user(UserId(uuid.uuid4()))
CONTACT = Participant.contact(ChannelAddress.parse("messenger:1254459154682919"))


def minutes(n: float) -> datetime:
    return T0 + timedelta(minutes=n)


def group() -> Conversation:
    assert ALICE.user_id is not None
    return a_conversation(creator=ALICE.user_id, others=[BOB, CONTACT])


def message(conv: Conversation, seq: int) -> Message:
    return a_message(
        conv, sender=ALICE, seq=seq, recipients=(BOB, CONTACT), at=minutes(seq), content=TextContent(f"m{seq}")
    )


def to(m: Message, recipient: Participant, channel: Channel = Channel.MESSENGER) -> Delivery:
    return Delivery.accepted(message_id=m.id, recipient=recipient, channel=channel, at=m.created_at)


@pytest.fixture
async def three(uow_factory: Backend) -> list[DeliveryKey]:
    """Three messages to bob on messenger, and the first to the contact on messenger."""
    conv = group()
    messages = [message(conv, n) for n in (1, 2, 3)]
    deliveries = [[to(m, BOB)] for m in messages]
    deliveries[0].append(to(messages[0], CONTACT))
    await store(uow_factory, conversations=[conv], messages=list(zip(messages, deliveries, strict=True)))
    return [*(d[0].key for d in deliveries), deliveries[0][1].key]


def watermark(reader: str, status: DeliveryStatus, up_to: datetime, *, at: datetime | None = None) -> EarlyWatermark:
    return EarlyWatermark(channel=Channel.MESSENGER, reader=reader, status=status, up_to=up_to, at=at or up_to)


async def test_record_returns_the_entries_it_completed_with_their_claim_times(
    uow_factory: Backend, three: list[DeliveryKey]
) -> None:
    claimed, unclaimed, done, contact = three
    async with uow_factory() as uow:
        await uow.sends.claim([claimed], at=minutes(1))
        await uow.sends.record([(done, "m.done")], at=minutes(1))
        await uow.commit()

    async with uow_factory() as uow:
        completed = await uow.sends.record(
            [
                (claimed, "m.1"),
                (unclaimed, "m.2"),  # its claim was released: the entry is made now
                (done, "m.other"),  # completed already: keeps its id
                (contact, "m.done"),  # an id the ledger holds for another delivery (a forged or replayed echo)
                (claimed, "m.again"),
            ],
            at=minutes(5),
        )
        nothing = await uow.sends.record([], at=minutes(5))
        await uow.commit()
    async with uow_factory() as uow:
        sent = await uow.sends.sent(three)

    assert dict(completed) == {claimed: minutes(1), unclaimed: minutes(5)}
    assert dict(nothing) == {}
    assert sent == {claimed: "m.1", unclaimed: "m.2", done: "m.done"}


async def test_take_over_claims_anew_only_unfinished_claims_still_claimed_when_seen(
    uow_factory: Backend, three: list[DeliveryKey]
) -> None:
    in_doubt, taken_meanwhile, completed, contact = three
    unknown: DeliveryKey = (MessageId(uuid.uuid4()), BOB.key, Channel.MESSENGER)
    async with uow_factory() as uow:
        await uow.sends.claim([in_doubt, taken_meanwhile, completed], at=T0)
        await uow.sends.record([(completed, "m.3")], at=minutes(1))
        await uow.commit()
    async with uow_factory() as uow:
        # Another worker took this one over just before us.
        assert set(await uow.sends.take_over({taken_meanwhile: T0}, at=minutes(1))) == {taken_meanwhile}
        await uow.commit()

    async with uow_factory() as uow:
        taken = await uow.sends.take_over(
            {in_doubt: T0, taken_meanwhile: T0, completed: T0, contact: T0, unknown: T0}, at=minutes(2)
        )
        none = await uow.sends.take_over({}, at=minutes(2))
        await uow.commit()
    async with uow_factory() as uow:
        claims = await uow.sends.claim([in_doubt, taken_meanwhile, completed], at=minutes(3))

    assert set(taken) == {in_doubt}
    assert set(none) == set()
    assert claims == {
        in_doubt: SendClaim(platform_message_id=None, claimed_at=minutes(2), fresh=False),
        taken_meanwhile: SendClaim(platform_message_id=None, claimed_at=minutes(1), fresh=False),
        completed: SendClaim(platform_message_id="m.3", claimed_at=T0, fresh=False),
    }


async def test_a_take_over_that_is_not_committed_is_lost(uow_factory: Backend, three: list[DeliveryKey]) -> None:
    key = three[0]
    async with uow_factory() as uow:
        await uow.sends.claim([key], at=T0)
        await uow.commit()

    async with uow_factory() as uow:
        assert set(await uow.sends.take_over({key: T0}, at=minutes(1))) == {key}
    async with uow_factory() as uow:
        assert set(await uow.sends.take_over({key: T0}, at=minutes(2))) == {key}


async def test_early_watermarks_cover_sends_claimed_by_their_time_and_before_they_came(
    uow_factory: Backend, three: list[DeliveryKey]
) -> None:
    first, second, third, contact = three
    async with uow_factory() as uow:
        await uow.early_watermarks.keep(
            [
                watermark(BOB.key, DeliveryStatus.READ, minutes(2)),
                watermark(BOB.key, DeliveryStatus.DELIVERED, minutes(3)),
                watermark(BOB.key, DeliveryStatus.DELIVERED, minutes(1)),  # reaches less far: the other is kept
                watermark(CONTACT.key, DeliveryStatus.READ, minutes(10)),
            ],
            at=minutes(4),
        )
        await uow.early_watermarks.keep([], at=minutes(4))
        await uow.commit()

    async with uow_factory() as uow:
        covering = await uow.early_watermarks.covering(
            Channel.MESSENGER, {first: minutes(1), second: minutes(2.5), third: minutes(3.5), contact: minutes(5)}
        )
        other_channel = await uow.early_watermarks.covering(Channel.WHATSAPP, {first: minutes(1)})
        nothing = await uow.early_watermarks.covering(Channel.MESSENGER, {})

    assert sorted(((key, w.status, w.up_to) for key, w in covering), key=lambda c: (c[1], str(c[0]))) == sorted(
        [
            (first, DeliveryStatus.DELIVERED, minutes(3)),
            (first, DeliveryStatus.READ, minutes(2)),
            (second, DeliveryStatus.DELIVERED, minutes(3)),
            # the third was claimed after the furthest watermark; the contact's claim after it was received
        ],
        key=lambda c: (c[1], str(c[0])),
    )
    assert [w.status for _, w in covering][-1] is DeliveryStatus.READ  # DELIVERED first
    assert (list(other_channel), list(nothing)) == ([], [])


async def test_a_watermark_reaching_further_replaces_the_kept_one_and_purge_forgets_old_ones(
    uow_factory: Backend, three: list[DeliveryKey]
) -> None:
    first = three[0]
    async with uow_factory() as uow:
        await uow.early_watermarks.keep([watermark(BOB.key, DeliveryStatus.READ, minutes(1))], at=minutes(1))
        await uow.early_watermarks.keep([watermark(CONTACT.key, DeliveryStatus.READ, minutes(1))], at=minutes(1))
        await uow.commit()
    async with uow_factory() as uow:
        await uow.early_watermarks.keep([watermark(BOB.key, DeliveryStatus.READ, minutes(5))], at=minutes(6))
        await uow.early_watermarks.keep([watermark(CONTACT.key, DeliveryStatus.READ, T0)], at=minutes(6))  # older
        await uow.commit()

    async with uow_factory() as uow:
        purged = await uow.early_watermarks.purge(received_before=minutes(2), limit=10)
        await uow.commit()
    async with uow_factory() as uow:
        left = await uow.early_watermarks.covering(Channel.MESSENGER, {first: minutes(4)})
        again = await uow.early_watermarks.purge(received_before=minutes(2), limit=10)

    assert purged == 1  # the contact's: the older watermark left its receipt time alone
    assert [(key, w.up_to) for key, w in left] == [(first, minutes(5))]
    assert again == 0


async def test_an_early_watermark_that_is_not_committed_is_lost(uow_factory: Backend, three: list[DeliveryKey]) -> None:
    async with uow_factory() as uow:
        await uow.early_watermarks.keep([watermark(BOB.key, DeliveryStatus.READ, minutes(5))], at=minutes(5))
    async with uow_factory() as uow:
        assert list(await uow.early_watermarks.covering(Channel.MESSENGER, {three[0]: minutes(1)})) == []


async def test_known_names_recorded_sends_a_recent_watermark_covers_that_are_still_below_it(
    uow_factory: Backend, three: list[DeliveryKey]
) -> None:
    first, second, third, contact = three
    async with uow_factory() as uow:
        await uow.sends.claim([first, second, third, contact], at=minutes(1))
        await uow.sends.record([(first, "m.1"), (second, "m.2"), (contact, "m.c")], at=minutes(2))  # third in doubt
        [dl] = await uow.messages.lock_deliveries([second])
        dl.advance(DeliveryStatus.READ, at=minutes(2))  # already read
        await uow.messages.save_progress([dl])
        await uow.early_watermarks.keep([watermark(BOB.key, DeliveryStatus.READ, minutes(3))], at=minutes(4))
        await uow.early_watermarks.keep([watermark(CONTACT.key, DeliveryStatus.READ, minutes(3))], at=T0)  # old
        await uow.commit()

    async with uow_factory() as uow:
        known = await uow.early_watermarks.known(received_after=minutes(1), limit=10)
        limited = await uow.early_watermarks.known(received_after=minutes(1), limit=0)
        none_recent = await uow.early_watermarks.known(received_after=minutes(5), limit=10)

    assert [(key, w.status, w.up_to) for key, w in known] == [(first, DeliveryStatus.READ, minutes(3))]
    assert (list(limited), list(none_recent)) == ([], [])
