"""Outbound webhooks: a user's subscriptions to events, and each event's delivery to each subscription."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum

import attrs

from domain.errors import BusinessRuleViolation, InvalidTransition
from domain.ids import UserId, WebhookDeliveryId, WebhookId

SECRET_MIN, SECRET_MAX = 16, 256
"""Bounds of a signing secret's length; one the owner does not choose is 32 random bytes."""


class WebhookEvent(StrEnum):
    """What a subscription may ask to hear about."""

    MESSAGE_CREATED = "message.created"
    """A message in one of the owner's conversations."""
    MESSAGE_STATUS = "message.status"
    """A delivery of one of the owner's messages moved (SENT, DELIVERED, READ, FAILED)."""
    CONVERSATION_CREATED = "conversation.created"
    """A conversation the owner is a member of was started."""
    FILE_COMPLETED = "file.completed"
    """One of the owner's uploads completed."""


def parse_events(names: Iterable[str]) -> frozenset[WebhookEvent]:
    """The events named, each once.

    Raises:
        BusinessRuleViolation: none, or one that is not an event.
    """
    events: set[WebhookEvent] = set()
    for name in names:
        try:
            events.add(WebhookEvent(name))
        except ValueError:
            known = ", ".join(e.value for e in WebhookEvent)
            raise BusinessRuleViolation(f"unknown event {name!r}; known: {known}", field="events") from None
    if not events:
        raise BusinessRuleViolation("subscribe to at least one event", field="events")
    return frozenset(events)


@attrs.define(kw_only=True, eq=False)
class Webhook:
    """A URL that hears about some events of its owner's, signed with a secret only they and we know."""

    id: WebhookId
    owner: UserId
    url: str
    events: frozenset[WebhookEvent]
    secret: str
    created_at: datetime
    disabled_at: datetime | None = None
    disabled_reason: str | None = None

    @classmethod
    def register(
        cls, *, id: WebhookId, owner: UserId, url: str, events: frozenset[WebhookEvent], secret: str, at: datetime
    ) -> Webhook:
        if not SECRET_MIN <= len(secret) <= SECRET_MAX:
            raise BusinessRuleViolation(
                f"a secret has {SECRET_MIN} to {SECRET_MAX} characters; leave it out to get a random one",
                field="secret",
            )
        if not events:
            raise BusinessRuleViolation("subscribe to at least one event", field="events")
        return cls(id=id, owner=owner, url=url, events=events, secret=secret, created_at=at)

    @property
    def active(self) -> bool:
        return self.disabled_at is None

    def wants(self, event: WebhookEvent) -> bool:
        return self.active and event in self.events

    def disable(self, reason: str, *, at: datetime) -> None:
        """Stop delivering to it (the receiver answered 410 Gone: it wants no more)."""
        if self.disabled_at is None:
            self.disabled_at = at
            self.disabled_reason = reason


class WebhookDeliveryState(StrEnum):
    PENDING = "pending"
    """Waiting for its next attempt (or for the earlier deliveries of its conversation)."""
    DELIVERED = "delivered"
    """The receiver answered 2xx."""
    FAILED = "failed"
    """Every attempt failed, or the receiver is gone: a dead letter, until replayed."""


@attrs.define(kw_only=True, eq=False)
class WebhookDelivery:
    """One event for one webhook: one stable id and one body across every attempt, so receivers can dedupe.

    Deliveries of one webhook with one ``ordering_key`` (a conversation) go out in ``position`` order: a
    delivery waits until the ones before it are delivered or failed.
    """

    id: WebhookDeliveryId
    webhook_id: WebhookId
    event: WebhookEvent
    ordering_key: str
    body: bytes
    created_at: datetime
    next_attempt_at: datetime
    state: WebhookDeliveryState = WebhookDeliveryState.PENDING
    attempts: int = 0
    last_status: int | None = None
    last_error: str | None = None
    delivered_at: datetime | None = None
    position: int = 0
    """Set by the repository: the order deliveries were recorded in."""

    def succeeded(self, status: int, *, at: datetime) -> None:
        self._attempted(status, None)
        self.state = WebhookDeliveryState.DELIVERED
        self.delivered_at = at

    def failed(self, status: int | None, error: str, *, retry_at: datetime | None) -> None:
        """An attempt failed; ``retry_at`` None: no more attempts (a dead letter)."""
        self._attempted(status, error)
        if retry_at is None:
            self.state = WebhookDeliveryState.FAILED
        else:
            self.next_attempt_at = retry_at

    def abandon(self, reason: str) -> None:
        """Give up without an attempt (its webhook was disabled)."""
        self.state = WebhookDeliveryState.FAILED
        self.last_error = reason

    def replay(self, *, at: datetime) -> None:
        """Send it again from scratch: a full round of attempts, starting now."""
        if self.state is WebhookDeliveryState.PENDING:
            raise InvalidTransition("the delivery is still pending")
        self.state = WebhookDeliveryState.PENDING
        self.attempts = 0
        self.next_attempt_at = at
        self.delivered_at = None

    def _attempted(self, status: int | None, error: str | None) -> None:
        if self.state is not WebhookDeliveryState.PENDING:
            raise InvalidTransition(f"the delivery is {self.state.value}")
        self.attempts += 1
        self.last_status = status
        self.last_error = error
