"""Wake-ups from PostgreSQL: LISTEN on the channel the outbox trigger notifies (see 0002_pipeline.sql)."""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Any, Self

import psycopg

log = logging.getLogger(__name__)

OUTBOX_CHANNEL = "chat4all_outbox"


class OutboxWakeups:
    """Waits until something was written to the outbox, or a timeout passes (the polling fallback).

    A lost connection is re-opened on the next wait; meanwhile waits just time out, so the relay
    falls back to polling and loses nothing.
    """

    def __init__(self, conninfo: str) -> None:
        self._conninfo = conninfo
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
            await self._conn.execute("LISTEN chat4all_outbox")  # OUTBOX_CHANNEL
        return self._conn

    async def wait(self, seconds: float) -> bool:
        """True when woken by a notification, False after ``seconds`` (or with no connection)."""
        try:
            conn = await self._connection()
            async for _ in conn.notifies(timeout=seconds, stop_after=1):
                return True
        except psycopg.Error as exc:
            log.warning("outbox wake-ups unavailable (%s); polling", exc)
            await self.close()
        return False

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
