"""Commands (imperative) and queries the use cases accept; all immutable."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import attrs

from domain.conversations import ConversationType
from domain.ids import ConversationId, MessageId, UserId, WebhookDeliveryId, WebhookId


@attrs.frozen
class RegisterUser:
    """Create an account."""

    username: str
    password: str
    display_name: str | None = None


@attrs.frozen
class IssueTokenForPassword:
    """Log a user in with username and password."""

    username: str
    password: str


@attrs.frozen
class IssueTokenForClient:
    """Log an application in with its client credentials."""

    client_id: str
    client_secret: str


@attrs.frozen
class RefreshToken:
    """Trade a refresh token (once) for a new token pair."""

    refresh_token: str


@attrs.frozen
class CreateApiClient:
    """Create client credentials that act as the calling user."""

    owner: UserId
    name: str


@attrs.frozen
class GetUser:
    """Read a user's public profile."""

    user_id: UserId


@attrs.frozen
class LinkIdentity:
    """Link the caller's account on a platform."""

    user_id: UserId
    channel: str
    external_id: str


@attrs.frozen
class UnlinkIdentity:
    """Unlink the caller's account on a platform."""

    user_id: UserId
    channel: str


@attrs.frozen
class ListIdentities:
    """The caller's linked identities."""

    user_id: UserId


@attrs.frozen
class CreateConversation:
    """Start a private or group conversation; ``members`` are usernames, user ids or addresses."""

    creator: UserId
    type: ConversationType
    members: Sequence[str]
    metadata: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class GetConversation:
    """Read one conversation the caller belongs to."""

    viewer: UserId
    conversation_id: ConversationId


@attrs.frozen
class ListConversations:
    """The caller's conversations, most recent activity first."""

    viewer: UserId
    limit: int = 50
    cursor: str | None = None


@attrs.frozen
class SendMessage:
    """Accept a message; ``message_id`` is the client's idempotency key when given."""

    sender: UserId
    conversation_id: ConversationId
    payload: Mapping[str, Any]
    message_id: MessageId | None = None
    from_: str | None = None
    to: Sequence[str] | None = None
    channels: Sequence[str] | None = None
    metadata: Mapping[str, Any] = attrs.field(factory=dict)
    trace: Mapping[str, str] | None = None
    """The caller's trace context (W3C ``traceparent``), carried to the events this send causes."""


@attrs.frozen
class GetHistory:
    """A page of a conversation's messages in ascending seq."""

    viewer: UserId
    conversation_id: ConversationId
    limit: int = 50
    after_seq: int | None = None
    before_seq: int | None = None
    since: datetime | None = None


@attrs.frozen
class GetMessage:
    """One message, as history shows it, for its sender and recipients while they are members."""

    viewer: UserId
    message_id: MessageId


@attrs.frozen
class GetMessageStatus:
    """A message's deliveries and their history."""

    viewer: UserId
    message_id: MessageId


@attrs.frozen
class MarkRead:
    """The reader has read this message and every earlier one in its conversation."""

    reader: UserId
    message_id: MessageId


def as_uuid(value: str) -> UUID | None:
    """``value`` as a UUID, or None when it is not one."""
    try:
        return UUID(value)
    except (ValueError, AttributeError, TypeError):
        return None


@attrs.frozen
class Sync:
    """What changed for the viewer after ``cursor``: new messages and delivery changes, oldest first."""

    viewer: UserId
    cursor: str | None = None
    limit: int = 100


@attrs.frozen
class CreateWebhook:
    """Subscribe ``url`` to some of the owner's events (``secret``: None for a random one)."""

    owner: UserId
    url: str
    events: Sequence[str]
    secret: str | None = None


@attrs.frozen
class ListWebhooks:
    owner: UserId


@attrs.frozen
class DeleteWebhook:
    owner: UserId
    webhook_id: WebhookId


@attrs.frozen
class ListWebhookDeliveries:
    owner: UserId
    webhook_id: WebhookId
    state: str | None = None
    cursor: str | None = None
    limit: int = 50


@attrs.frozen
class ReplayWebhookDelivery:
    owner: UserId
    webhook_id: WebhookId
    delivery_id: WebhookDeliveryId
