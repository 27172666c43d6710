"""What every aiokafka client of ours does when it starts: bounded in time, and ``Unavailable`` if it cannot;
and what none of them does: create a topic by asking about it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiokafka.client
from aiokafka.errors import KafkaError
from aiokafka.protocol.metadata import MetadataRequest

from application.errors import Unavailable


class _MetadataRequestWithoutCreation(MetadataRequest):  # type: ignore[misc]  # aiokafka has no type hints
    """A metadata request that never asks the broker to create the topics it names.

    aiokafka asks for auto-creation on every metadata request. A broker that allows it (Tansu always does)
    then creates a topic any client merely mentions, with the broker's default partition count (Tansu: 4):
    after an in-memory broker restarts, workers reconnect before ``ensure_topics`` re-creates the topics,
    and a topic born with 4 partitions instead of 8 strands every record a producer with the old metadata
    sends to partitions 4-7. Our topics are created by ``ensure_topics`` only; a client that asks about a
    missing one is told so and asks again.
    """

    def __init__(self, topics: list[str] | None = None, allow_auto_topic_creation: bool | None = False) -> None:
        super().__init__(topics, allow_auto_topic_creation)


aiokafka.client.MetadataRequest = _MetadataRequestWithoutCreation


@contextlib.asynccontextmanager
async def starting(client: Any, bootstrap: str, seconds: float | None) -> AsyncIterator[None]:
    """Run the block that starts ``client`` within ``seconds``.

    A broker error, a network error or the timeout stops the half-started client and becomes
    ``Unavailable``, the error the use cases know how to wait out.
    """
    try:
        async with asyncio.timeout(seconds):
            yield
    except (KafkaError, OSError, TimeoutError) as exc:
        with contextlib.suppress(Exception):
            await client.stop()
        raise Unavailable(f"kafka at {bootstrap} is unavailable: {exc!r}") from exc
