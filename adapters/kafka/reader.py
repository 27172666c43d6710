"""Read one topic from a starting point up to its end, without joining a consumer group.

For operator commands (``chat4all dlq``) rather than workers: every partition is assigned by hand, the end
offsets are captured when the reader starts, and reading stops there, so records published meanwhile wait for
the next run. With a ``group_id`` the reader starts where that group committed (else at the beginning) and
:meth:`TopicReader.commit` stores its progress there; it still never joins the group (no rebalances, no
session), so two readers of one group at once would both read the same records.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Self

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from adapters.kafka.clients import starting
from adapters.kafka.consumer import Received, decode_record
from application.errors import Unavailable

log = logging.getLogger(__name__)


class TopicReader:
    """Reads every partition of ``topic`` up to the end offsets found at :meth:`start`."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        group_id: str | None = None,
        client_id: str = "chat4all-reader",
        max_records: int = 500,
        request_timeout_ms: int = 10_000,
        timeout: float = 15.0,
    ) -> None:
        if max_records < 1:
            raise ValueError("max_records must be positive")
        self.bootstrap = bootstrap
        self.topic = topic
        self.group_id = group_id
        self.client_id = client_id
        self.max_records = max_records
        self.request_timeout_ms = request_timeout_ms
        self.timeout = timeout
        """Bound, in seconds, on starting, on each fetch round and on each commit."""
        self._consumer: AIOKafkaConsumer | None = None
        self._end: dict[TopicPartition, int] = {}
        self._confirmed: set[TopicPartition] = set()
        self.exists = False
        """Whether the topic was there when the reader started (a missing topic reads as empty)."""

    async def start(self) -> None:
        """Connect, assign every partition and capture the end offsets (idempotent).

        Raises:
            Unavailable: the broker could not be reached or did not answer in time.
        """
        if self._consumer is not None:
            return
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=self.group_id,
            client_id=self.client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            request_timeout_ms=self.request_timeout_ms,
            fetch_max_wait_ms=100,
        )
        async with starting(consumer, self.bootstrap, self.timeout):
            await consumer.start()
            # let the consumer's background tasks start: aiokafka's stop() re-raises the cancellation of a
            # task that never ran (the offset routine of a consumer without a group)
            await asyncio.sleep(0)
            partitions = consumer.partitions_for_topic(self.topic)  # the metadata fetched on start
            tps = sorted(TopicPartition(self.topic, p) for p in partitions or ())
            if tps:
                consumer.assign(tps)
                self._end = dict(await consumer.end_offsets(tps))
        self.exists = bool(tps)
        self._consumer = consumer

    async def stop(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.timeout):
                await consumer.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def _started(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise RuntimeError("the reader is not started")
        return self._consumer

    @property
    def end_offsets(self) -> dict[int, int]:
        """Per partition, the offset reading stops at (captured at :meth:`start`)."""
        return {tp.partition: offset for tp, offset in self._end.items()}

    def _confirm_ends(self) -> None:
        # Tansu 0.6 answers ListOffsets(latest) with the last record batch's base offset + 1, short of the records
        # after the first one of that batch; the high watermark of the first fetch response is the true end.
        consumer = self._started()
        for tp, end in self._end.items():
            if tp not in self._confirmed and (end == 0 or (highwater := consumer.highwater(tp)) is not None):
                self._end[tp] = end if end == 0 else max(end, highwater)
                self._confirmed.add(tp)

    async def _pending(self) -> list[TopicPartition]:
        """The partitions still to read from, or whose end no fetch has confirmed yet."""
        consumer = self._started()
        self._confirm_ends()
        return [tp for tp, end in self._end.items() if tp not in self._confirmed or await consumer.position(tp) < end]

    async def batches(self) -> AsyncIterator[list[Received]]:
        """Batches of at most ``max_records`` records, in offset order per partition, until the end offsets.

        Records whose value is not a JSON object (or whose key is not utf-8) are logged and skipped.

        Raises:
            Unavailable: the broker failed, or answered nothing for ``timeout`` seconds while records were missing.
        """
        consumer = self._started()
        try:
            pending = await self._pending()
            while pending:
                async with asyncio.timeout(self.timeout):
                    fetched = await consumer.getmany(*pending, timeout_ms=200, max_records=self.max_records)
                    while not fetched and (pending := await self._pending()):
                        fetched = await consumer.getmany(*pending, timeout_ms=200, max_records=self.max_records)
                self._confirm_ends()  # before the end offsets filter what was fetched
                batch: list[Received] = []
                for tp, records in fetched.items():
                    for record in records:
                        if record.offset >= self._end[tp]:
                            break  # published after we started: the next run reads it
                        decoded = decode_record(record)
                        if decoded is None:
                            log.warning(
                                "skipping record %s[%d]@%d: its value is not a JSON object",
                                record.topic,
                                record.partition,
                                record.offset,
                            )
                            continue
                        batch.append(decoded)
                if batch:
                    yield batch
                pending = await self._pending()
        except (KafkaError, TimeoutError) as exc:
            raise Unavailable(f"kafka at {self.bootstrap}: reading {self.topic} failed: {exc!r}") from exc

    async def commit(self) -> None:
        """Store, for ``group_id``, the position after every record :meth:`batches` has yielded so far.

        Raises:
            Unavailable: the commit did not go through.
        """
        if self.group_id is None:
            raise RuntimeError("a reader without a group_id has nothing to commit to")
        consumer = self._started()
        offsets = {tp: min(await consumer.position(tp), end) for tp, end in self._end.items()}
        if not offsets:
            return
        try:
            async with asyncio.timeout(self.timeout):
                await consumer.commit(offsets)
        except (KafkaError, TimeoutError) as exc:
            raise Unavailable(f"kafka at {self.bootstrap}: commit for {self.group_id} failed: {exc!r}") from exc


async def read_to_end(
    bootstrap: str, topic: str, *, client_id: str = "chat4all-reader", answer_within: float = 15.0
) -> list[Received]:
    """Every record of ``topic`` from the beginning up to its end when called, without a consumer group.

    In offset order per partition, partitions one after another. A missing topic reads as empty.

    Raises:
        Unavailable: the broker could not be reached or failed while reading.
    """
    got: list[Received] = []
    async with TopicReader(bootstrap, topic, client_id=client_id, timeout=answer_within) as reader:
        async for batch in reader.batches():
            got.extend(batch)
    return sorted(got, key=lambda r: (r.partition, r.offset))
