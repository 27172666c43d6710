"""GET /health/ready: PostgreSQL, Redis (when configured) and the file store, each checked at once and bounded;
503 with Retry-After naming the check that failed."""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from dependency_injector import providers
from litestar import Litestar
from litestar.testing import AsyncTestClient
from miniopy_async.api import Minio

from adapters.memory import InMemoryStore
from adapters.memory.objects import InMemoryObjectStore
from adapters.storage.filesystem import FilesystemObjectStore
from adapters.storage.s3 import S3ObjectStore, close_client
from application.ports import ObjectStore, StorageUnavailable
from entrypoints.container import container_for
from entrypoints.health import CHECK_TIMEOUT_S, Probe, api_readiness, readiness_of
from entrypoints.http.app import create_app
from entrypoints.settings import Settings
from entrypoints.stack.redis import EmbeddedRedis

pytestmark = pytest.mark.unit


# -- the checks, on fakes ------------------------------------------------------------------------------------------


async def passes() -> bool:
    return True


async def says_no() -> bool:
    return False


async def raises() -> bool:
    raise ConnectionError("refused")


async def hangs() -> bool:
    await asyncio.sleep(3600)
    return True


async def test_every_check_is_reported_and_a_failing_one_is_false_whatever_the_way_it_fails() -> None:
    ready = readiness_of(
        {
            "ok": Probe(passes),
            "no": Probe(says_no),
            "raises": Probe(raises),
            "hangs": Probe(hangs, timeout_s=0.05),
        }
    )
    assert await ready() == {"ok": True, "no": False, "raises": False, "hangs": False}


async def test_the_checks_run_at_once_and_a_hung_one_costs_its_timeout_only() -> None:
    async def slow() -> bool:
        await asyncio.sleep(0.3)
        return True

    ready = readiness_of({"a": Probe(slow), "b": Probe(slow), "c": Probe(hangs, timeout_s=0.4)})
    started = time.monotonic()
    assert await ready() == {"a": True, "b": True, "c": False}
    assert time.monotonic() - started < 0.8


async def test_a_failing_check_is_logged_when_it_starts_failing_and_when_it_passes_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    answers = iter([True, False, False, True])

    async def flaky() -> bool:
        if not next(answers):
            raise ConnectionError("refused")
        return True

    ready = readiness_of({"redis": Probe(flaky)})
    with caplog.at_level(logging.INFO, logger="chat4all.health"):
        for _ in range(4):
            await ready()
    assert [r.getMessage() for r in caplog.records] == [
        "readiness: redis fails: ConnectionError('refused')",
        "readiness: redis passes again",
    ]


class FakeRedis:
    def __init__(self, error: Exception | None = None) -> None:
        self.error = error

    async def ping(self) -> bool:
        if self.error is not None:
            raise self.error
        return True


class DownStore(InMemoryObjectStore):
    async def ready(self) -> bool:
        raise StorageUnavailable("object storage unreachable")


async def database_up() -> dict[str, bool]:
    return {"database": True}


async def database_down() -> dict[str, bool]:
    return {"database": False}


@pytest.mark.parametrize(
    ("database", "redis", "store", "expected"),
    [
        (database_up, FakeRedis(), InMemoryObjectStore(), {"database": True, "redis": True, "storage": True}),
        (database_down, FakeRedis(), InMemoryObjectStore(), {"database": False, "redis": True, "storage": True}),
        (
            database_up,
            FakeRedis(ConnectionError("refused")),
            InMemoryObjectStore(),
            {"database": True, "redis": False, "storage": True},
        ),
        (database_up, FakeRedis(), DownStore(), {"database": True, "redis": True, "storage": False}),
        (database_up, None, InMemoryObjectStore(), {"database": True, "storage": True}),
    ],
    ids=["all-up", "database-down", "redis-down", "storage-down", "no-redis"],
)
async def test_the_api_checks_postgres_redis_when_it_has_one_and_the_store(
    database: Any, redis: FakeRedis | None, store: ObjectStore, expected: dict[str, bool]
) -> None:
    assert await api_readiness(database, redis, store)() == expected  # type: ignore[arg-type]


# -- over HTTP ------------------------------------------------------------------------------------------------------


def app_with(objects: ObjectStore, **overrides: Any) -> Litestar:
    """The app on the in-memory core, with the real readiness of Redis (``redis_url``) and of ``objects``."""
    settings = Settings(jwt_secret="t" * 40, argon2_profile="test", rate_limiting=False, **overrides)
    container = container_for(settings)
    container.pool.override(providers.Object(None))
    container.uow.override(providers.Object(InMemoryStore().uow))
    container.readiness.override(providers.Object(database_up))
    container.object_store.override(providers.Object(objects))
    return create_app(container, settings)


def assert_unavailable(r: httpx.Response, failing: str) -> None:
    assert r.status_code == 503, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert int(r.headers["retry-after"]) >= 1
    body = r.json()
    assert body["status"] == "unavailable"
    assert [name for name, ok in body["checks"].items() if not ok] == [failing]


async def test_ready_is_200_with_every_check_named() -> None:
    async with AsyncTestClient(app_with(InMemoryObjectStore())) as client:
        r = await client.get("/health/ready")
    assert r.status_code == 200
    assert "retry-after" not in r.headers
    assert r.json() == {"status": "ok", "checks": {"database": True, "storage": True}}


async def test_ready_is_503_when_the_files_directory_is_gone(tmp_path: Path) -> None:
    objects = FilesystemObjectStore(tmp_path / "files", secret=b"s" * 32, public_base_url="http://api")
    async with AsyncTestClient(app_with(objects)) as client:
        assert (await client.get("/health/ready")).status_code == 200
        shutil.rmtree(tmp_path / "files")
        assert_unavailable(await client.get("/health/ready"), "storage")


def a_closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def test_ready_is_503_when_s3_does_not_answer() -> None:
    # No session given: the client makes its own on first use, on the app's loop (the test client runs the app
    # in a thread of its own), and it is closed there.
    client = Minio(f"127.0.0.1:{a_closed_port()}", access_key="k", secret_key="s", secure=False, region="us-east-1")
    async with AsyncTestClient(app_with(S3ObjectStore(client, "chat4all"))) as api:
        started = time.monotonic()
        assert_unavailable(await api.get("/health/ready"), "storage")
        assert time.monotonic() - started < CHECK_TIMEOUT_S + 1
        api.blocking_portal.call(close_client, client)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A Redis of this test's own, which it may stop."""
    server = EmbeddedRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.integration
async def test_ready_is_503_when_redis_is_away(own_redis: EmbeddedRedis) -> None:
    async with AsyncTestClient(app_with(InMemoryObjectStore(), redis_url=own_redis.url)) as client:
        r = await client.get("/health/ready")
        assert r.status_code == 200
        assert r.json()["checks"] == {"database": True, "redis": True, "storage": True}
        own_redis.stop()
        started = time.monotonic()
        assert_unavailable(await client.get("/health/ready"), "redis")
        assert time.monotonic() - started < CHECK_TIMEOUT_S + 1
