"""Protobuf messages to commands and read models to protobuf messages: the gRPC twin of ``entrypoints/http/schemas``.

The shape rules the REST schema enforces (ids are UUIDs, list and string bounds, page sizes)
are checked here; every other rule is the use cases'. A broken one is INVALID_ARGUMENT naming
its field, as REST's 400/422.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

import betterproto2

from application import commands as c
from application import views as v
from application.cursors import decode_history_cursor
from application.uploads import FileView
from domain.ids import ConversationId, MessageId, UserId
from entrypoints.grpc._generated.chat4all import v1 as pb
from entrypoints.grpc._generated.google.protobuf import Struct
from entrypoints.grpc.errors import invalid
from entrypoints.tracing import trace_headers

MAX_REF = 128
"""The longest member reference (username, user id, address) or ``from``, as REST's schema."""
MAX_REFS = 10_000
MAX_CHANNEL = 32
MAX_CHANNELS = 16
MAX_CURSOR = 512
MAX_SEQ = 2**62
_EXACT_FLOATS = 2**53
"""Struct numbers are doubles: one that is a whole number below this was an integer in JSON."""


# --- requests -----------------------------------------------------------------------------


def uuid_of(value: str, field: str) -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise invalid(f"{field} is a UUID" if value else f"{field} is required", field) from None


def optional_uuid(value: str, field: str) -> UUID | None:
    return uuid_of(value, field) if value else None


def _refs(values: Sequence[str], field: str, *, longest: int, most: int) -> list[str] | None:
    """A repeated string field: empty means "not given", as an absent JSON field."""
    if not values:
        return None
    if len(values) > most:
        raise invalid(f"{field} has at most {most} entries", field)
    if any(len(x) > longest for x in values):
        raise invalid(f"each of {field} is at most {longest} characters", field)
    return list(values)


def _plain(value: Any) -> Any:
    """A Struct value as the JSON value it stands for (whole numbers as ints, as JSON has them)."""
    if isinstance(value, float) and value.is_integer() and math.fabs(value) < _EXACT_FLOATS:
        return int(value)
    if isinstance(value, dict):
        return {k: _plain(x) for k, x in value.items()}
    if isinstance(value, list):
        return [_plain(x) for x in value]
    return value


def dict_of(struct: Struct | None) -> dict[str, Any]:
    return _plain(struct.to_dict()) if struct is not None else {}


def struct_of(value: Mapping[str, Any]) -> Struct | None:
    return Struct.from_dict(dict(value)) if value else None


def payload_dict(payload: pb.Payload | None) -> dict[str, Any]:
    """The payload as the use case (and REST's JSON) has it: ``{"type": "text", ...}`` or ``{"type": "file", ...}``."""
    kind, value = betterproto2.which_one_of(payload, "kind") if payload is not None else ("", None)
    if kind == "text" and isinstance(value, pb.TextPayload):
        return {"type": "text", "text": value.text}
    if kind == "file" and isinstance(value, pb.FilePayload):
        out: dict[str, Any] = {"type": "file", "file_id": value.file_id}
        if value.caption is not None:
            out["caption"] = value.caption
        return out
    raise invalid("payload is a text or a file", "payload")


def send_command(sender: UserId, r: pb.SendMessageRequest) -> c.SendMessage:
    """REST ``POST /v1/messages`` with this body."""
    message_id = optional_uuid(r.message_id, "message_id")
    if len(r.from_) > MAX_REF:
        raise invalid(f"from is at most {MAX_REF} characters", "from")
    return c.SendMessage(
        sender=sender,
        conversation_id=ConversationId(uuid_of(r.conversation_id, "conversation_id")),
        payload=payload_dict(r.payload),
        message_id=MessageId(message_id) if message_id is not None else None,
        from_=r.from_ or None,
        to=_refs(r.to, "to", longest=MAX_REF, most=MAX_REFS),
        channels=_refs(r.channels, "channels", longest=MAX_CHANNEL, most=MAX_CHANNELS),
        metadata=dict_of(r.metadata),
        trace=trace_headers(),
    )


def _limit(value: int, *, default: int, most: int) -> int:
    if value == 0:
        return default
    if not 1 <= value <= most:
        raise invalid(f"limit is between 1 and {most}", "limit")
    return value


def _cursor(value: str) -> str | None:
    if len(value) > MAX_CURSOR:
        raise invalid("cursor is not valid", "cursor")
    return value or None


def list_conversations_command(viewer: UserId, r: pb.ListConversationsRequest) -> c.ListConversations:
    return c.ListConversations(viewer, _limit(r.limit, default=50, most=100), _cursor(r.cursor))


