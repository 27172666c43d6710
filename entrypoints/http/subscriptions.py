"""REST for outbound webhooks: subscribe URLs to events, list them, and see and replay their deliveries."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

import msgspec
from litestar import Controller, delete, get, post
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.status_codes import HTTP_204_NO_CONTENT

from application import commands as c
from application import views as v
from domain.ids import WebhookDeliveryId, WebhookId
from entrypoints.http.controllers import BEARER, AuthedRequest, Bus, Limit

Url = Annotated[str, msgspec.Meta(max_length=2048)]
EventName = Annotated[str, msgspec.Meta(max_length=64)]


class WebhookIn(msgspec.Struct):
    url: Url
    events: Annotated[list[EventName], msgspec.Meta(min_length=1, max_length=16)]
    secret: Annotated[str, msgspec.Meta(max_length=256)] | None = None


class WebhookOut(msgspec.Struct, omit_defaults=True):
    webhook_id: UUID
    url: str
    events: list[str]
    created_at: datetime
    active: bool
    disabled_at: datetime | None = None
    disabled_reason: str | None = None
    secret: str | None = None
    """Only in the answer that created it: the key of every signature."""


class WebhookList(msgspec.Struct):
    items: list[WebhookOut]


class DeliveryOut(msgspec.Struct):
    delivery_id: UUID
    webhook_id: UUID
    event: str
    state: str
    attempts: int
    last_status: int | None
    last_error: str | None
    created_at: datetime
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    body: dict[str, Any]
    """What every attempt POSTs (its ``id`` is the ``X-Chat4All-Delivery`` header)."""


class DeliveryPage(msgspec.Struct):
    items: list[DeliveryOut]
    next_cursor: str | None


def _webhook_out(w: v.WebhookView) -> WebhookOut:
    return WebhookOut(
        webhook_id=w.webhook_id,
        url=w.url,
        events=list(w.events),
        created_at=w.created_at,
        active=w.disabled_at is None,
        disabled_at=w.disabled_at,
        disabled_reason=w.disabled_reason,
        secret=w.secret,
    )


def _delivery_out(d: v.WebhookDeliveryView) -> DeliveryOut:
    return DeliveryOut(
        delivery_id=d.delivery_id,
        webhook_id=d.webhook_id,
        event=d.event,
        state=d.state,
        attempts=d.attempts,
        last_status=d.last_status,
        last_error=d.last_error,
        created_at=d.created_at,
        next_attempt_at=d.next_attempt_at,
        delivered_at=d.delivered_at,
        body=dict(d.body),
    )


class WebhooksController(Controller):
    path = "/v1/webhooks"
    tags = ["webhooks"]
    security = BEARER

    @post("/", operation_id="createWebhook")
    async def create(self, request: AuthedRequest, data: JSONBody[WebhookIn], bus: Bus) -> WebhookOut:
        """Subscribe a URL to some of the caller's events. The answer carries the signing secret, this once."""
        cmd = c.CreateWebhook(request.user, data.url, data.events, data.secret)
        return _webhook_out(await bus.handle(cmd))

    @get("/", operation_id="listWebhooks")
    async def list_(self, request: AuthedRequest, bus: Bus) -> WebhookList:
        """The caller's webhooks (without their secrets)."""
        return WebhookList(items=[_webhook_out(w) for w in await bus.handle(c.ListWebhooks(request.user))])

    @delete("/{webhook_id:uuid}", operation_id="deleteWebhook", status_code=HTTP_204_NO_CONTENT)
    async def remove(self, request: AuthedRequest, webhook_id: FromPath[UUID], bus: Bus) -> None:
        """Unsubscribe: nothing more is sent, pending deliveries included."""
        await bus.handle(c.DeleteWebhook(request.user, WebhookId(webhook_id)))

    @get("/{webhook_id:uuid}/deliveries", operation_id="listWebhookDeliveries")
    async def deliveries(
        self,
        request: AuthedRequest,
        webhook_id: FromPath[UUID],
        bus: Bus,
        only: Annotated[
            str | None,
            QueryParameter(name="state", max_length=16, description="pending, delivered or failed (the dead letters)"),
        ] = None,
        cursor: Annotated[str | None, QueryParameter(max_length=32)] = None,
        limit: Limit = 50,
    ) -> DeliveryPage:
        """The webhook's deliveries, newest first, with their attempts and last answer."""
        cmd = c.ListWebhookDeliveries(request.user, WebhookId(webhook_id), state=only, cursor=cursor, limit=limit)
        page = await bus.handle(cmd)
        return DeliveryPage(items=[_delivery_out(d) for d in page.items], next_cursor=page.next_cursor)

    @post(
        "/{webhook_id:uuid}/deliveries/{delivery_id:uuid}/replay",
        operation_id="replayWebhookDelivery",
        status_code=202,
    )
    async def replay(
        self, request: AuthedRequest, webhook_id: FromPath[UUID], delivery_id: FromPath[UUID], bus: Bus
    ) -> DeliveryOut:
        """Send a delivery again (a dead letter, or one delivered already): a new round of attempts, same id."""
        cmd = c.ReplayWebhookDelivery(request.user, WebhookId(webhook_id), WebhookDeliveryId(delivery_id))
        return _delivery_out(await bus.handle(cmd))
