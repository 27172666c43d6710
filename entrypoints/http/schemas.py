"""HTTP request and response bodies (msgspec Structs), and their mapping from read models."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec

from application import views as v

Str = Annotated[str, msgspec.Meta(max_length=4096)]


class Problem(msgspec.Struct, omit_defaults=True):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str | None = None
    errors: list[dict[str, str]] | None = None


class RegisterUserIn(msgspec.Struct):
    username: Annotated[str, msgspec.Meta(max_length=64)]
    password: Annotated[str, msgspec.Meta(max_length=1024)]
    display_name: Annotated[str, msgspec.Meta(max_length=200)] | None = None


class UserOut(msgspec.Struct):
    user_id: UUID
    username: str
    display_name: str
    created_at: datetime


class TokenIn(msgspec.Struct, omit_defaults=True):
    """Either username/password or client_id/client_secret; grant_type is optional (OAuth2 style)."""

    username: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    password: Annotated[str, msgspec.Meta(max_length=1024)] | None = None
    client_id: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    client_secret: Annotated[str, msgspec.Meta(max_length=256)] | None = None
    grant_type: Annotated[str, msgspec.Meta(max_length=64)] | None = None


class RefreshIn(msgspec.Struct):
    refresh_token: Annotated[str, msgspec.Meta(max_length=256)]


class TokenOut(msgspec.Struct):
    access_token: str
    token_type: str
    expires_in: int
    refresh_token: str


class ClientIn(msgspec.Struct):
    name: Annotated[str, msgspec.Meta(max_length=200)]


class ClientOut(msgspec.Struct):
    client_id: str
    client_secret: str
    name: str
    created_at: datetime


class IdentityIn(msgspec.Struct):
    channel: Annotated[str, msgspec.Meta(max_length=32)]
    external_id: Annotated[str, msgspec.Meta(max_length=128)]


class IdentityOut(msgspec.Struct):
    channel: str
    external_id: str
    address: str
    linked_at: datetime


class IdentityList(msgspec.Struct):
    items: list[IdentityOut]


class ConversationIn(msgspec.Struct):
    type: Literal["private", "group"]
    members: Annotated[list[Annotated[str, msgspec.Meta(max_length=128)]], msgspec.Meta(max_length=10_000)]
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)


class MemberOut(msgspec.Struct, omit_defaults=True):
    kind: str
    user_id: UUID | None = None
    username: str | None = None
    address: str | None = None


class ConversationOut(msgspec.Struct):
    conversation_id: UUID
    type: str
    members: list[MemberOut]
    metadata: dict[str, Any]
    created_at: datetime
    last_activity_at: datetime | None
    last_seq: int
    last_message: MessageOut | None
    """The latest message the caller sent or receives, as history shows it; null when there is none."""
    unread_count: int
    """How many messages the caller receives and has read on none of its channels."""


class ConversationList(msgspec.Struct):
    items: list[ConversationOut]
    next_cursor: str | None


class MessageIn(msgspec.Struct, rename={"from_": "from"}):
    conversation_id: UUID
    payload: dict[str, Any]
    message_id: UUID | None = None
    from_: Annotated[str, msgspec.Meta(max_length=128)] | None = None
    to: Annotated[list[Annotated[str, msgspec.Meta(max_length=128)]], msgspec.Meta(max_length=10_000)] | None = None
    channels: Annotated[list[Annotated[str, msgspec.Meta(max_length=32)]], msgspec.Meta(max_length=16)] | None = None
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)


class AcceptedOut(msgspec.Struct):
    status: str
    message_id: UUID
    conversation_id: UUID
    seq: int
    created_at: datetime


class MessageOut(msgspec.Struct, rename={"from_": "from"}):
    message_id: UUID
    conversation_id: UUID
    seq: int
    from_: MemberOut
    to: list[MemberOut]
    channels: list[str]
    payload: dict[str, Any]
    metadata: dict[str, Any]
    status: str
    created_at: datetime


class MessageList(msgspec.Struct):
    items: list[MessageOut]
    next_cursor: str | None


class DeliveryOut(msgspec.Struct, omit_defaults=True):
    recipient: MemberOut
    channel: str
    status: str
    updated_at: datetime
    final: bool
    """Nothing more will change this status: READ, FAILED, or as far as the channel reports (Telegram: SENT)."""
    error: str | None = None


class StatusEventOut(msgspec.Struct, omit_defaults=True):
    status: str
    recipient: MemberOut
    channel: str
    at: datetime
    detail: str | None = None


class MessageStatusOut(msgspec.Struct):
    message_id: UUID
    status: str
    deliveries: list[DeliveryOut]
    history: list[StatusEventOut]


class ReadOut(msgspec.Struct):
    message_id: UUID
    status: str
    read_at: datetime


class Health(msgspec.Struct):
    status: str
    checks: dict[str, bool] = msgspec.field(default_factory=dict)


def user_out(u: v.UserView) -> UserOut:
    return UserOut(user_id=u.user_id, username=u.username, display_name=u.display_name, created_at=u.created_at)


def token_out(t: v.TokenPair) -> TokenOut:
    return TokenOut(
        access_token=t.access_token, token_type=t.token_type, expires_in=t.expires_in, refresh_token=t.refresh_token
    )


def identity_out(i: v.IdentityView) -> IdentityOut:
    return IdentityOut(channel=i.channel, external_id=i.external_id, address=i.address, linked_at=i.linked_at)


def member_out(m: v.MemberView) -> MemberOut:
    return MemberOut(kind=m.kind, user_id=m.user_id, username=m.username, address=m.address)


def conversation_out(c: v.ConversationView) -> ConversationOut:
    return ConversationOut(
        conversation_id=c.conversation_id,
        type=c.type,
        members=[member_out(m) for m in c.members],
        metadata=dict(c.metadata),
        created_at=c.created_at,
        last_activity_at=c.last_activity_at,
        last_seq=c.last_seq,
        last_message=message_out(c.last_message) if c.last_message is not None else None,
        unread_count=c.unread_count,
    )


def accepted_out(a: v.Accepted) -> AcceptedOut:
    return AcceptedOut(
        status=a.status, message_id=a.message_id, conversation_id=a.conversation_id, seq=a.seq, created_at=a.created_at
    )


def message_out(m: v.MessageView) -> MessageOut:
    return MessageOut(
        message_id=m.message_id,
        conversation_id=m.conversation_id,
        seq=m.seq,
        from_=member_out(m.sender),
        to=[member_out(r) for r in m.to],
        channels=list(m.channels),
        payload=dict(m.payload),
        metadata=dict(m.metadata),
        status=m.status,
        created_at=m.created_at,
    )


def status_out(s: v.MessageStatusView) -> MessageStatusOut:
    return MessageStatusOut(
        message_id=s.message_id,
        status=s.status,
        deliveries=[
            DeliveryOut(
                recipient=member_out(d.recipient),
                channel=d.channel,
                status=d.status,
                updated_at=d.updated_at,
                final=d.final,
                error=d.error,
            )
            for d in s.deliveries
        ],
        history=[
            StatusEventOut(
                status=h.status, recipient=member_out(h.recipient), channel=h.channel, at=h.at, detail=h.detail
            )
            for h in s.history
        ],
    )


class HeartbeatIn(msgspec.Struct):
    status: Annotated[str, msgspec.Meta(description="`online` or `away`")] = "online"


class PresenceOut(msgspec.Struct):
    user_id: UUID
    status: str
    last_seen: datetime | None


class SyncOut(msgspec.Struct):
    events: list[dict[str, Any]]
    cursor: str
    has_more: bool
