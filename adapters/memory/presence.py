"""Presence in one process's memory: the same rules as the Redis store, for tests and a lone API process."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from application.ports import PresenceChange, PresenceStore
from domain.ids import UserId
from domain.presence import PresenceStatus, strongest


class InMemoryPresence(PresenceStore):
    def __init__(self) -> None:
        self._clients: dict[UserId, dict[str, tuple[PresenceStatus, datetime]]] = {}
        self._last: dict[UserId, datetime] = {}
        self._online: set[UserId] = set()

    def _status(self, user_id: UserId, at: datetime) -> PresenceStatus:
        clients = self._clients.get(user_id, {})
        for source in [s for s, (_, expires) in clients.items() if expires <= at]:
            del clients[source]
        return strongest(status for status, _ in clients.values())

    async def seen(
        self, user_id: UserId, source: str, status: PresenceStatus, *, at: datetime, ttl: timedelta
    ) -> PresenceChange:
        before = self._status(user_id, at)
        self._clients.setdefault(user_id, {})[source] = (status, at + ttl)
        self._last[user_id] = at
        self._online.add(user_id)
        return PresenceChange(before, self._status(user_id, at))

    async def gone(self, user_id: UserId, source: str, *, at: datetime) -> PresenceChange:
        before = self._status(user_id, at)
        self._clients.get(user_id, {}).pop(source, None)
        after = self._status(user_id, at)
        if before is not PresenceStatus.OFFLINE:
            self._last[user_id] = at
        if after is PresenceStatus.OFFLINE:
            self._online.discard(user_id)
        return PresenceChange(before, after)

    async def state(self, user_id: UserId, *, at: datetime) -> tuple[PresenceStatus, datetime | None]:
        return self._status(user_id, at), self._last.get(user_id)

    async def lapsed(self, *, at: datetime, limit: int) -> Sequence[tuple[UserId, datetime | None]]:
        gone = [u for u in sorted(self._online, key=str) if self._status(u, at) is PresenceStatus.OFFLINE][:limit]
        self._online.difference_update(gone)
        return [(u, self._last.get(u)) for u in gone]
