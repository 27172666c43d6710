"""The application core on PostgreSQL: a pool on a fresh database and the real message bus over it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import argon2
import pytest

from adapters.postgres import Pool, PostgresUnitOfWork, open_pool
from adapters.security import Argon2PasswordHasher, JwtTokenIssuer, TokenSettings
from adapters.system import SystemClock, UuidGenerator
from application.bus import MessageBus
from application.handlers import Deps


@pytest.fixture
async def pool(postgres_url: str) -> AsyncIterator[Pool]:
    pool = await open_pool(postgres_url, 2, 10)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
def bus(pool: Pool) -> MessageBus:
    return MessageBus(
        Deps(
            uow=lambda: PostgresUnitOfWork(pool),
            clock=SystemClock(),
            ids=UuidGenerator(),
            hasher=Argon2PasswordHasher(argon2.PasswordHasher.from_parameters(argon2.profiles.CHEAPEST)),
            tokens=JwtTokenIssuer(TokenSettings(secret="x" * 32)),
        )
    )
