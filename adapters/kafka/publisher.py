"""``EventPublisher`` over Kafka: every event is sent, then every acknowledgement awaited."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

import msgspec
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from adapters.kafka.clients import starting
from adapters.tracing import current_trace_headers, kafka_headers
from application.errors import Unavailable
from application.ports import Event

_encoder = msgspec.json.Encoder()


def encode_event(event: Event) -> tuple[bytes, bytes]:
    """The record key (utf-8) and value (compact JSON) of ``event``."""
    return event.key.encode(), _encoder.encode(event.payload)


def _retrieve(future: asyncio.Future[Any]) -> None:
    # a future nobody awaits any more must not log "exception was never retrieved"
    if not future.cancelled():
        future.exception()


class KafkaPublisher:
    """Publishes events with ``acks="all"``; a broker that is down or slow surfaces as ``Unavailable``.

    Per-key order holds within one :meth:`publish` call and across calls made one after the other: a key
    always maps to the same partition and the producer keeps one request in flight per partition.
    ``enable_idempotence`` needs a broker that supports idempotent producers (Apache Kafka does, Tansu does not).
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        client_id: str = "chat4all-publisher",
        enable_idempotence: bool = False,
        linger_ms: int = 5,
        max_batch_size: int = 256 * 1024,
        request_timeout_ms: int = 5000,
        publish_timeout: float | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.client_id = client_id
        self.enable_idempotence = enable_idempotence
        self.linger_ms = linger_ms
        self.max_batch_size = max_batch_size
        self.request_timeout_ms = request_timeout_ms
        # one request timeout for the sends to be accepted plus one for the acks, and a little slack
        self.publish_timeout = publish_timeout if publish_timeout is not None else 2 * request_timeout_ms / 1000 + 1
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Connect (idempotent). Raises ``Unavailable`` when the broker cannot be reached."""
        async with self._lock:
            if self._producer is not None:
                return
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap,
                client_id=self.client_id,
                acks="all",
                enable_idempotence=self.enable_idempotence,
                linger_ms=self.linger_ms,
                max_batch_size=self.max_batch_size,
                request_timeout_ms=self.request_timeout_ms,
            )
            async with starting(producer, self.bootstrap, self.publish_timeout):
                await producer.start()
            self._producer = producer

    async def stop(self) -> None:
        """Flush what is pending (bounded by the publish timeout) and disconnect."""
        async with self._lock:
            producer, self._producer = self._producer, None
            if producer is None:
                return
            try:
                async with asyncio.timeout(self.publish_timeout):
                    await producer.stop()
            except TimeoutError:
                pass  # the broker is gone; what was not acknowledged was never reported as published

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def publish(self, events: Sequence[Event]) -> None:
        """Send every event, in order, and return once the broker acknowledged all of them.

        Raises:
            Unavailable: the broker could not be reached, refused a record or did not answer in time; some of
                the events may have been written (callers retry, consumers are idempotent).
        """
        if not events:
            return
        # A bad payload fails before any send. Each record carries its event's trace context, else the current one.
        context = current_trace_headers()
        records = [(event.topic, *encode_event(event), kafka_headers(event.headers or context)) for event in events]
        if self._producer is None:
            await self.start()
        producer = self._producer
        if producer is None:  # stopped concurrently
            raise Unavailable("the kafka publisher is stopped")
        futures: list[asyncio.Future[Any]] = []
        try:
            async with asyncio.timeout(self.publish_timeout):
                for topic, key, value, headers in records:
                    futures.append(await producer.send(topic, value=value, key=key, headers=headers or None))
                await asyncio.wait(futures)
            for future in futures:
                future.result()
        except (KafkaError, OSError, TimeoutError) as exc:
            for future in futures:
                if future.done():
                    _retrieve(future)
                else:
                    future.add_done_callback(_retrieve)
            raise Unavailable(f"kafka at {self.bootstrap}: publishing failed: {exc!r}") from exc
