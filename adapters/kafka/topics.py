"""The topic catalogue and :func:`ensure_topics`, which creates the missing ones (idempotent, retried)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

import attrs
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from application.errors import Unavailable
from application.topics import all_topics

log = logging.getLogger(__name__)

DEFAULT_PARTITIONS = 8
"""Partitions per topic: the most consumers one group can keep busy on a topic."""


@attrs.frozen
class TopicSpec:
    """One topic as the platform wants it."""

    name: str
    partitions: int = attrs.field(default=DEFAULT_PARTITIONS, validator=attrs.validators.ge(1))
    replication_factor: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    min_insync_replicas: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.ge(1))
    )
    """How many replicas must have a write before it counts (``min.insync.replicas``); None: the broker's default."""

    def new_topic(self) -> NewTopic:
        configs = {} if self.min_insync_replicas is None else {"min.insync.replicas": str(self.min_insync_replicas)}
        return NewTopic(self.name, self.partitions, self.replication_factor, topic_configs=configs)


def catalogue(
    partitions: int = DEFAULT_PARTITIONS,
    topics: Iterable[str] | None = None,
    *,
    replication_factor: int = 1,
    min_insync_replicas: int | None = None,
) -> list[TopicSpec]:
    """Every topic of ``topics`` (default: all the platform uses) with ``partitions`` partitions."""
    names = all_topics() if topics is None else list(topics)
    return [TopicSpec(name, partitions, replication_factor, min_insync_replicas) for name in names]


class _Retry(Exception):
    """An attempt failed in a way that may pass (the broker is starting, a leader is moving)."""


async def _attempt(bootstrap: str, specs: list[TopicSpec], request_timeout_ms: int) -> list[str]:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, client_id="chat4all-admin", request_timeout_ms=request_timeout_ms
    )
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        if not missing:
            return []
        response = await admin.create_topics([s.new_topic() for s in missing], timeout_ms=request_timeout_ms)
        created: list[str] = []
        retry: list[str] = []
        for topic, code, *rest in response.topic_errors:
            if code == 0:
                created.append(topic)
                continue
            error = for_code(code)
            if error is TopicAlreadyExistsError:  # someone else created it meanwhile
                continue
            message = rest[0] if rest and rest[0] else error.__name__
            if error.retriable:
                retry.append(f"{topic}: {message}")
            else:
                raise Unavailable(f"kafka at {bootstrap} refused to create topic {topic}: {message}")
        if created:
            log.info("created kafka topics %s", ", ".join(created))
        if retry:
            raise _Retry("; ".join(retry))
        return [s.name for s in missing if s.name in created]
    finally:
        await admin.close()


async def ensure_topics(
    bootstrap: str,
    partitions: int = DEFAULT_PARTITIONS,
    topics: Iterable[str] | None = None,
    *,
    replication_factor: int = 1,
    min_insync_replicas: int | None = None,
    retry_for: float = 30.0,
    request_timeout_ms: int = 5000,
) -> list[str]:
    """Create every topic of ``topics`` (default: all the platform uses) that does not exist yet.

    Existing topics are left as they are, whatever their partition count. While the broker cannot be reached
    (it may be starting) the attempt is repeated until ``retry_for`` seconds have passed.

    Returns:
        The names of the topics this call created.

    Raises:
        Unavailable: the broker was not reachable in time, or refused to create a topic.
    """
    if min_insync_replicas is not None and min_insync_replicas > replication_factor:
        raise ValueError(
            f"min.insync.replicas {min_insync_replicas} exceeds the replication factor {replication_factor}"
        )
    specs = catalogue(
        partitions, topics, replication_factor=replication_factor, min_insync_replicas=min_insync_replicas
    )
    deadline = time.monotonic() + retry_for
    delay = 0.05
    while True:
        left = deadline - time.monotonic()
        try:
            async with asyncio.timeout(max(left, 0.1)):
                return await _attempt(bootstrap, specs, request_timeout_ms)
        except (_Retry, KafkaError, OSError, TimeoutError) as exc:
            if time.monotonic() + delay > deadline:
                raise Unavailable(f"kafka at {bootstrap}: topics not ensured within {retry_for:.0f}s ({exc})") from exc
            log.debug("kafka at %s not ready for topics yet (%s); retrying", bootstrap, exc)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 1.0)
