"""TopicReader against a real broker (Tansu, in memory): read a topic to its end without joining a group."""

from __future__ import annotations

import time
from collections import defaultdict

import pytest
from aiokafka import AIOKafkaProducer

from adapters.kafka import KafkaPublisher, Received, TopicReader, read_to_end
from application import topics
from application.errors import Unavailable
from application.ports import Event
from entrypoints.stack.postgres import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

TOPIC = topics.STATUS


def by_key(records: list[Received]) -> dict[str, list[int]]:
    seen: dict[str, list[int]] = defaultdict(list)
    for r in records:
        seen[r.key].append(r.payload["i"])
    return dict(seen)


async def publish(bootstrap: str, start: int, count: int, keys: int = 5) -> None:
    async with KafkaPublisher(bootstrap) as publisher:
        await publisher.publish([Event(TOPIC, f"k{i % keys}", {"i": i}) for i in range(start, start + count)])


async def test_reads_everything_up_to_the_end_in_order_per_partition(kafka_bootstrap: str) -> None:
    # several calls, several records per partition and call: the broker stores multi-record batches
    for start in range(0, 60, 20):
        await publish(kafka_bootstrap, start, 20)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(TOPIC, b"not json", key=b"k0")
    finally:
        await producer.stop()
    await publish(kafka_bootstrap, 60, 1)

    got = await read_to_end(kafka_bootstrap, TOPIC)

    assert len(got) == 61  # the record that is not JSON is skipped
    assert [(r.partition, r.offset) for r in got] == sorted((r.partition, r.offset) for r in got)
    assert by_key(got) == {f"k{k}": list(range(k, 61, 5)) for k in range(5)}
    assert await read_to_end(kafka_bootstrap, TOPIC) == got  # nothing consumed: the same again


async def test_stops_at_the_end_it_found_when_it_started(kafka_bootstrap: str) -> None:
    await publish(kafka_bootstrap, 0, 10)
    async with TopicReader(kafka_bootstrap, TOPIC, max_records=3) as reader:
        await publish(kafka_bootstrap, 10, 10)  # published after the start: left for the next reader
        batches = [batch async for batch in reader.batches()]
    assert all(1 <= len(batch) <= 3 for batch in batches)
    got = [r for batch in batches for r in batch]
    assert sorted(r.payload["i"] for r in got) == list(range(10))
    assert len(await read_to_end(kafka_bootstrap, TOPIC)) == 20


async def test_a_missing_or_empty_topic_reads_as_empty(kafka_bootstrap: str) -> None:
    async with TopicReader(kafka_bootstrap, "no.such.topic") as reader:
        assert not reader.exists
        assert [b async for b in reader.batches()] == []
    started = time.monotonic()
    assert await read_to_end(kafka_bootstrap, topics.DEAD_LETTERS) == []
    assert time.monotonic() - started < 5


async def test_a_group_resumes_where_it_committed(kafka_bootstrap: str) -> None:
    await publish(kafka_bootstrap, 0, 30)
    async with TopicReader(kafka_bootstrap, TOPIC, group_id="readers", max_records=4) as first:
        batches = first.batches()
        committed = await anext(batches) + await anext(batches)
        await first.commit()
        uncommitted = await anext(batches)  # read, not committed: the group gets it again
        await batches.aclose()

    async with TopicReader(kafka_bootstrap, TOPIC, group_id="readers") as second:
        rest = [r async for batch in second.batches() for r in batch]
        await second.commit()
    assert sorted(r.payload["i"] for r in committed + rest) == list(range(30))
    assert {(r.partition, r.offset) for r in uncommitted} <= {(r.partition, r.offset) for r in rest}

    await publish(kafka_bootstrap, 30, 5)
    async with TopicReader(kafka_bootstrap, TOPIC, group_id="readers") as third:
        assert sorted([r.payload["i"] async for batch in third.batches() for r in batch]) == list(range(30, 35))
    async with TopicReader(kafka_bootstrap, TOPIC, group_id="others") as other:  # groups are independent
        assert len([r async for batch in other.batches() for r in batch]) == 35
    with pytest.raises(RuntimeError, match="group_id"):
        async with TopicReader(kafka_bootstrap, TOPIC) as no_group:
            await no_group.commit()


async def test_an_unreachable_broker_is_unavailable_in_bounded_time() -> None:
    started = time.monotonic()
    with pytest.raises(Unavailable):
        await read_to_end(f"127.0.0.1:{free_port()}", TOPIC, answer_within=1.0)
    assert time.monotonic() - started < 5