def _seq(value: int | None, field: str, *, least: int) -> int | None:
    if value is not None and not least <= value <= MAX_SEQ:
        raise invalid(f"{field} is between {least} and {MAX_SEQ}", field)
    return value


def history_command(viewer: UserId, r: pb.ListMessagesRequest) -> c.GetHistory:
    """REST ``GET /v1/conversations/{id}/messages``: a cursor wins over ``after_seq``/``before_seq``."""
    after_seq = _seq(r.after_seq, "after_seq", least=0)
    before_seq = _seq(r.before_seq, "before_seq", least=1)
    cursor = _cursor(r.cursor)
    if cursor is not None:
        direction, seq = decode_history_cursor(cursor)
        after_seq, before_seq = (seq, None) if direction == "after" else (None, seq)
    return c.GetHistory(
        viewer,
        ConversationId(uuid_of(r.conversation_id, "conversation_id")),
        _limit(r.limit, default=50, most=200),
        after_seq,
        before_seq,
        r.since,
    )


def message_id_of(value: str) -> MessageId:
    return MessageId(uuid_of(value, "message_id"))


# --- answers ------------------------------------------------------------------------------


def accepted(a: v.Accepted) -> pb.SendMessageResponse:
    return pb.SendMessageResponse(
        status=a.status,
        message_id=str(a.message_id),
        conversation_id=str(a.conversation_id),
        seq=a.seq,
        created_at=a.created_at,
    )


def member(m: v.MemberView) -> pb.Member:
    return pb.Member(
        kind=m.kind,
        user_id=str(m.user_id) if m.user_id is not None else "",
        username=m.username or "",
        address=m.address or "",
    )


def payload(p: Mapping[str, Any]) -> pb.Payload:
    if p.get("type") == "file":
        caption = p.get("caption")
        return pb.Payload(
            file=pb.FilePayload(
                file_id=str(p.get("file_id", "")),
                caption=caption if isinstance(caption, str) else None,
                filename=str(p.get("filename", "")),
                size=int(p.get("size", 0)),
                content_type=str(p.get("content_type", "")),
            )
        )
    return pb.Payload(text=pb.TextPayload(text=str(p.get("text", ""))))


def message(m: v.MessageView) -> pb.Message:
    return pb.Message(
        message_id=str(m.message_id),
        conversation_id=str(m.conversation_id),
        seq=m.seq,
        from_=member(m.sender),
        to=[member(r) for r in m.to],
        channels=list(m.channels),
        payload=payload(m.payload),
        metadata=struct_of(m.metadata),
        status=m.status,
        created_at=m.created_at,
    )


def messages(page: v.HistoryView) -> pb.ListMessagesResponse:
    return pb.ListMessagesResponse(items=[message(m) for m in page.items], next_cursor=page.next_cursor or "")


def conversation(x: v.ConversationView) -> pb.Conversation:
    return pb.Conversation(
        conversation_id=str(x.conversation_id),
        type=x.type,
        members=[member(m) for m in x.members],
        metadata=struct_of(x.metadata),
        created_at=x.created_at,
        last_activity_at=x.last_activity_at,
        last_seq=x.last_seq,
        last_message=message(x.last_message) if x.last_message is not None else None,
        unread_count=x.unread_count,
    )


def conversations(page: v.ConversationListView) -> pb.ListConversationsResponse:
    return pb.ListConversationsResponse(items=[conversation(x) for x in page.items], next_cursor=page.next_cursor or "")


def message_status(s: v.MessageStatusView) -> pb.MessageStatus:
    return pb.MessageStatus(
        message_id=str(s.message_id),
        status=s.status,
        deliveries=[
            pb.Delivery(
                recipient=member(d.recipient),
                channel=d.channel,
                status=d.status,
                updated_at=d.updated_at,
                error=d.error,
                final=d.final,
            )
            for d in s.deliveries
        ],
        history=[
            pb.StatusEvent(status=h.status, recipient=member(h.recipient), channel=h.channel, at=h.at, detail=h.detail)
            for h in s.history
        ],
    )


def read_receipt(r: v.ReadReceipt) -> pb.MarkReadResponse:
    return pb.MarkReadResponse(message_id=str(r.message_id), status=r.status, read_at=r.read_at)


def file(f: FileView) -> pb.File:
    return pb.File(
        file_id=str(f.file_id),
        filename=f.filename,
        size=f.size,
        content_type=f.content_type,
        checksum=f.checksum or "",
        status=f.status,
        chunk_size=f.chunk_size,
        total_chunks=f.total_chunks,
        received_chunks=f.received_chunks,
        missing_chunks=list(f.missing_chunks),
        expires_at=f.expires_at,
    )
