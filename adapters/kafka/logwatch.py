"""Noticing that the broker lost records it had acknowledged: an end offset that went backwards.

A replicated Kafka cluster does not lose acknowledged records, but a broker that keeps its log in
memory (the embedded Tansu of `chat4all up`) comes back empty after a crash, and a topic deleted
and re-created by hand starts again at offset 0. Either way, records the relay published and
marked published may never have been consumed. The relay asks this watch now and then and, when a
partition's end offset is below the highest it saw, publishes the recent outbox again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from adapters.kafka.clients import starting
from application.errors import Unavailable

log = logging.getLogger(__name__)


class LogWatch:
    """Reads the end offsets of ``topics`` (no consumer group) and remembers the highest of each partition."""

    def __init__(
        self, bootstrap: str, topics: Sequence[str], *, client_id: str = "chat4all-logwatch", timeout: float = 10.0
    ) -> None:
        self.bootstrap = bootstrap
        self.topics = list(topics)
        self.client_id = client_id
        self.timeout = timeout
        self.highest: dict[TopicPartition, int] = {}
        self._consumer: AIOKafkaConsumer | None = None

    async def _client(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap,
                client_id=self.client_id,
                enable_auto_commit=False,
                request_timeout_ms=int(self.timeout * 1000),
            )
            async with starting(consumer, self.bootstrap, self.timeout):
                await consumer.start()
                await asyncio.sleep(0)  # let its background tasks start before a stop() (see TopicReader)
            self._consumer = consumer
        return self._consumer

    async def lost(self) -> list[str]:
        """The partitions (``topic/partition``) whose end offset is now below the highest seen; empty if none.

        Raises:
            Unavailable: the broker could not be asked (the caller tries again later).
        """
        consumer = await self._client()
        try:
            async with asyncio.timeout(self.timeout):
                await consumer._client.force_metadata_update()  # a re-created topic has new leaders
                partitions = [
                    TopicPartition(topic, p)
                    for topic in self.topics
                    for p in consumer.partitions_for_topic(topic) or ()
                ]
                ends = await consumer.end_offsets(partitions) if partitions else {}
        except (KafkaError, OSError, TimeoutError) as exc:
            await self.stop()  # a fresh client next time: the old one may hold connections to a dead broker
            raise Unavailable(f"kafka at {self.bootstrap}: cannot read end offsets: {exc!r}") from exc
        lost = [f"{tp.topic}/{tp.partition}" for tp, end in ends.items() if end < self.highest.get(tp, 0)]
        if lost:
            self.highest = dict(ends)  # a new log: measure it from here
        else:
            for tp, end in ends.items():
                self.highest[tp] = max(end, self.highest.get(tp, 0))
        return lost

    async def stop(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.timeout):
                    await consumer.stop()
