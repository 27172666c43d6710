"""Opaque page cursors: what every adapter and handler encodes and decodes the same way."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import ClassVar
from uuid import UUID

import attrs

from domain.channels import Channel
from domain.deliveries import Delivery
from domain.errors import BusinessRuleViolation
from domain.ids import ConversationId, MessageId
from domain.messages import Message


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _unb64(cursor: str) -> str:
    return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()


def encode_conversation_cursor(at: datetime, cid: ConversationId) -> str:
    """An opaque cursor after (last_activity_at, id) in a most-recent-first listing."""
    return _b64(f"{at.isoformat()}|{cid}")


def decode_conversation_cursor(cursor: str) -> tuple[datetime, UUID]:
    """The (last_activity_at, id) inside a conversation-list cursor.

    Raises:
        BusinessRuleViolation: the cursor was not made by this server.
    """
    try:
        at, _, cid = _unb64(cursor).partition("|")
        when = datetime.fromisoformat(at)
        if when.tzinfo is None:
            raise ValueError(at)
        return when, UUID(cid)
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise BusinessRuleViolation("cursor is not valid", field="cursor") from None


def encode_history_cursor(direction: str, seq: int) -> str:
    """An opaque cursor that continues a history page ``after`` or ``before`` ``seq``."""
    return _b64(f"{direction}:{seq}")


def decode_history_cursor(cursor: str) -> tuple[str, int]:
    """The (direction, seq) inside a history cursor.

    Raises:
        BusinessRuleViolation: the cursor was not made by this server.
    """
    try:
        direction, _, seq = _unb64(cursor).partition(":")
        if direction not in {"after", "before"}:
            raise ValueError(direction)
        value = int(seq)
        if value < 0:
            raise ValueError(seq)
        return direction, value
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise BusinessRuleViolation("cursor is not valid", field="cursor") from None


@attrs.frozen(order=True)
class SyncPosition:
    """A place in a viewer's stream of changes: a time, then the kind of change, then its key.

    Messages (kind 0) are ordered by ``created_at`` and id; deliveries (kind 1) by ``updated_at``
    and ``message_id/recipient/channel``.
    """

    at: datetime
    kind: int = -1
    key: str = ""

    MESSAGE: ClassVar[int] = 0
    DELIVERY: ClassVar[int] = 1

    @staticmethod
    def of_message(m: Message) -> SyncPosition:
        return SyncPosition(m.created_at, SyncPosition.MESSAGE, str(m.id))

    @staticmethod
    def of_delivery(dl: Delivery) -> SyncPosition:
        return SyncPosition(dl.updated_at, SyncPosition.DELIVERY, delivery_sync_key(dl.key))


def delivery_sync_key(key: tuple[MessageId, str, Channel]) -> str:
    """A delivery's key as one string that sorts the same everywhere (message id, recipient, channel)."""
    return f"{key[0]}/{key[1]}/{key[2].value}"


def encode_sync_cursor(position: SyncPosition) -> str:
    """An opaque cursor that continues a viewer's changes after ``position``."""
    return _b64(f"{position.at.isoformat()}|{position.kind}|{position.key}")


def decode_sync_cursor(cursor: str) -> SyncPosition:
    """The position inside a sync cursor.

    Raises:
        BusinessRuleViolation: the cursor was not made by this server.
    """
    try:
        at, kind, key = _unb64(cursor).split("|", 2)
        when = datetime.fromisoformat(at)
        if when.tzinfo is None or int(kind) not in {-1, SyncPosition.MESSAGE, SyncPosition.DELIVERY}:
            raise ValueError(at)
        return SyncPosition(when, int(kind), key)
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise BusinessRuleViolation("cursor is not valid", field="cursor") from None
