"""The connection pool every PostgreSQL unit of work borrows from."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool

from application.errors import Unavailable

Pool = AsyncConnectionPool[AsyncConnection[Any]]


def _utc_options(conninfo: str) -> str:
    # Sessions run in UTC so timestamps come back as UTC datetimes, like the clock produces them.
    options = str(conninfo_to_dict(conninfo).get("options") or "")
    return f"{options} -c TimeZone=UTC".strip()


async def open_pool(
    conninfo: str,
    min_size: int = 2,
    max_size: int = 10,
    *,
    connect_timeout: float = 30.0,
    acquire_timeout: float | None = None,
) -> Pool:
    """Open a pool and wait until ``min_size`` connections are ready; the caller closes it.

    ``connect_timeout`` bounds this wait; ``acquire_timeout`` (default: the same) every later wait to borrow a
    connection. Keep the latter short where a caller waits: while PostgreSQL is down, a borrow that gives up
    soon is a prompt 503 with Retry-After instead of a request hanging until the client's own timeout.

    Raises:
        Unavailable: the server could not be reached in time.
    """
    pool: Pool = AsyncConnectionPool(
        conninfo,
        min_size=min_size,
        max_size=max_size,
        open=False,
        timeout=connect_timeout,
        # Autocommit: units of work send BEGIN themselves, lazily, with their first write.
        kwargs={"options": _utc_options(conninfo), "autocommit": True},
        name="chat4all",
    )
    try:
        await pool.open(wait=True, timeout=connect_timeout)
    except psycopg.OperationalError as e:  # PoolTimeout included
        await pool.close()
        raise Unavailable(f"cannot connect to PostgreSQL: {e}") from e
    if acquire_timeout is not None:
        pool.timeout = acquire_timeout  # getconn()'s default from now on
    return pool
