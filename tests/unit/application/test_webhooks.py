"""Outbound webhooks on the in-memory adapters: subscriptions, the deliveries events make, signed attempts,
retries that keep the id, dead letters, replay, 410 Gone, and each conversation's order."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import pytest

from application import commands as c
from application import topics
from application.errors import NotFound
from application.pipeline import RetryPolicy
from application.ports import WebhookResponse, WebhookSender, WebhookUnreachable
from application.webhooks import DispatchDeps, dispatch_due, record_events, signature
from domain.errors import BusinessRuleViolation
from domain.ids import ConversationId
from domain.webhooks import WebhookDeliveryState
from tests.builders import Chat4All, FakeClock

pytestmark = pytest.mark.unit

URL = "https://hooks.example.com/chat4all"


class Receiver(WebhookSender):
    """Answers from a script (a status, or an exception), then 200; records every call."""

    def __init__(self, *script: int | Exception) -> None:
        self.script = list(script)
        self.calls: list[tuple[str, bytes, dict[str, str]]] = []

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> WebhookResponse:
        self.calls.append((url, body, dict(headers)))
        answer = self.script.pop(0) if self.script else 200
        if isinstance(answer, Exception):
            raise answer
        return WebhookResponse(answer, retry_after=None)

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body, _ in self.calls]


async def subscribe(app: Chat4All, who: str, *events: str, url: str = URL) -> Any:
    return await app.handle(c.CreateWebhook(app.users[who], url, list(events or ("message.created",))))


async def pump(app: Chat4All) -> int:
    """Record the deliveries of every event in the outbox so far (what the webhooks worker reads from the log)."""
    events = [e for t, _, e in app.store.state.outbox if t in (topics.MESSAGES, topics.STATUS, topics.ACTIVITY)]
    return await record_events(app.store.uow, app.clock, events)


def dispatcher(app: Chat4All, receiver: Receiver, *, attempts: int = 3) -> DispatchDeps:
    retry = RetryPolicy(max_attempts=attempts, base_delay=10.0, max_delay=300.0)
    return DispatchDeps(app.store.uow, app.clock, receiver, retry)


@pytest.fixture
async def pair(app: Chat4All) -> ConversationId:
    await app.register_all("ana", "bruno", "eve")
    return await app.start("ana", "bruno")


# --- subscriptions -----------------------------------------------------------------------------


async def test_a_webhook_shows_its_secret_once(app: Chat4All, pair: ConversationId) -> None:
    created = await subscribe(app, "ana", "message.created", "message.status")
    assert created.secret.startswith("whsec_") and len(created.secret) > 40
    assert created.events == ["message.created", "message.status"]
    (listed,) = await app.handle(c.ListWebhooks(app.users["ana"]))
    assert listed.webhook_id == created.webhook_id and listed.secret is None
    assert await app.handle(c.ListWebhooks(app.users["bruno"])) == []


@pytest.mark.parametrize(
    ("url", "events", "secret", "field"),
    [
        ("http://169.254.169.254/latest/meta-data", ["message.created"], None, "url"),
        ("http://10.0.0.5/hook", ["message.created"], None, "url"),
        ("http://127.0.0.1:9000/hook", ["message.created"], None, "url"),
        ("ftp://hooks.example.com/", ["message.created"], None, "url"),
        (URL, [], None, "events"),
        (URL, ["message.deleted"], None, "events"),
        (URL, ["message.created"], "short", "secret"),
    ],
)
async def test_a_webhook_that_may_not_be_is_refused_and_nothing_is_stored(
    app: Chat4All, pair: ConversationId, url: str, events: list[str], secret: str | None, field: str
) -> None:
    with pytest.raises(BusinessRuleViolation) as refused:
        await app.handle(c.CreateWebhook(app.users["ana"], url, events, secret))
    assert refused.value.field == field
    assert app.store.state.webhooks == {}


async def test_nobody_else_sees_deletes_or_replays_a_webhook(app: Chat4All, pair: ConversationId) -> None:
    hook = await subscribe(app, "ana")
    eve = app.users["eve"]
    with pytest.raises(NotFound):
        await app.handle(c.DeleteWebhook(eve, hook.webhook_id))
    with pytest.raises(NotFound):
        await app.handle(c.ListWebhookDeliveries(eve, hook.webhook_id))
    await app.handle(c.DeleteWebhook(app.users["ana"], hook.webhook_id))
    assert app.store.state.webhooks == {}


# --- from events to deliveries ---------------------------------------------------------------


async def test_members_hear_of_messages_and_senders_of_their_statuses_each_once(
    app: Chat4All, pair: ConversationId
) -> None:
    ana_created = await subscribe(app, "ana", "message.created")
    bruno_all = await subscribe(app, "bruno", "message.created", "message.status", "conversation.created")
    await subscribe(app, "eve", "message.created", "conversation.created")  # not a member: hears nothing
    sent = await app.send("bruno", pair, "olá")
    await app.handle(c.MarkRead(app.users["ana"], sent.message_id))

    assert await pump(app) == 4
    assert await pump(app) == 0  # the log is read again: nothing new
    by_hook: dict[Any, list[str]] = {}
    for d in sorted(app.store.state.webhook_deliveries.values(), key=lambda d: d.position):
        by_hook.setdefault(d.webhook_id, []).append(d.event.value)
    assert by_hook == {
        ana_created.webhook_id: ["message.created"],
        bruno_all.webhook_id: ["conversation.created", "message.created", "message.status"],
    }
    statuses = [
        json.loads(d.body)["data"]
        for d in app.store.state.webhook_deliveries.values()
        if d.event.value == "message.status"
    ]
    assert [s["status"] for s in statuses] == ["READ"]  # the internal delivery went straight to READ
    assert all(s["message_id"] == str(sent.message_id) for s in statuses)


async def test_a_completed_upload_is_told_to_its_owner(app: Chat4All, pair: ConversationId) -> None:
    hook = await subscribe(app, "ana", "file.completed")
    event = {
        "type": "file.completed",
        "file_id": "f-1",
        "owner": f"user:{app.users['ana']}",
        "filename": "a.pdf",
        "size": 3,
        "content_type": "application/pdf",
        "sha256": "ab",
        "completed_at": "2026-01-01T00:00:00+00:00",
    }
    assert await record_events(app.store.uow, app.clock, [event, {"type": "file.completed"}]) == 1
    (delivery,) = app.store.state.webhook_deliveries.values()
    assert delivery.webhook_id == hook.webhook_id
    assert json.loads(delivery.body)["data"]["filename"] == "a.pdf"


# --- attempts --------------------------------------------------------------------------------


async def test_an_attempt_posts_the_signed_body_with_its_headers(app: Chat4All, pair: ConversationId) -> None:
    hook = await subscribe(app, "ana")
    sent = await app.send("bruno", pair, "olá")
    await pump(app)
    receiver = Receiver()

    assert await dispatch_due(dispatcher(app, receiver)) == 1

    ((url, body, headers),) = receiver.calls
    document = json.loads(body)
    assert url == URL
    assert document["type"] == "message.created"
    assert document["data"]["message_id"] == str(sent.message_id)
    assert document["data"]["payload"] == {"type": "text", "text": "olá"}
    assert headers["X-Chat4All-Event"] == "message.created"
    assert headers["X-Chat4All-Delivery"] == document["id"]
    timestamp = headers["X-Chat4All-Timestamp"]
    expected = hmac.new(hook.secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    assert headers["X-Chat4All-Signature"] == f"sha256={expected}" == signature(hook.secret, int(timestamp), body)
    (delivery,) = app.store.state.webhook_deliveries.values()
    assert (delivery.state, delivery.attempts, delivery.last_status) == (WebhookDeliveryState.DELIVERED, 1, 200)


async def test_failed_attempts_are_retried_later_with_the_same_id_and_body_then_dead_then_replayed(
    app: Chat4All, clock: FakeClock, pair: ConversationId
) -> None:
    hook = await subscribe(app, "ana")
    await app.send("bruno", pair, "olá")
    await pump(app)
    receiver = Receiver(500, WebhookUnreachable("no answer within 15 s"), 503)
    d = dispatcher(app, receiver, attempts=3)

    assert await dispatch_due(d) == 1
    assert await dispatch_due(d) == 0  # not due yet: backing off
    (delivery,) = app.store.state.webhook_deliveries.values()
    assert (delivery.attempts, delivery.last_status, delivery.last_error) == (1, 500, "answered 500")
    assert timedelta(0) < delivery.next_attempt_at - clock.now() <= timedelta(seconds=10)  # jittered, up to base
    clock.advance(timedelta(seconds=10))
    assert await dispatch_due(d) == 1
    clock.advance(timedelta(seconds=20))
    assert await dispatch_due(d) == 1
    (dead,) = app.store.state.webhook_deliveries.values()
    assert (dead.state, dead.attempts, dead.last_status) == (WebhookDeliveryState.FAILED, 3, 503)
    assert len({body for _, body, _ in receiver.calls}) == 1  # one body, one id, every attempt
    assert len({h["X-Chat4All-Delivery"] for _, _, h in receiver.calls}) == 1

    ana = app.users["ana"]
    failed = await app.handle(c.ListWebhookDeliveries(ana, hook.webhook_id, state="failed"))
    assert [(x.delivery_id, x.attempts, x.last_status) for x in failed.items] == [(dead.id, 3, 503)]
    replayed = await app.handle(c.ReplayWebhookDelivery(ana, hook.webhook_id, dead.id))
    assert (replayed.state, replayed.attempts) == ("pending", 0)
    assert await dispatch_due(d) == 1
    assert receiver.bodies()[-1]["id"] == str(dead.id)
    assert app.store.state.webhook_deliveries[dead.id].state is WebhookDeliveryState.DELIVERED


async def test_a_receivers_retry_after_is_honoured(app: Chat4All, clock: FakeClock, pair: ConversationId) -> None:
    await subscribe(app, "ana")
    await app.send("bruno", pair)
    await pump(app)

    class Busy(Receiver):
        async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> WebhookResponse:
            self.calls.append((url, body, dict(headers)))
            return WebhookResponse(429, retry_after=120)

    await dispatch_due(dispatcher(app, Busy()))
    (delivery,) = app.store.state.webhook_deliveries.values()
    assert delivery.next_attempt_at - clock.now() == timedelta(seconds=120)


async def test_a_redirect_is_a_failed_attempt_not_followed(app: Chat4All, pair: ConversationId) -> None:
    await subscribe(app, "ana")
    await app.send("bruno", pair)
    await pump(app)
    await dispatch_due(dispatcher(app, Receiver(302)))
    (delivery,) = app.store.state.webhook_deliveries.values()
    assert delivery.state is WebhookDeliveryState.PENDING
    assert delivery.last_error == "answered 302 (redirects are not followed)"


async def test_410_gone_disables_the_webhook_and_abandons_what_waits(app: Chat4All, pair: ConversationId) -> None:
    hook = await subscribe(app, "ana")
    await app.send("bruno", pair, "first")
    await app.send("bruno", pair, "second")  # waits behind the first
    await pump(app)
    receiver = Receiver(410)
    d = dispatcher(app, receiver)

    await dispatch_due(d)
    await dispatch_due(d)

    webhook = app.store.state.webhooks[hook.webhook_id]
    assert not webhook.active and webhook.disabled_reason == "the receiver answered 410 Gone"
    assert {x.state for x in app.store.state.webhook_deliveries.values()} == {WebhookDeliveryState.FAILED}
    assert len(receiver.calls) == 1  # the second was given up without a call
    dead = next(iter(app.store.state.webhook_deliveries))
    with pytest.raises(BusinessRuleViolation):  # a disabled webhook's deliveries are not replayed
        await app.handle(c.ReplayWebhookDelivery(app.users["ana"], hook.webhook_id, dead))


async def test_each_conversations_events_reach_a_receiver_in_order(
    app: Chat4All, clock: FakeClock, pair: ConversationId
) -> None:
    await subscribe(app, "ana")
    other = await app.start("ana", "eve")
    for i in range(3):
        await app.send("bruno", pair, f"p{i}")
    await app.send("eve", other, "o0")
    await pump(app)
    receiver = Receiver(500)  # the first of the pair's messages fails once
    d = dispatcher(app, receiver)

    while await dispatch_due(d):
        pass
    clock.advance(timedelta(seconds=10))
    while await dispatch_due(d):
        pass

    texts = [b["data"]["payload"]["text"] for b in receiver.bodies()]
    assert texts == ["p0", "o0", "p0", "p1", "p2"]  # o0 did not wait; p1 and p2 waited for p0
