"""Infrastructure failures reach the application as Unavailable, and the pool recovers."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import psycopg
import pytest

from adapters.postgres import Pool, PostgresUnitOfWork, migrate, open_pool
from application.errors import Unavailable
from domain.ids import UserId
from entrypoints.stack.postgres import free_port

pytestmark = pytest.mark.integration

FAR = datetime(2100, 1, 1, tzinfo=UTC)


async def test_opening_a_pool_on_a_server_that_is_not_there_is_unavailable() -> None:
    with pytest.raises(Unavailable):
        await open_pool(f"postgresql://postgres@127.0.0.1:{free_port()}/x", 1, 1, connect_timeout=0.5)


async def test_migrating_a_server_that_is_not_there_is_unavailable() -> None:
    with pytest.raises(Unavailable):
        await migrate(f"postgresql://postgres@127.0.0.1:{free_port()}/x?connect_timeout=1")


async def test_a_connection_lost_mid_unit_of_work_is_unavailable_and_nothing_is_kept(
    pool: Pool, postgres_url: str
) -> None:
    ghost = UserId(uuid.uuid4())
    uow = PostgresUnitOfWork(pool)

    async with uow:
        await uow.refresh_tokens.add("a" * 64, ghost, expires_at=FAR)
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (await _backend_pid(uow),))
        with pytest.raises(Unavailable):
            await uow.users.get(ghost)
        with pytest.raises(Unavailable):
            await uow.commit()

    async with PostgresUnitOfWork(pool) as fresh:  # the pool replaced the dead connection
        assert await fresh.refresh_tokens.consume("a" * 64, at=FAR.replace(year=2000)) is None


async def test_a_unit_of_work_outside_async_with_says_so(pool: Pool) -> None:
    uow = PostgresUnitOfWork(pool)

    with pytest.raises(RuntimeError, match="async with"):
        await uow.users.get(UserId(uuid.uuid4()))
    with pytest.raises(RuntimeError, match="async with"):
        await uow.commit()


async def _backend_pid(uow: PostgresUnitOfWork) -> int:
    conn = uow._db.conn  # the server process behind this unit of work
    assert conn is not None
    return conn.info.backend_pid


async def test_a_borrow_gives_up_after_the_acquire_timeout_not_the_connect_timeout(postgres_url: str) -> None:
    """While every connection is taken (or PostgreSQL is down), a request is refused in seconds: a prompt 503."""
    small = await open_pool(postgres_url, 1, 1, connect_timeout=30.0, acquire_timeout=0.3)
    try:
        async with small.connection():  # the only connection, held
            started = time.monotonic()
            with pytest.raises(Unavailable):
                async with PostgresUnitOfWork(small) as uow:
                    await uow.users.get_by_username("nobody")
            waited = time.monotonic() - started
        assert 0.25 <= waited < 5.0
    finally:
        await small.close()
