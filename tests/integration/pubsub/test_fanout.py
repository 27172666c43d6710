"""Fan-out through a real Redis: users' channels across two plugins (two API processes), cold starts included."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import pytest

from adapters.redis import RedisFanout, user_channel
from domain.ids import UserId
from entrypoints.realtime import channels_plugin, redis_for

pytestmark = pytest.mark.integration


async def test_concurrent_first_subscriptions_all_receive_and_frames_cross_processes(redis_url: str) -> None:
    """Many sockets opening at once on a fresh process (clients reconnecting after a restart) all get their frames."""
    first, second, publisher = redis_for(redis_url), redis_for(redis_url), redis_for(redis_url)
    assert first is not None and second is not None and publisher is not None
    users = [UserId(uuid.uuid4()) for _ in range(50)]
    async with contextlib.AsyncExitStack() as stack:
        for client in (first, second, publisher):
            stack.push_async_callback(client.aclose)
        plugins = [await stack.enter_async_context(channels_plugin(c)) for c in (first, second)]
        subscribers = await asyncio.gather(*(plugins[i % 2].subscribe([user_channel(u)]) for i, u in enumerate(users)))
        await asyncio.sleep(0.2)  # SUBSCRIBE is confirmed asynchronously

        await RedisFanout(publisher).push([({"type": "typing", "to": str(u)}, [u]) for u in users])

        async def first_frame(i: int) -> bytes:
            async for data in subscribers[i].iter_events():
                return data
            raise AssertionError("the subscription ended")

        got = await asyncio.wait_for(asyncio.gather(*(first_frame(i) for i in range(len(users)))), 10)
    assert got == [f'{{"type":"typing","to":"{u}"}}'.encode() for u in users]
