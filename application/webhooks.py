"""Outbound webhooks: subscriptions, the deliveries events make, and their signed attempts.

An event from the log (``message.created``, ``message.status``, ``conversation.created``,
``file.completed``) becomes one delivery per webhook whose owner may see it, recorded in the
database with a stable id (derived from the webhook and the event, so a re-read event records
nothing new). Dispatchers claim due deliveries, the first pending one of each (webhook,
conversation) only, so each conversation's events reach a receiver in order; they POST the same
body on every attempt, signed ``sha256=HMAC(secret, "<timestamp>.<body>")``, and retry with
exponential backoff and jitter for hours before a delivery becomes a dead letter that its owner
can list and replay.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import secrets
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import attrs

from application import commands as c
from application import topics
from application import views as v
from application.errors import NotFound, Unavailable
from application.handlers import Deps, bounded
from application.pipeline import RetryPolicy
from application.ports import Clock, DueDelivery, UnitOfWork, WebhookResponse, WebhookSender, WebhookUnreachable
from domain.conversations import Participant, ParticipantKind
from domain.errors import BusinessRuleViolation
from domain.ids import UserId, WebhookDeliveryId, WebhookId
from domain.webhooks import Webhook, WebhookDelivery, WebhookDeliveryState, WebhookEvent, parse_events

log = logging.getLogger("chat4all.webhooks.out")

TOPICS = (topics.MESSAGES, topics.STATUS, topics.ACTIVITY)
"""The topics webhook deliveries come from."""

_NAMESPACE = UUID("0b9b8c2e-5b54-4a40-9b39-6a3f3d6c3a11")


# --- subscriptions (the API) ---------------------------------------------------------------


def _view(w: Webhook, *, secret: bool = False) -> v.WebhookView:
    return v.WebhookView(
        webhook_id=w.id,
        url=w.url,
        events=sorted(e.value for e in w.events),
        created_at=w.created_at,
        disabled_at=w.disabled_at,
        disabled_reason=w.disabled_reason,
        secret=w.secret if secret else None,
    )


async def handle_create_webhook(cmd: c.CreateWebhook, d: Deps) -> v.WebhookView:
    """Subscribe a URL to some of the caller's events; the signing secret is shown this once."""
    if d.webhook_urls is None:
        raise Unavailable("outbound webhooks are not configured")
    try:
        url = d.webhook_urls.check(cmd.url)
    except ValueError as exc:
        raise BusinessRuleViolation(f"this URL may not receive webhooks: {exc}", field="url") from None
    webhook = Webhook.register(
        id=WebhookId(d.ids.new()),
        owner=cmd.owner,
        url=url,
        events=parse_events(cmd.events),
        secret=cmd.secret if cmd.secret is not None else "whsec_" + secrets.token_urlsafe(32),
        at=d.clock.now(),
    )
    async with d.uow() as uow:
        await uow.webhooks.add(webhook)
        await uow.commit()
    return _view(webhook, secret=True)


async def _owned(uow: UnitOfWork, webhook_id: WebhookId, owner: UserId) -> Webhook:
    webhook = await uow.webhooks.get(webhook_id)
    if webhook is None or webhook.owner != owner:
        raise NotFound("no such webhook")
    return webhook


async def handle_list_webhooks(cmd: c.ListWebhooks, d: Deps) -> list[v.WebhookView]:
    """The caller's webhooks (without their secrets)."""
    async with d.uow() as uow:
        return [_view(w) for w in await uow.webhooks.list_for(cmd.owner)]


async def handle_delete_webhook(cmd: c.DeleteWebhook, d: Deps) -> None:
    """Unsubscribe: nothing more is sent, pending deliveries included."""
    async with d.uow() as uow:
        await _owned(uow, cmd.webhook_id, cmd.owner)
        await uow.webhooks.remove(cmd.webhook_id)
        await uow.commit()


