"""Webhooks and their delivery log, on the in-memory twin and on PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest

from domain.ids import UserId, WebhookDeliveryId, WebhookId
from domain.users import User
from domain.webhooks import Webhook, WebhookDelivery, WebhookDeliveryState, WebhookEvent
from tests.builders import T0
from tests.contract.backends import Backend, store

pytestmark = pytest.mark.contract

LEASE = timedelta(seconds=60)
CREATED, STATUS = WebhookEvent.MESSAGE_CREATED, WebhookEvent.MESSAGE_STATUS


async def an_owner(backend: Backend) -> UserId:
    user = User.register(
        id=UserId(uuid.uuid4()), username=f"u{uuid.uuid4().hex[:10]}", password_hash="h", display_name=None, at=T0
    )
    await store(backend, users=[user])
    return user.id


async def a_webhook(backend: Backend, owner: UserId, *events: WebhookEvent) -> Webhook:
    webhook = Webhook.register(
        id=WebhookId(uuid.uuid4()),
        owner=owner,
        url="https://hooks.example.com/in",
        events=frozenset(events or (CREATED,)),
        secret="s" * 32,
        at=T0,
    )
    async with backend() as uow:
        await uow.webhooks.add(webhook)
        await uow.commit()
    return webhook


def a_delivery(webhook: Webhook, key: str = "conv-1", body: bytes = b"{}") -> WebhookDelivery:
    return WebhookDelivery(
        id=WebhookDeliveryId(uuid.uuid4()),
        webhook_id=webhook.id,
        event=CREATED,
        ordering_key=key,
        body=body,
        created_at=T0,
        next_attempt_at=T0,
    )


async def record(backend: Backend, *deliveries: WebhookDelivery) -> int:
    async with backend() as uow:
        added = await uow.webhooks.add_deliveries(list(deliveries))
        await uow.commit()
    return added


async def claim(backend: Backend, *, at: object = T0, limit: int = 10) -> list[WebhookDelivery]:
    async with backend() as uow:
        due = await uow.webhooks.claim_due(at=at, lease=LEASE, limit=limit)  # type: ignore[arg-type]
        await uow.commit()
    return [d.delivery for d in due]


async def save(backend: Backend, delivery: WebhookDelivery) -> None:
    async with backend() as uow:
        await uow.webhooks.save_delivery(delivery)
        await uow.commit()


async def test_a_webhook_is_stored_listed_disabled_and_removed(uow_factory: Backend) -> None:
    ana, bob = await an_owner(uow_factory), await an_owner(uow_factory)
    first = await a_webhook(uow_factory, ana, CREATED, STATUS)
    second = await a_webhook(uow_factory, ana, STATUS)
    await a_webhook(uow_factory, bob, CREATED)

    async with uow_factory() as uow:
        found = await uow.webhooks.get(first.id)
        listed = await uow.webhooks.list_for(ana)
        wanting_created = await uow.webhooks.subscribed([ana], [CREATED])
        wanting_either = await uow.webhooks.subscribed([ana, bob], [STATUS])
    assert found is not None
    assert (found.url, found.events, found.secret, found.created_at) == (first.url, first.events, first.secret, T0)
    assert [w.id for w in listed] == sorted([first.id, second.id], key=lambda i: (T0, str(i)))
    assert [w.id for w in wanting_created] == [first.id]
    assert {w.id for w in wanting_either} == {first.id, second.id}

    first.disable("the receiver answered 410 Gone", at=T0 + timedelta(hours=1))
    async with uow_factory() as uow:
        await uow.webhooks.save(first)
        await uow.webhooks.remove(second.id)
        await uow.commit()
    async with uow_factory() as uow:
        disabled = await uow.webhooks.get(first.id)
        assert await uow.webhooks.get(second.id) is None
        assert await uow.webhooks.subscribed([ana], [CREATED, STATUS]) == []
    assert disabled is not None and disabled.disabled_reason == "the receiver answered 410 Gone"


async def test_a_delivery_is_recorded_once_however_often_its_event_is_read(uow_factory: Backend) -> None:
    webhook = await a_webhook(uow_factory, await an_owner(uow_factory))
    delivery = a_delivery(webhook, body=b'{"id":"x"}')
    assert await record(uow_factory, delivery) == 1
    assert await record(uow_factory, delivery, a_delivery(webhook)) == 1
    async with uow_factory() as uow:
        stored = await uow.webhooks.get_delivery(webhook.id, delivery.id)
        elsewhere = await uow.webhooks.get_delivery(WebhookId(uuid.uuid4()), delivery.id)
    assert stored is not None and elsewhere is None
    assert (stored.body, stored.state, stored.attempts, stored.ordering_key) == (
        b'{"id":"x"}',
        WebhookDeliveryState.PENDING,
        0,
        "conv-1",
    )


async def test_only_the_first_pending_delivery_of_each_conversation_is_due(uow_factory: Backend) -> None:
    webhook = await a_webhook(uow_factory, await an_owner(uow_factory))
    a1, a2, b1 = a_delivery(webhook, "a"), a_delivery(webhook, "a"), a_delivery(webhook, "b")
    await record(uow_factory, a1, a2, b1)

    claimed = await claim(uow_factory)
    assert {d.id for d in claimed} == {a1.id, b1.id}
    assert await claim(uow_factory) == []  # leased: nobody else takes them, nor what waits behind them

    first = next(d for d in claimed if d.id == a1.id)
    first.failed(500, "answered 500", retry_at=T0 + timedelta(seconds=30))
    await save(uow_factory, first)
    assert await claim(uow_factory) == []  # a1 waits for its retry, and a2 for a1
    assert [d.id for d in await claim(uow_factory, at=T0 + timedelta(seconds=30))] == [a1.id]


async def test_a_delivered_or_dead_delivery_lets_the_next_one_go(uow_factory: Backend) -> None:
    webhook = await a_webhook(uow_factory, await an_owner(uow_factory))
    a1, a2, a3 = (a_delivery(webhook, "a") for _ in range(3))
    await record(uow_factory, a1, a2, a3)
    (first,) = await claim(uow_factory)
    first.succeeded(204, at=T0)
    await save(uow_factory, first)
    (second,) = await claim(uow_factory)
    assert second.id == a2.id
    second.failed(None, "timed out", retry_at=None)
    await save(uow_factory, second)
    (third,) = await claim(uow_factory)
    assert third.id == a3.id


async def test_a_lease_that_ends_lets_another_dispatcher_claim_the_delivery(uow_factory: Backend) -> None:
    webhook = await a_webhook(uow_factory, await an_owner(uow_factory))
    delivery = a_delivery(webhook)
    await record(uow_factory, delivery)
    assert len(await claim(uow_factory)) == 1
    assert await claim(uow_factory, at=T0 + LEASE - timedelta(seconds=1)) == []
    assert [d.id for d in await claim(uow_factory, at=T0 + LEASE)] == [delivery.id]  # its dispatcher died


async def test_concurrent_dispatchers_never_claim_the_same_delivery(uow_factory: Backend) -> None:
    webhook = await a_webhook(uow_factory, await an_owner(uow_factory))
    deliveries = [a_delivery(webhook, f"conv-{i}") for i in range(20)]
    await record(uow_factory, *deliveries)
    batches = await asyncio.gather(*(claim(uow_factory, limit=5) for _ in range(6)))
    ids = [d.id for batch in batches for d in batch]
    assert len(ids) == len(set(ids)) == 20


async def test_deliveries_are_listed_newest_first_by_state_and_page(uow_factory: Backend) -> None:
    webhook = await a_webhook(uow_factory, await an_owner(uow_factory))
    deliveries = [a_delivery(webhook, f"conv-{i}") for i in range(5)]
    await record(uow_factory, *deliveries)
    dead = deliveries[1]
    dead.failed(500, "answered 500", retry_at=None)
    await save(uow_factory, dead)

    async with uow_factory() as uow:
        page = await uow.webhooks.deliveries_of(webhook.id, state=None, before=None, limit=3)
        rest = await uow.webhooks.deliveries_of(webhook.id, state=None, before=page[-1].position, limit=3)
        failed = await uow.webhooks.deliveries_of(webhook.id, state=WebhookDeliveryState.FAILED, before=None, limit=9)
    assert [d.id for d in [*page, *rest]] == [d.id for d in reversed(deliveries)]
    assert [(d.id, d.attempts, d.last_status, d.last_error) for d in failed] == [(dead.id, 1, 500, "answered 500")]


async def test_removing_a_webhook_removes_its_deliveries(uow_factory: Backend) -> None:
    webhook = await a_webhook(uow_factory, await an_owner(uow_factory))
    delivery = a_delivery(webhook)
    await record(uow_factory, delivery)
    async with uow_factory() as uow:
        await uow.webhooks.remove(webhook.id)
        await uow.commit()
    assert await claim(uow_factory) == []
    async with uow_factory() as uow:
        assert await uow.webhooks.get_delivery(webhook.id, delivery.id) is None
