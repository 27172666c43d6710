"""The rate limiter's contract (GCRA token buckets), on the in-memory twin and on a real Redis.

The Redis limiter runs on the server's clock, so these tests use real time with rates fast enough to keep them short.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from adapters.memory.limits import InMemoryRateLimiter
from adapters.redis import RedisRateLimiter
from application.ports import Ask, Rate, RateLimiter

pytestmark = pytest.mark.contract

FIVE_A_SECOND = Rate(per_second=5, burst=3)


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.integration)])
async def limiter(request: pytest.FixtureRequest) -> AsyncIterator[RateLimiter]:
    if request.param == "memory":
        yield InMemoryRateLimiter()
        return
    client = Redis.from_url(request.getfixturevalue("redis_url"))
    try:
        yield RedisRateLimiter(client)
    finally:
        await client.aclose()


def bucket() -> str:
    return f"test:{uuid.uuid4()}"


async def test_a_burst_goes_through_then_calls_are_refused_until_the_next_slot(limiter: RateLimiter) -> None:
    key = bucket()
    verdicts = await limiter.acquire([Ask(key, FIVE_A_SECOND) for _ in range(4)])
    assert [v.granted for v in verdicts] == [True, True, True, False]
    assert all(v.wait == 0 for v in verdicts[:3])
    refused = verdicts[3]
    assert 0.1 < refused.wait <= 0.2  # one interval, less the moments the calls took
    await asyncio.sleep(refused.wait + 0.02)
    (again,) = await limiter.acquire([Ask(key, FIVE_A_SECOND)])
    assert again.granted and again.wait == 0
    (next_one,) = await limiter.acquire([Ask(key, FIVE_A_SECOND)])
    assert not next_one.granted


async def test_a_refused_call_takes_nothing(limiter: RateLimiter) -> None:
    key = bucket()
    one = Rate(per_second=5, burst=1)
    assert [v.granted for v in await limiter.acquire([Ask(key, one)] * 5)] == [True, False, False, False, False]
    await asyncio.sleep(0.21)
    assert (await limiter.acquire([Ask(key, one)]))[0].granted  # the refusals did not push the slot back


async def test_a_caller_that_will_wait_books_the_next_slots_in_order(limiter: RateLimiter) -> None:
    key = bucket()
    pace = Rate(per_second=10, burst=1)
    verdicts = await limiter.acquire([Ask(key, pace, max_wait=0.25) for _ in range(4)])
    assert [v.granted for v in verdicts] == [True, True, True, False]
    waits = [v.wait for v in verdicts[:3]]
    assert waits[0] == 0
    # One interval apart, less the moments between the calls (on a busy machine Redis may be paused between them).
    assert 0 < waits[1] <= 0.1
    assert waits[1] < waits[2] <= 0.2
    assert verdicts[3].wait > 0.25


async def test_buckets_are_independent(limiter: RateLimiter) -> None:
    a, b = bucket(), bucket()
    one = Rate(per_second=1, burst=1)
    verdicts = await limiter.acquire([Ask(a, one), Ask(a, one), Ask(b, one)])
    assert [v.granted for v in verdicts] == [True, False, True]


@pytest.mark.integration
async def test_processes_share_a_bucket_in_redis(redis_url: str) -> None:
    first, second = Redis.from_url(redis_url), Redis.from_url(redis_url)
    try:
        key, one = bucket(), Rate(per_second=1, burst=2)
        verdicts = [
            *await RedisRateLimiter(first).acquire([Ask(key, one)]),
            *await RedisRateLimiter(second).acquire([Ask(key, one)]),
            *await RedisRateLimiter(first).acquire([Ask(key, one)]),
        ]
        assert [v.granted for v in verdicts] == [True, True, False]
        assert await first.pttl("c4a:rate:" + key) > 0  # an idle bucket expires
    finally:
        await first.aclose()
        await second.aclose()