def _delivery_view(dl: WebhookDelivery) -> v.WebhookDeliveryView:
    return v.WebhookDeliveryView(
        delivery_id=dl.id,
        webhook_id=dl.webhook_id,
        event=dl.event.value,
        state=dl.state.value,
        attempts=dl.attempts,
        last_status=dl.last_status,
        last_error=dl.last_error,
        created_at=dl.created_at,
        next_attempt_at=dl.next_attempt_at if dl.state is WebhookDeliveryState.PENDING else None,
        delivered_at=dl.delivered_at,
        body=json.loads(dl.body),
    )


async def handle_list_webhook_deliveries(cmd: c.ListWebhookDeliveries, d: Deps) -> v.WebhookDeliveryPage:
    """A webhook's deliveries, newest first, optionally only those in one state (``failed``: the dead letters)."""
    limit = bounded(cmd.limit, d.settings.list_max, field="limit")
    state = None
    if cmd.state is not None:
        try:
            state = WebhookDeliveryState(cmd.state)
        except ValueError:
            known = ", ".join(s.value for s in WebhookDeliveryState)
            raise BusinessRuleViolation(f"state is one of {known}", field="state") from None
    before = None
    if cmd.cursor is not None:
        try:
            before = int(cmd.cursor)
        except ValueError:
            raise BusinessRuleViolation("not a cursor of this list", field="cursor") from None
    async with d.uow() as uow:
        await _owned(uow, cmd.webhook_id, cmd.owner)
        found = await uow.webhooks.deliveries_of(cmd.webhook_id, state=state, before=before, limit=limit + 1)
    page = found[:limit]
    more = len(found) > limit
    return v.WebhookDeliveryPage(
        items=[_delivery_view(x) for x in page], next_cursor=str(page[-1].position) if more else None
    )


async def handle_replay_webhook_delivery(cmd: c.ReplayWebhookDelivery, d: Deps) -> v.WebhookDeliveryView:
    """Send a delivery again (a dead letter, or one delivered already): a new round of attempts, same id and body."""
    async with d.uow() as uow:
        webhook = await _owned(uow, cmd.webhook_id, cmd.owner)
        if not webhook.active:
            raise BusinessRuleViolation(f"the webhook is disabled: {webhook.disabled_reason}", field="webhook_id")
        delivery = await uow.webhooks.get_delivery(cmd.webhook_id, cmd.delivery_id)
        if delivery is None:
            raise NotFound("no such delivery")
        delivery.replay(at=d.clock.now())
        await uow.webhooks.save_delivery(delivery)
        await uow.commit()
    return _delivery_view(delivery)


WEBHOOK_HANDLERS: Mapping[type, Callable[[Any, Deps], Any]] = {
    c.CreateWebhook: handle_create_webhook,
    c.ListWebhooks: handle_list_webhooks,
    c.DeleteWebhook: handle_delete_webhook,
    c.ListWebhookDeliveries: handle_list_webhook_deliveries,
    c.ReplayWebhookDelivery: handle_replay_webhook_delivery,
}


# --- from events to deliveries ---------------------------------------------------------------


@attrs.frozen
class _Audience:
    event: WebhookEvent
    owners: frozenset[UserId]
    ordering_key: str
    event_key: str
    occurred_at: str
    data: Mapping[str, Any]


def _users(keys: Iterable[str]) -> frozenset[UserId]:
    found: set[UserId] = set()
    for key in keys:
        try:
            p = Participant.from_key(key)
        except ValueError:
            continue
        if p.kind is ParticipantKind.USER and p.user_id is not None:
            found.add(p.user_id)
    return frozenset(found)


