"""PostgreSQL adapters (psycopg 3, async, pooled)."""
