"""Read receipts on PostgreSQL: concurrent receipts for the same messages apply once."""

from __future__ import annotations

import asyncio

import pytest

from application import commands as c
from application.bus import MessageBus
from tests.integration.postgres.helpers import register, scalar, start

pytestmark = pytest.mark.integration


async def test_concurrent_read_receipts_record_each_read_once(bus: MessageBus, pool) -> None:
    alice, bob = await register(bus, "alice"), await register(bus, "bob")
    conv = await start(bus, alice, "bob")
    sent = [
        await bus.handle(c.SendMessage(sender=alice, conversation_id=conv, payload={"type": "text", "text": str(i)}))
        for i in range(3)
    ]

    receipts = await asyncio.gather(*(bus.handle(c.MarkRead(bob, sent[-1].message_id)) for _ in range(10)))

    assert len(set(receipts)) == 1  # every device is told the same first read time
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT message_id, array_agg(status ORDER BY position) FROM delivery_events GROUP BY message_id"
        )
        histories = dict(await cur.fetchall())
    assert histories == {a.message_id: ["SENT", "DELIVERED", "READ"] for a in sent}  # the read implies delivery
    assert await scalar(pool, "SELECT count(*) FROM deliveries WHERE status = 'READ'") == 3
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT payload->>'message_id' FROM outbox WHERE topic = 'chat.status'")
        announced = sorted(mid for (mid,) in await cur.fetchall())
    assert announced == sorted(str(a.message_id) for a in sent)  # each read is announced once
    status = await bus.handle(c.GetMessageStatus(alice, sent[0].message_id))
    assert status.status == "READ"
