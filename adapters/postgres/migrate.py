"""Schema migrations: plain SQL files in ``migrations/``, each applied once, in name order."""

from __future__ import annotations

import asyncio
import hashlib
from importlib.resources import files

import attrs
import psycopg

from application.errors import Unavailable

# Every migrator takes this transaction-scoped advisory lock, so concurrent runs apply each file once.
_LOCK_KEY = 0x43_34_41_4D_49_47  # "C4AMIG"

_CREATE_LEDGER = b"""
CREATE TABLE IF NOT EXISTS schema_migrations (
    name       text        PRIMARY KEY,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


class MigrationChanged(RuntimeError):
    """A migration that was already applied has been edited since; add a new file instead."""


@attrs.frozen
class Migration:
    """One SQL file of the schema's history."""

    name: str
    script: bytes

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.script).hexdigest()


def migrations() -> list[Migration]:
    """Every migration shipped with the package, in the order they apply."""
    root = files("adapters.postgres").joinpath("migrations")
    found = [Migration(f.name, f.read_bytes()) for f in root.iterdir() if f.name.endswith(".sql")]
    return sorted(found, key=lambda m: m.name)


async def migrate(conninfo: str) -> list[str]:
    """Apply the pending migrations, each in its own transaction; return the names applied.

    Raises:
        Unavailable: the database cannot be reached.
        MigrationChanged: an applied migration's file no longer matches what was applied.
    """
    applied: list[str] = []
    try:
        async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
            for m in migrations():
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
                    await conn.execute(_CREATE_LEDGER)
                    cur = await conn.execute("SELECT checksum FROM schema_migrations WHERE name = %s", (m.name,))
                    row = await cur.fetchone()
                    if row is not None:
                        if row[0] != m.checksum:
                            raise MigrationChanged(f"{m.name} was edited after it was applied")
                        continue
                    await conn.execute(m.script)
                    await conn.execute(
                        "INSERT INTO schema_migrations (name, checksum) VALUES (%s, %s)", (m.name, m.checksum)
                    )
                applied.append(m.name)
    except psycopg.OperationalError as e:
        raise Unavailable(f"cannot migrate PostgreSQL: {e}") from e
    return applied


def migrate_sync(conninfo: str) -> list[str]:
    """``migrate`` for synchronous callers (the CLI); not for use inside a running event loop."""
    return asyncio.run(migrate(conninfo))
