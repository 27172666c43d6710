"""The presence store's contract, on the in-memory twin and on a real Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from redis.asyncio import Redis

from adapters.memory.presence import InMemoryPresence
from adapters.redis import RedisPresence
from application.ports import PresenceChange, PresenceStore
from domain.ids import UserId
from domain.presence import PresenceStatus
from tests.builders import T0

pytestmark = pytest.mark.contract

ONLINE, AWAY, OFFLINE = PresenceStatus.ONLINE, PresenceStatus.AWAY, PresenceStatus.OFFLINE
TTL = timedelta(seconds=60)


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.integration)])
async def presence(request: pytest.FixtureRequest) -> AsyncIterator[PresenceStore]:
    if request.param == "memory":
        yield InMemoryPresence()
        return
    client = Redis.from_url(request.getfixturevalue("redis_url"))
    try:
        yield RedisPresence(client)
    finally:
        await client.aclose()


def user() -> UserId:
    return UserId(uuid.uuid4())


async def test_the_strongest_live_client_wins_and_the_last_one_to_go_makes_the_user_offline(
    presence: PresenceStore,
) -> None:
    ana = user()
    assert await presence.state(ana, at=T0) == (OFFLINE, None)
    assert await presence.seen(ana, "hb", AWAY, at=T0, ttl=TTL) == PresenceChange(OFFLINE, AWAY)
    assert await presence.seen(ana, "socket-1", ONLINE, at=T0, ttl=TTL) == PresenceChange(AWAY, ONLINE)
    assert await presence.seen(ana, "socket-2", ONLINE, at=T0, ttl=TTL) == PresenceChange(ONLINE, ONLINE)
    assert await presence.gone(ana, "socket-1", at=T0) == PresenceChange(ONLINE, ONLINE)
    assert await presence.gone(ana, "socket-2", at=T0 + timedelta(seconds=1)) == PresenceChange(ONLINE, AWAY)
    assert await presence.gone(ana, "hb", at=T0 + timedelta(seconds=2)) == PresenceChange(AWAY, OFFLINE)
    assert await presence.state(ana, at=T0 + timedelta(seconds=3)) == (OFFLINE, T0 + timedelta(seconds=2))
    assert await presence.gone(ana, "never-seen", at=T0) == PresenceChange(OFFLINE, OFFLINE)


async def test_silence_past_the_ttl_is_offline_and_each_lapse_is_reported_once(presence: PresenceStore) -> None:
    ana, bob = user(), user()
    await presence.seen(ana, "hb", ONLINE, at=T0, ttl=TTL)
    await presence.seen(bob, "hb", ONLINE, at=T0, ttl=TTL)
    await presence.seen(bob, "hb", ONLINE, at=T0 + timedelta(seconds=30), ttl=TTL)  # bob keeps beating

    assert await presence.lapsed(at=T0 + timedelta(seconds=59), limit=10) == []
    later = T0 + timedelta(seconds=61)
    reports = await asyncio.gather(*(presence.lapsed(at=later, limit=10) for _ in range(3)))
    assert sorted(reports, key=len) == [[], [], [(ana, T0)]]
    assert await presence.state(ana, at=later) == (OFFLINE, T0)
    assert (await presence.state(bob, at=later))[0] is ONLINE
    assert await presence.lapsed(at=T0 + timedelta(seconds=91), limit=10) == [(bob, T0 + timedelta(seconds=30))]
    # seen again after a lapse: online again, and a later lapse is reported again
    assert await presence.seen(ana, "hb", AWAY, at=later, ttl=TTL) == PresenceChange(OFFLINE, AWAY)
    assert await presence.lapsed(at=later + TTL, limit=10) == [(ana, later)]
