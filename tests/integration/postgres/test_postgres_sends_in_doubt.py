"""Sends in doubt on PostgreSQL: the platform's echoes, applied by the status worker while channel workers
record and send, complete the ledger once, without deadlocks, and watermarks wait for what was never sent."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from adapters.postgres import Pool, PostgresUnitOfWork
from adapters.system import SystemClock
from application import commands as c
from application import topics
from application.bus import MessageBus
from application.pipeline import (
    ChannelDeps,
    CircuitBreaker,
    DeliveryJob,
    Outcome,
    PipelineDeps,
    Receipt,
    RetryPolicy,
    Watermark,
    apply_receipts,
    deliver_jobs,
    relay_outbox,
    route_events,
)
from application.ports import OutboundMessage
from domain.channels import Channel, ChannelAddress
from domain.deliveries import DeliveryStatus
from tests.builders import FakePublisher, ScriptedConnector
from tests.integration.postgres.helpers import register, start

pytestmark = pytest.mark.integration

PSID = "1254459154682919"


async def messages_to_bia(bus: MessageBus, pool: Pool, count: int) -> tuple[PipelineDeps, list[DeliveryJob]]:
    """ana sends bia, who is on messenger, ``count`` messages; their messenger jobs, routed, in seq order."""
    ana, bia = await register(bus, "ana"), await register(bus, "bia")
    await bus.handle(c.LinkIdentity(bia, "messenger", PSID))
    conversation = await start(bus, ana, "bia")
    for n in range(count):
        await bus.handle(
            c.SendMessage(sender=ana, conversation_id=conversation, payload={"type": "text", "text": f"{n}"})
        )
    log = FakePublisher()
    deps = PipelineDeps(uow=lambda: PostgresUnitOfWork(pool), clock=SystemClock(), publisher=log)
    while await relay_outbox(deps):
        pass
    await route_events(deps, log.on(topics.MESSAGES))
    jobs = [DeliveryJob.from_event(e) for e in log.on(topics.outbound(Channel.MESSENGER))]
    return deps, sorted(jobs, key=lambda j: j.seq)


def channel_deps(
    deps: PipelineDeps, connector: ScriptedConnector, *, echo_grace: timedelta = timedelta(seconds=10)
) -> ChannelDeps:
    return ChannelDeps(
        pipeline=deps,
        connector=connector,
        breaker=CircuitBreaker(deps.clock, threshold=100),
        retry=RetryPolicy(max_attempts=1),
        echo_grace=echo_grace,
    )


def echo(job: DeliveryJob, platform_id: str) -> Receipt:
    return Receipt(
        job.channel, DeliveryStatus.SENT, datetime.now(UTC), platform_message_id=platform_id, delivery=job.key
    )


async def handoffs(pool: Pool) -> dict[str, int]:
    """How often each messenger delivery's history tells its hand-over, by message text."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT m.content->>'text', count(e.*) FROM messages m"
            " JOIN deliveries d ON d.message_id = m.id AND d.channel = 'messenger'"
            " LEFT JOIN delivery_events e ON e.message_id = d.message_id AND e.recipient_key = d.recipient_key"
            " AND e.channel = d.channel AND e.detail LIKE 'messenger accepted it as %%'"
            " GROUP BY 1"
        )
        return dict(await cur.fetchall())


async def statuses(pool: Pool) -> dict[str, str]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT m.content->>'text', d.status FROM messages m JOIN deliveries d ON d.message_id = m.id"
            " WHERE d.channel = 'messenger'"
        )
        return dict(await cur.fetchall())


async def test_echoes_applied_while_the_worker_sends_and_records_complete_each_send_once(
    bus: MessageBus, pool: Pool
) -> None:
    deps, jobs = await messages_to_bia(bus, pool, 12)
    echoing: set[asyncio.Task[int]] = set()

    class EchoesAsItGoes(ScriptedConnector):
        async def send(self, message: OutboundMessage) -> str:
            platform_id = await super().send(message)
            job = next(j for j in jobs if j.key == message.delivery)
            # The status worker applies the echo in its own transaction while this worker goes on.
            echoing.add(asyncio.create_task(apply_receipts(deps, [echo(job, platform_id)])))
            await asyncio.sleep(0.005)
            return platform_id

    platform = EchoesAsItGoes(Channel.MESSENGER, echoes=True)
    results = await deliver_jobs(channel_deps(deps, platform), jobs)
    await asyncio.gather(*echoing)

    assert [r.outcome for r in results] == [Outcome.HANDED_OVER] * 12
    assert platform.calls == 12
    assert await handoffs(pool) == {f"{n}": 1 for n in range(12)}  # told once, by whichever completed it


async def test_a_dead_workers_batch_is_settled_from_its_echoes_and_a_watermark_waits_for_the_rest(
    bus: MessageBus, pool: Pool
) -> None:
    deps, jobs = await messages_to_bia(bus, pool, 6)
    async with PostgresUnitOfWork(pool) as uow:  # the dead worker claimed the batch...
        await uow.sends.claim([j.key for j in jobs], at=deps.clock.now())
        await uow.commit()
    # ...sent the first three (their echoes come), and died before sending the rest.
    await apply_receipts(deps, [echo(j, f"m_dead_{j.seq}") for j in jobs[:3]])
    now = datetime.now(UTC)
    delivered = Watermark(
        channel=Channel.MESSENGER,
        reader=ChannelAddress.of(Channel.MESSENGER, PSID),
        status=DeliveryStatus.DELIVERED,
        up_to=now,
        at=now,
    )
    await apply_receipts(deps, [delivered])
    after_watermark = await statuses(pool)
    platform = ScriptedConnector(Channel.MESSENGER, echoes=True)

    results = await deliver_jobs(channel_deps(deps, platform, echo_grace=timedelta(0)), jobs)

    assert [r.outcome for r in results] == [Outcome.ALREADY_SENT] * 3 + [Outcome.HANDED_OVER] * 3
    assert [m.delivery for m in platform.accepted] == [j.key for j in jobs[3:]]  # only what never went out
    assert after_watermark == {"0": "DELIVERED", "1": "DELIVERED", "2": "DELIVERED"} | {
        f"{n}": "SENT" for n in (3, 4, 5)
    }
    assert await statuses(pool) == after_watermark  # sent after the watermark: not covered by it
    assert await handoffs(pool) == {f"{n}": 1 for n in range(6)}
