"""Read models returned by the use cases: plain, immutable, framework-free."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import attrs

from domain.ids import ConversationId, MessageId, UserId, WebhookDeliveryId, WebhookId


@attrs.frozen
class UserView:
    """A user as others see it."""

    user_id: UserId
    username: str
    display_name: str
    created_at: datetime


@attrs.frozen
class TokenPair:
    """What a successful login or refresh returns."""

    access_token: str
    expires_in: int
    refresh_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth token type, not a secret


@attrs.frozen
class ApiClientCreated:
    """New client credentials; the secret is shown only here."""

    client_id: str
    client_secret: str
    name: str
    created_at: datetime


@attrs.frozen
class IdentityView:
    """A linked identity."""

    channel: str
    external_id: str
    address: str
    linked_at: datetime


@attrs.frozen
class MemberView:
    """A conversation member: a user (with id and username) or a contact (with address)."""

    kind: str
    user_id: UserId | None = None
    username: str | None = None
    address: str | None = None


@attrs.frozen
class ConversationView:
    """A conversation as the member asking sees it."""

    conversation_id: ConversationId
    type: str
    members: Sequence[MemberView]
    metadata: Mapping[str, Any]
    created_at: datetime
    last_activity_at: datetime | None
    last_seq: int
    last_message: MessageView | None = None
    """The latest message the viewer sent or receives, as history shows it; None: none yet."""
    unread_count: int = 0
    """How many messages the viewer receives and has read on none of its channels."""


@attrs.frozen
class ConversationListView:
    """A page of conversations."""

    items: Sequence[ConversationView]
    next_cursor: str | None


@attrs.frozen
class Accepted:
    """The answer to an accepted (or replayed) message."""

    message_id: MessageId
    conversation_id: ConversationId
    seq: int
    created_at: datetime
    status: str = "accepted"


@attrs.frozen
class MessageView:
    """A message in history."""

    message_id: MessageId
    conversation_id: ConversationId
    seq: int
    sender: MemberView
    to: Sequence[MemberView]
    channels: Sequence[str]
    payload: Mapping[str, Any]
    metadata: Mapping[str, Any]
    status: str
    created_at: datetime


@attrs.frozen
class HistoryView:
    """A page of history; ``next_cursor`` continues in the direction the page was read."""

    items: Sequence[MessageView]
    next_cursor: str | None


@attrs.frozen
class DeliveryView:
    """One delivery's current state."""

    recipient: MemberView
    channel: str
    status: str
    updated_at: datetime
    error: str | None
    final: bool = False
    """Nothing more will change it (see ``domain.deliveries.is_final``)."""


@attrs.frozen
class StatusEventView:
    """One entry of a message's status history."""

    status: str
    recipient: MemberView
    channel: str
    at: datetime
    detail: str | None


@attrs.frozen
class MessageStatusView:
    """A message's overall status, its deliveries and their history."""

    message_id: MessageId
    status: str
    deliveries: Sequence[DeliveryView]
    history: Sequence[StatusEventView]


@attrs.frozen
class ReadReceipt:
    """The answer to marking a message read."""

    message_id: MessageId
    read_at: datetime
    status: str = "READ"


@attrs.frozen
class PresenceView:
    """Whether a user is reachable now, and when a client of theirs was last seen."""

    user_id: UserId
    status: str
    last_seen: datetime | None


@attrs.frozen
class SyncView:
    """What changed for a viewer after a cursor: frames as the WebSocket sends them, oldest first."""

    events: Sequence[Mapping[str, Any]]
    cursor: str
    has_more: bool


@attrs.frozen
class WebhookView:
    """A webhook; ``secret`` only when it was just created."""

    webhook_id: WebhookId
    url: str
    events: Sequence[str]
    created_at: datetime
    disabled_at: datetime | None
    disabled_reason: str | None
    secret: str | None = None


@attrs.frozen
class WebhookDeliveryView:
    """One event's delivery to a webhook, with its last attempt and the body every attempt sends."""

    delivery_id: WebhookDeliveryId
    webhook_id: WebhookId
    event: str
    state: str
    attempts: int
    last_status: int | None
    last_error: str | None
    created_at: datetime
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    body: Mapping[str, Any]


@attrs.frozen
class WebhookDeliveryPage:
    items: Sequence[WebhookDeliveryView]
    next_cursor: str | None
