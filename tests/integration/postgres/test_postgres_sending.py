"""Accepting messages on PostgreSQL under concurrency: gap-free positions, idempotency, atomicity."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from application import commands as c
from application.bus import MessageBus
from application.errors import Conflict, Forbidden
from domain.errors import BusinessRuleViolation
from domain.ids import MessageId
from tests.integration.postgres.helpers import register, scalar, start, table_contents

pytestmark = pytest.mark.integration

SENDERS, EACH = 20, 25


def text(body: str) -> dict[str, str]:
    return {"type": "text", "text": body}


async def test_concurrent_senders_get_every_position_exactly_once(bus: MessageBus, pool) -> None:
    names = [f"sender{i:02d}" for i in range(SENDERS)]
    users = [await register(bus, n) for n in names]
    conv = await start(bus, users[0], *names[1:])

    async def send_all(index: int) -> list:
        return [
            await bus.handle(c.SendMessage(sender=users[index], conversation_id=conv, payload=text(f"{index}/{n}")))
            for n in range(EACH)
        ]

    answers = await asyncio.gather(*(send_all(i) for i in range(SENDERS)))

    total = SENDERS * EACH
    accepted = [a for per_sender in answers for a in per_sender]
    assert sorted(a.seq for a in accepted) == list(range(1, total + 1))
    for per_sender in answers:  # each sender's own messages keep their order
        assert [a.seq for a in per_sender] == sorted(a.seq for a in per_sender)
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT id, seq, content->>'text' FROM messages WHERE conversation_id = %s", (conv,))
        stored = {mid: (seq, body) for mid, seq, body in await cur.fetchall()}
    assert len(stored) == total
    assert {mid: seq for mid, (seq, _) in stored.items()} == {a.message_id: a.seq for a in accepted}
    for i, per_sender in enumerate(answers):
        assert [stored[a.message_id][1] for a in per_sender] == [f"{i}/{n}" for n in range(EACH)]
    assert await scalar(pool, "SELECT last_seq FROM conversations WHERE id = %s", conv) == total
    others = SENDERS - 1  # every message goes to the 19 other members, on internal only
    assert await scalar(pool, "SELECT count(*) FROM deliveries") == total * others
    assert await scalar(pool, "SELECT count(*) FROM delivery_events") == total * others
    assert await scalar(pool, "SELECT count(*) FROM outbox WHERE topic = 'chat.messages'") == total
    assert await scalar(pool, "SELECT count(DISTINCT (payload->>'seq')::int) FROM outbox") == total


def another_process(bus: MessageBus) -> MessageBus:
    """A bus of its own over the same database, as in another API process: its own batches."""
    return MessageBus(bus.deps)


async def test_batches_from_several_processes_interleave_without_gaps_or_deadlocks(bus: MessageBus, pool) -> None:
    alice = await register(bus, "alice")
    others = [f"member{i}" for i in range(8)]
    for name in others:
        await register(bus, name)
    conversations = [await start(bus, alice, name) for name in others]
    buses = [bus, *(another_process(bus) for _ in range(3))]

    async def sender(b: MessageBus, order: list) -> list:
        # Every sender touches every conversation, each in its own order: batches lock many rows.
        return await asyncio.gather(
            *(b.handle(c.SendMessage(sender=alice, conversation_id=conv, payload=text("hi"))) for conv in order * 5)
        )

    orders = [conversations, conversations[::-1], conversations[3:] + conversations[:3], conversations[1::2] * 2]
    answers = [a for batch in await asyncio.gather(*map(sender, buses, orders)) for a in batch]

    per_conversation: dict = {}
    for a in answers:
        per_conversation.setdefault(a.conversation_id, []).append(a.seq)
    assert {conv: sorted(seqs) for conv, seqs in per_conversation.items()} == {
        conv: list(range(1, len(seqs) + 1)) for conv, seqs in per_conversation.items()
    }
    assert await scalar(pool, "SELECT count(*) FROM messages") == len(answers) == 4 * 8 * 5


async def test_the_same_message_id_from_several_processes_is_accepted_once(bus: MessageBus, pool) -> None:
    alice, _ = await register(bus, "alice"), await register(bus, "bob")
    conv = await start(bus, alice, "bob")
    buses = [bus, *(another_process(bus) for _ in range(4))]
    sends = [
        c.SendMessage(sender=alice, conversation_id=conv, payload=text(f"n{n}"), message_id=MessageId(uuid.uuid4()))
        for n in range(10)
    ]

    # Each process receives every send (clients retrying through different API processes).
    answers = await asyncio.gather(*(b.handle(send) for send in sends for b in buses))

    by_id: dict = {}
    for a in answers:
        by_id.setdefault(a.message_id, set()).add(a)
    assert set(by_id) == {s.message_id for s in sends}
    assert all(len(same) == 1 for same in by_id.values())
    assert sorted(next(iter(same)).seq for same in by_id.values()) == list(range(1, 11))
    assert await scalar(pool, "SELECT count(*) FROM messages") == 10
    assert await scalar(pool, "SELECT count(*) FROM outbox WHERE topic = 'chat.messages'") == 10
    assert await scalar(pool, "SELECT last_seq FROM conversations WHERE id = %s", conv) == 10


async def test_concurrent_retries_of_one_message_are_accepted_once(bus: MessageBus, pool) -> None:
    alice, _ = await register(bus, "alice"), await register(bus, "bob")
    conv = await start(bus, alice, "bob")
    send = c.SendMessage(sender=alice, conversation_id=conv, payload=text("once"), message_id=MessageId(uuid.uuid4()))

    answers = await asyncio.gather(*(bus.handle(send) for _ in range(30)))

    assert len(set(answers)) == 1
    assert answers[0].message_id == send.message_id
    assert answers[0].seq == 1
    assert await scalar(pool, "SELECT count(*) FROM messages") == 1
    assert await scalar(pool, "SELECT count(*) FROM deliveries") == 1
    assert await scalar(pool, "SELECT count(*) FROM outbox WHERE topic = 'chat.messages'") == 1
    assert await scalar(pool, "SELECT last_seq FROM conversations WHERE id = %s", conv) == 1
    follow_up = await bus.handle(c.SendMessage(sender=alice, conversation_id=conv, payload=text("next")))
    assert follow_up.seq == 2


async def test_a_reused_message_id_with_another_body_is_a_conflict(bus: MessageBus, pool) -> None:
    alice, _ = await register(bus, "alice"), await register(bus, "bob")
    conv = await start(bus, alice, "bob")
    mid = MessageId(uuid.uuid4())
    first = await bus.handle(c.SendMessage(sender=alice, conversation_id=conv, payload=text("one"), message_id=mid))
    before = await table_contents(pool)

    with pytest.raises(Conflict) as raised:
        await bus.handle(c.SendMessage(sender=alice, conversation_id=conv, payload=text("two"), message_id=mid))
    replay = await bus.handle(c.SendMessage(sender=alice, conversation_id=conv, payload=text("one"), message_id=mid))

    assert raised.value.field == "message_id"
    assert replay == first
    assert await table_contents(pool) == before
    assert await scalar(pool, "SELECT content->>'text' FROM messages WHERE id = %s", mid) == "one"


@pytest.mark.parametrize(
    ("error", "overrides"),
    [
        pytest.param(Forbidden, {"sender": "carol"}, id="not a member"),
        pytest.param(BusinessRuleViolation, {"metadata": {f"k{i}": i for i in range(51)}}, id="after seq reserved"),
        pytest.param(BusinessRuleViolation, {"to": ["nobody-here"]}, id="unknown recipient"),
        pytest.param(BusinessRuleViolation, {"channels": ["telegram"]}, id="unreachable channel"),
        pytest.param(
            BusinessRuleViolation, {"payload": {"type": "file", "file_id": str(uuid.uuid4())}}, id="no upload"
        ),
    ],
)
async def test_a_rejected_message_leaves_no_trace(
    bus: MessageBus, pool, error: type[Exception], overrides: dict[str, object]
) -> None:
    users = {n: await register(bus, n) for n in ("alice", "bob", "carol")}
    conv = await start(bus, users["alice"], "bob")
    args: dict[str, object] = {"sender": users["alice"], "conversation_id": conv, "payload": text("hi")}
    args.update(overrides)
    if "sender" in overrides:
        args["sender"] = users[str(overrides["sender"])]
    before = await table_contents(pool)

    with pytest.raises(error):
        await bus.handle(c.SendMessage(**args, message_id=MessageId(uuid.uuid4())))  # type: ignore[arg-type]

    assert await table_contents(pool) == before
    accepted = await bus.handle(c.SendMessage(sender=users["alice"], conversation_id=conv, payload=text("hi")))
    assert accepted.seq == 1  # a reservation that was rolled back is given again
