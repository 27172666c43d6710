"""Bounded waits and fast-rebalancing consumers for the Kafka tests."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

from adapters.kafka import KafkaBatchConsumer, Received

# A member that crashed or left is noticed within a second, so joins and rebalances in tests take about a second.
FAST = {"session_timeout_ms": 1000, "heartbeat_interval_ms": 100}


def consumer(bootstrap: str, topics: list[str], group_id: str | None = None, **options: Any) -> KafkaBatchConsumer:
    return KafkaBatchConsumer(bootstrap, topics, group_id or f"test-{uuid.uuid4().hex[:8]}", **{**FAST, **options})


async def drain(c: KafkaBatchConsumer, count: int, within: float = 20.0) -> list[Received]:
    """Poll until ``count`` records arrived (fail after ``within`` s); then poll once more to catch extras."""
    got: list[Received] = []
    deadline = time.monotonic() + within
    while len(got) < count:
        assert time.monotonic() < deadline, f"only {len(got)} of {count} records within {within}s"
        got += await c.poll(timeout_ms=200)
    got += await c.poll(timeout_ms=300)
    return got


async def quiet(c: KafkaBatchConsumer, seconds: float) -> list[Received]:
    """Everything ``c`` receives during ``seconds``."""
    got: list[Received] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        got += await c.poll(timeout_ms=100)
    return got


async def until(condition: Callable[[], bool], within: float, what: str, *poll: KafkaBatchConsumer) -> None:
    """Poll every consumer of ``poll`` (they stay in their group) until ``condition()`` holds."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {within}s"
        if poll:
            await asyncio.gather(*(c.poll(timeout_ms=100) for c in poll))
        else:
            await asyncio.sleep(0.1)