def _audience(event: Mapping[str, Any]) -> _Audience | None:
    """Which event this is, who may hear of it, and what they are told; None for events no webhook carries."""
    kind = event.get("type")
    if kind == "message.created":
        members = _users([event["from"], *(dl["recipient"] for dl in event.get("deliveries", ()))])
        data = {k: event[k] for k in ("message_id", "conversation_id", "seq", "from", "payload", "created_at")}
        data["metadata"] = event.get("metadata", {})
        return _Audience(
            WebhookEvent.MESSAGE_CREATED,
            members,
            str(event["conversation_id"]),
            f"message.created:{event['message_id']}",
            str(event["created_at"]),
            data,
        )
    if kind == "message.status":
        data = {
            k: event[k] for k in ("message_id", "conversation_id", "recipient", "channel", "status", "at") if k in event
        }
        if "error" in event:
            data["error"] = event["error"]
        key = f"message.status:{event['message_id']}:{event['recipient']}:{event['channel']}:{event['status']}"
        return _Audience(
            WebhookEvent.MESSAGE_STATUS,
            _users([str(event.get("sender", ""))]),
            str(event["conversation_id"]),
            key,
            str(event["at"]),
            data,
        )
    if kind == "conversation.created":
        data = {
            "conversation_id": event["conversation_id"],
            "type": event["conversation_type"],
            "members": list(event["members"]),
            "created_by": event["created_by"],
            "metadata": event.get("metadata", {}),
            "created_at": event["created_at"],
        }
        return _Audience(
            WebhookEvent.CONVERSATION_CREATED,
            _users(event["members"]),
            str(event["conversation_id"]),
            f"conversation.created:{event['conversation_id']}",
            str(event["created_at"]),
            data,
        )
    if kind == "file.completed":
        data = {k: event[k] for k in ("file_id", "filename", "size", "content_type", "sha256", "completed_at")}
        return _Audience(
            WebhookEvent.FILE_COMPLETED,
            _users([str(event["owner"])]),
            str(event["file_id"]),
            f"file.completed:{event['file_id']}",
            str(event["completed_at"]),
            data,
        )
    return None


def delivery_id(webhook_id: WebhookId, event_key: str) -> WebhookDeliveryId:
    """The one id of an event's delivery to a webhook, however often the event is read."""
    return WebhookDeliveryId(uuid.uuid5(_NAMESPACE, f"{webhook_id}/{event_key}"))


def _body(id: WebhookDeliveryId, audience: _Audience) -> bytes:
    document = {"id": str(id), "type": audience.event.value, "created_at": audience.occurred_at, "data": audience.data}
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


async def record_events(uow: Callable[[], UnitOfWork], clock: Clock, events: Sequence[Mapping[str, Any]]) -> int:
    """Record the deliveries ``events`` make (in the events' order); return how many are new.

    Events that are malformed or that no webhook carries are skipped.
    """
    audiences: list[_Audience] = []
    for event in events:
        try:
            audience = _audience(event)
        except (KeyError, TypeError) as exc:
            log.warning("skipping a malformed %s event: missing %s", event.get("type"), exc)
            continue
        if audience is not None and audience.owners:
            audiences.append(audience)
    if not audiences:
        return 0
    now = clock.now()
    async with uow() as u:
        hooks = await u.webhooks.subscribed({o for a in audiences for o in a.owners}, {a.event for a in audiences})
        if not hooks:
            return 0
        deliveries: list[WebhookDelivery] = []
        for audience in audiences:
            for hook in hooks:
                if hook.owner in audience.owners and hook.wants(audience.event):
                    id = delivery_id(hook.id, audience.event_key)
                    deliveries.append(
                        WebhookDelivery(
                            id=id,
                            webhook_id=hook.id,
                            event=audience.event,
                            ordering_key=audience.ordering_key,
                            body=_body(id, audience),
                            created_at=now,
                            next_attempt_at=now,
                        )
                    )
        added = await u.webhooks.add_deliveries(deliveries)
        await u.commit()
    return added


# --- attempts --------------------------------------------------------------------------------


WEBHOOK_RETRIES = RetryPolicy(max_attempts=18, base_delay=5.0, max_delay=3600.0)
"""Each wait a random time up to 5 s, 10 s, 20 s ... doubling to an hour; 18 attempts take about 4 hours on
average (8 at most). A receiver's Retry-After wins when longer."""


