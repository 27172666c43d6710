"""Rate limits over HTTP: 429 problem+json with Retry-After, nothing changed, and let through again later.

In process on the memory limiter, and across two API processes' worth of apps on one real Redis.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from adapters.memory import InMemoryStore
from tests.api.conftest import Api, build_app

pytestmark = pytest.mark.unit

FAST = {"per_second": 5, "burst": 2}  # two at once, then one every 0.2 s


@pytest.fixture
async def limited(store: InMemoryStore) -> AsyncIterator[Api]:
    limits = {"send": FAST, "expensive": FAST, "login": FAST, "anonymous": {"per_second": 100, "burst": 100}}
    async with AsyncTestClient(build_app(store, rate_limiting=True, rate_limits=limits)) as client:
        yield Api(client)


def assert_rate_limited(r: httpx.Response) -> float:
    assert r.status_code == 429, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert problem["type"].endswith("/rate-limited")
    assert problem["status"] == 429
    assert "retry in" in problem["detail"]
    retry_after = int(r.headers["retry-after"])
    assert retry_after >= 1
    return retry_after


async def test_sending_past_the_limit_is_429_with_retry_after_and_stores_nothing(
    limited: Api, store: InMemoryStore
) -> None:
    ana, _ = await limited.user("ana"), await limited.user("bruno")
    conv = (await limited.conversation(ana, "bruno"))["conversation_id"]
    answers = [await limited.send(ana, conv, f"m{i}") for i in range(3)]
    assert [r.status_code for r in answers[:2]] == [202, 202]
    assert_rate_limited(answers[2])
    assert len(store.state.messages) == 2

    await asyncio.sleep(0.25)
    assert (await limited.send(ana, conv, "again")).status_code == 202  # the bucket refilled
    assert len(store.state.messages) == 3


async def test_log_in_attempts_are_limited_per_account(limited: Api) -> None:
    await limited.user("ana")  # one log-in taken
    wrong = [
        await limited.client.post("/auth/token", json={"username": "ana", "password": "not the password"})
        for _ in range(2)
    ]
    assert [r.status_code for r in wrong] == [401, 429]
    assert_rate_limited(wrong[1])
    other = await limited.client.post("/auth/token", json={"username": "bruno", "password": "not the password"})
    assert other.status_code == 401  # another account is not held back


async def test_opening_uploads_counts_as_an_expensive_call(limited: Api, store: InMemoryStore) -> None:
    ana = await limited.user("ana")
    body = {"filename": "a.txt", "size": 10, "content_type": "text/plain"}
    answers = [await limited.client.post("/v1/files/initiate", json=body, headers=ana["headers"]) for _ in range(3)]
    assert [r.status_code for r in answers[:2]] == [201, 201]
    assert_rate_limited(answers[2])
    assert len(store.state.uploads) == 2


async def test_sign_ups_are_limited_per_address(store: InMemoryStore) -> None:
    limits = {"anonymous": {"per_second": 0.5, "burst": 2}}
    async with AsyncTestClient(build_app(store, rate_limiting=True, rate_limits=limits)) as client:
        answers = [
            await client.post("/v1/users", json={"username": f"user{i}", "password": "correct horse"}) for i in range(3)
        ]
    assert [r.status_code for r in answers[:2]] == [201, 201]
    assert assert_rate_limited(answers[2]) == 2
    assert len(store.state.users) == 2


@pytest.mark.integration
async def test_api_processes_share_the_limits_through_redis(redis_url: str) -> None:
    store = InMemoryStore()
    settings: dict[str, Any] = {"rate_limiting": True, "rate_limits": {"send": FAST}, "redis_url": redis_url}
    apps: list[Litestar] = [build_app(store, **settings), build_app(store, **settings)]
    async with AsyncTestClient(apps[0]) as first, AsyncTestClient(apps[1]) as second:
        one = Api(first)
        ana, _ = await one.user("ana"), await one.user("bruno")
        conv = (await one.conversation(ana, "bruno"))["conversation_id"]
        two = Api(second)
        answers = [await api.send(ana, conv, f"m{i}") for i, api in enumerate((one, two, one))]
    assert [r.status_code for r in answers] == [202, 202, 429]
    assert len(store.state.messages) == 2
