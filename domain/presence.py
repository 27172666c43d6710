"""Presence: whether a user is reachable now, from the live signals of their clients."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class PresenceStatus(StrEnum):
    """What others see of a user: ``online`` beats ``away`` beats ``offline``."""

    ONLINE = "online"
    AWAY = "away"
    OFFLINE = "offline"


_STRENGTH = {PresenceStatus.OFFLINE: 0, PresenceStatus.AWAY: 1, PresenceStatus.ONLINE: 2}


def strongest(statuses: Iterable[PresenceStatus]) -> PresenceStatus:
    """A user's status from the statuses of their live clients (none: offline)."""
    return max(statuses, key=_STRENGTH.__getitem__, default=PresenceStatus.OFFLINE)
