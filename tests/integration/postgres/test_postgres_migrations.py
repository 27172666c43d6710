"""Migrations apply once each, in order, even when several processes migrate at the same time."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from adapters.postgres.migrate import MigrationChanged, migrate, migrations
from entrypoints.stack.postgres import EmbeddedPostgres

pytestmark = pytest.mark.integration


@pytest.fixture
def empty_url(postgres_server: EmbeddedPostgres) -> Iterator[str]:
    name = f"empty_{uuid.uuid4().hex[:12]}"
    url = postgres_server.create_database(name)
    yield url
    with psycopg.connect(postgres_server.url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def ledger(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [name for (name,) in conn.execute("SELECT name FROM schema_migrations ORDER BY name").fetchall()]


def test_the_migrations_ship_with_the_package_in_order() -> None:
    names = [m.name for m in migrations()]
    assert names[0] == "0001_initial.sql"
    assert names == sorted(names)
    assert all(m.script.strip() for m in migrations())


async def test_an_empty_database_gets_every_migration_then_none_again(empty_url: str) -> None:
    first = await migrate(empty_url)
    second = await migrate(empty_url)

    assert first == [m.name for m in migrations()]
    assert second == []
    assert ledger(empty_url) == first


async def test_a_migrated_database_needs_nothing(postgres_url: str) -> None:
    assert await migrate(postgres_url) == []


async def test_concurrent_migrators_apply_each_migration_once(empty_url: str) -> None:
    results = await asyncio.gather(*(migrate(empty_url) for _ in range(5)))

    applied = sorted(name for result in results for name in result)
    assert applied == [m.name for m in migrations()]
    assert ledger(empty_url) == applied


async def test_an_applied_migration_that_was_edited_is_refused(postgres_url: str) -> None:
    with psycopg.connect(postgres_url) as conn:
        conn.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE name = '0001_initial.sql'")

    with pytest.raises(MigrationChanged, match=r"0001_initial\.sql"):
        await migrate(postgres_url)