@attrs.frozen
class DispatchDeps:
    uow: Callable[[], UnitOfWork]
    clock: Clock
    sender: WebhookSender
    retry: RetryPolicy = WEBHOOK_RETRIES
    lease: timedelta = timedelta(seconds=60)
    """How long a claimed delivery is left to its dispatcher: longer than an attempt can take."""
    observe: Callable[[str], None] = lambda _: None
    """Told each attempt's outcome: delivered, retrying, dead, gone (metrics)."""


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """``sha256=`` and the hex HMAC-SHA256 of ``"<timestamp>.<body>"`` under ``secret``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def headers_for(due: DueDelivery, *, at: datetime) -> dict[str, str]:
    timestamp = int(at.timestamp())
    return {
        "Content-Type": "application/json",
        "User-Agent": "Chat4All-Webhooks/1",
        "X-Chat4All-Event": due.delivery.event.value,
        "X-Chat4All-Delivery": str(due.delivery.id),
        "X-Chat4All-Timestamp": str(timestamp),
        "X-Chat4All-Signature": signature(due.webhook.secret, timestamp, due.delivery.body),
    }


async def _attempt(d: DispatchDeps, due: DueDelivery) -> tuple[WebhookDelivery, Webhook | None]:
    """One attempt; returns the delivery as it now stands, and its webhook if the attempt disabled it."""
    delivery, webhook = due.delivery, due.webhook
    if not webhook.active:
        delivery.abandon(f"the webhook is disabled: {webhook.disabled_reason}")
        return delivery, None
    response: WebhookResponse | None = None
    try:
        response = await d.sender.post(webhook.url, delivery.body, headers_for(due, at=d.clock.now()))
    except WebhookUnreachable as exc:
        error = exc.reason
    now = d.clock.now()
    if response is not None and 200 <= response.status < 300:
        delivery.succeeded(response.status, at=now)
        d.observe("delivered")
        return delivery, None
    status = response.status if response is not None else None
    if status == 410:  # Gone: the receiver wants no more (Standard Webhooks)
        webhook.disable("the receiver answered 410 Gone", at=now)
        delivery.failed(status, "410 Gone: the webhook is disabled", retry_at=None)
        d.observe("gone")
        return delivery, webhook
    if response is not None:
        error = f"answered {status}" + (" (redirects are not followed)" if 300 <= response.status < 400 else "")
    if delivery.attempts + 1 >= d.retry.max_attempts:
        delivery.failed(status, error, retry_at=None)
        d.observe("dead")
        log.warning(
            "webhook delivery is a dead letter after %d attempts: %s",
            delivery.attempts,
            error,
            extra={
                "delivery_id": str(delivery.id),
                "webhook_id": str(webhook.id),
                "webhook_event": delivery.event.value,
            },
        )
        return delivery, None
    retry_after = response.retry_after if response is not None else None
    wait = timedelta(seconds=d.retry.delay(delivery.attempts + 1, retry_after))
    delivery.failed(status, error, retry_at=now + wait)
    d.observe("retrying")
    return delivery, None


async def dispatch_due(d: DispatchDeps, *, limit: int = 100) -> int:
    """Claim the deliveries due now, attempt each once and record the outcomes; return how many were attempted.

    The claimed deliveries are attempted concurrently: each is the first pending one of its conversation.
    """
    async with d.uow() as uow:
        claimed = await uow.webhooks.claim_due(at=d.clock.now(), lease=d.lease, limit=limit)
        await uow.commit()
    if not claimed:
        return 0
    outcomes = await asyncio.gather(*(_attempt(d, due) for due in claimed))
    try:
        async with d.uow() as uow:
            for delivery, disabled in outcomes:
                await uow.webhooks.save_delivery(delivery)
                if disabled is not None:
                    await uow.webhooks.save(disabled)
            await uow.commit()
    except Unavailable:
        # The leases lapse and the deliveries are attempted again: receivers dedupe by the delivery id.
        log.warning("could not record %d webhook attempts; they will be made again", len(outcomes))
        raise
    return len(claimed)
