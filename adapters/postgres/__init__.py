"""PostgreSQL adapters (psycopg 3, async, pooled)."""

from adapters.postgres.migrate import migrate, migrate_sync
from adapters.postgres.pool import Pool, open_pool
from adapters.postgres.unit_of_work import PostgresUnitOfWork

__all__ = ["Pool", "PostgresUnitOfWork", "migrate", "migrate_sync", "open_pool"]
