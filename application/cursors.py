"""Opaque page cursors: what every adapter and handler encodes and decodes the same way."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from uuid import UUID

from domain.errors import BusinessRuleViolation
from domain.ids import ConversationId


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
