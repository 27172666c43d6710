"""The pipeline's locks on PostgreSQL: relays claim disjoint batches, routers queue per conversation, inserts notify."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import psycopg
import pytest

from adapters.postgres import Pool, PostgresUnitOfWork, open_pool
from application.ports import OutboxRecord
from domain.ids import ConversationId
from tests.builders import T0, a_conversation

pytestmark = pytest.mark.integration

CHANNEL = "chat4all_outbox"


@pytest.fixture
async def pool(postgres_url: str) -> AsyncIterator[Pool]:
    """Room for two units of work, a bystander and a monitoring connection at once."""
    pool = await open_pool(postgres_url, 2, 8)
    try:
        yield pool
    finally:
        await pool.close()


async def queue(pool: Pool, count: int) -> None:
    async with PostgresUnitOfWork(pool) as uow:
        for n in range(count):
            await uow.outbox.add("chat.messages", f"k{n % 3}", {"type": "message.created", "n": n})
        await uow.commit()


async def a_stored_conversation(pool: Pool) -> ConversationId:
    conv = a_conversation()
    async with PostgresUnitOfWork(pool) as uow:
        await uow.conversations.add(conv)
        await uow.commit()
    return conv.id


async def waiting_on_a_lock(pool: Pool, *, within: float = 10.0) -> bool:
    """True once some other backend waits on a heavyweight lock (a row lock held by a transaction)."""
    deadline = asyncio.get_running_loop().time() + within
    async with pool.connection() as conn:
        while asyncio.get_running_loop().time() < deadline:
            cur = await conn.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'"
            )
            row = await cur.fetchone()
            if row is not None and row[0] > 0:
                return True
            await asyncio.sleep(0.02)
    return False


# --- the outbox relay ------------------------------------------------------------------


async def test_concurrent_claims_get_disjoint_batches_that_cover_every_row(pool: Pool) -> None:
    await queue(pool, 10)
    relays = 3
    all_claimed = asyncio.Barrier(relays)

    async def relay() -> list[OutboxRecord]:
        async with PostgresUnitOfWork(pool) as uow:
            records = list(await uow.outbox.claim(4))
            await all_claimed.wait()  # every relay holds its claim while the others claim theirs
            await uow.outbox.mark_published([r.id for r in records], at=T0)
            await uow.commit()
        return records

    batches = await asyncio.wait_for(asyncio.gather(*(relay() for _ in range(relays))), timeout=30)

    ids = [[r.id for r in batch] for batch in batches]
    flat = [i for batch in ids for i in batch]
    assert sorted(len(batch) for batch in ids) == [2, 4, 4]
    assert len(flat) == len(set(flat)) == 10  # disjoint, and together every row
    assert all(batch == sorted(batch) for batch in ids)
    async with PostgresUnitOfWork(pool) as uow:
        assert list(await uow.outbox.claim(100)) == []
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT array_agg(id ORDER BY id) FROM outbox WHERE published_at IS NOT NULL")
        row = await cur.fetchone()
    assert row is not None and row[0] == sorted(flat)


async def test_a_claim_does_not_wait_for_a_relay_holding_other_rows(pool: Pool) -> None:
    await queue(pool, 5)

    async with PostgresUnitOfWork(pool) as first:
        held = await first.outbox.claim(3)
        async with PostgresUnitOfWork(pool) as second:
            rest = await asyncio.wait_for(second.outbox.claim(100), timeout=5)
            again_by_second = await asyncio.wait_for(second.outbox.claim(100), timeout=5)
    async with PostgresUnitOfWork(pool) as third:  # both ended without commit: everything is claimable
        again = await third.outbox.claim(100)

    assert [r.payload["n"] for r in held] == [0, 1, 2]
    assert [r.payload["n"] for r in rest] == [3, 4]
    assert [r.id for r in again_by_second] == [r.id for r in rest]  # its own locks do not hide rows from itself
    assert [r.id for r in again] == [r.id for r in [*held, *rest]]


# --- routing progress ------------------------------------------------------------------


@pytest.mark.parametrize("routed_before", [0, 3], ids=["never routed", "routed before"])
async def test_a_second_lock_of_a_conversation_waits_for_the_first_unit_of_work(pool: Pool, routed_before: int) -> None:
    conv = await a_stored_conversation(pool)
    other = await a_stored_conversation(pool)
    if routed_before:
        async with PostgresUnitOfWork(pool) as uow:
            await uow.routing.lock([conv], at=T0)
            await uow.routing.advance({conv: routed_before}, at=T0)
            await uow.commit()
    second_locked = asyncio.Event()

    async def second_router() -> dict[ConversationId, int]:
        async with PostgresUnitOfWork(pool) as uow:
            found = dict(await uow.routing.lock([conv], at=T0))
            second_locked.set()
            await uow.commit()
        return found

    async with PostgresUnitOfWork(pool) as first:
        assert await first.routing.lock([conv], at=T0) == {conv: routed_before}
        second = asyncio.create_task(second_router())
        try:
            assert await waiting_on_a_lock(pool), "the second lock should wait on the first unit of work"
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(second_locked.wait(), timeout=0.3)
            assert not second.done()
            async with PostgresUnitOfWork(pool) as bystander:  # another conversation is not held up
                assert await asyncio.wait_for(bystander.routing.lock([other], at=T0), timeout=5) == {other: 0}
            await first.routing.advance({conv: 7}, at=T0)
            await first.commit()
        except BaseException:
            second.cancel()
            raise

    assert await asyncio.wait_for(second, timeout=10) == {conv: 7}


async def test_a_lock_released_by_rollback_gives_the_unchanged_seq(pool: Pool) -> None:
    conv = await a_stored_conversation(pool)

    async def second_router() -> dict[ConversationId, int]:
        async with PostgresUnitOfWork(pool) as uow:
            return dict(await uow.routing.lock([conv], at=T0))

    async with PostgresUnitOfWork(pool) as first:
        await first.routing.lock([conv], at=T0)
        second = asyncio.create_task(second_router())
        assert await waiting_on_a_lock(pool)
        await first.routing.advance({conv: 5}, at=T0)
        # and no commit: leaving rolls the advance back and releases the lock

    assert await asyncio.wait_for(second, timeout=10) == {conv: 0}


# --- the relay's wake-up -----------------------------------------------------------------


async def test_a_committed_outbox_insert_notifies_the_listeners(postgres_url: str, pool: Pool) -> None:
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as listener:
        await listener.execute(f"LISTEN {CHANNEL}")

        async with pool.connection() as conn:  # an insert rolled back notifies nobody
            async with conn.transaction(force_rollback=True):
                await conn.execute("INSERT INTO outbox (topic, key, payload) VALUES ('t', 'k', '{}')")
        silent = [n async for n in listener.notifies(timeout=0.5)]

        await queue(pool, 3)  # three rows in one transaction: one wake-up
        woken = [n async for n in listener.notifies(timeout=1.0)]

    assert silent == []
    assert [(n.channel, n.payload) for n in woken] == [(CHANNEL, "")]


async def test_reserving_seqs_does_not_block_a_router_recording_its_progress(pool: Pool) -> None:
    # An accepting transaction holds its conversations until it commits; the router's progress
    # rows reference conversations (a foreign key, checked with a KEY SHARE lock). The two must
    # not wait on each other, or a batch of sends and a router deadlock.
    conv = await a_stored_conversation(pool)
    async with PostgresUnitOfWork(pool) as accepting:
        await accepting.conversations.reserve_seqs({conv: 1}, at=T0)
        async with PostgresUnitOfWork(pool) as router:
            progress = await asyncio.wait_for(router.routing.lock([conv], at=T0), timeout=5)
            await asyncio.wait_for(router.routing.advance({conv: 1}, at=T0), timeout=5)
            await router.commit()
        await accepting.commit()

    assert progress == {conv: 0}
