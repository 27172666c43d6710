"""System clock and id generation."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime


class SystemClock:
    """The real UTC clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class UuidGenerator:
    """Random (version 4) UUIDs."""

    def new(self) -> uuid.UUID:
        return uuid.uuid4()


__all__ = ["SystemClock", "UuidGenerator"]
