"""Every contract suite runs on the in-memory twin and on PostgreSQL through ``uow_factory``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from adapters.postgres import open_pool
from tests.contract.backends import Backend, MemoryBackend, PostgresBackend


@pytest.fixture(params=["memory", pytest.param("postgres", marks=pytest.mark.integration)])
def backend_url(request: pytest.FixtureRequest) -> str | None:
    """None for the in-memory twin, else a fresh migrated database."""
    if request.param == "memory":
        return None
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
async def uow_factory(backend_url: str | None) -> AsyncIterator[Backend]:
    if backend_url is None:
        yield MemoryBackend()
        return
    pool = await open_pool(backend_url, 1, 4)
    try:
        yield PostgresBackend(pool)
    finally:
        await pool.close()
