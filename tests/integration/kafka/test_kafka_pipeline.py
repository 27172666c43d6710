"""The Kafka adapters against a real broker (Tansu, in memory): publish, consume, commit, rebalance, fail."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from adapters.kafka import DEFAULT_PARTITIONS, KafkaPublisher, catalogue, ensure_topics
from adapters.kafka.consumer import Offsets
from adapters.kafka.publisher import encode_event
from application import topics
from application.errors import Unavailable
from application.ports import Event
from domain.channels import Channel
from entrypoints.stack.kafka import EmbeddedKafka
from entrypoints.stack.postgres import free_port
from tests.integration.kafka.helpers import consumer, drain, quiet, until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@pytest.fixture
def bare_kafka(tmp_path: Path) -> Iterator[EmbeddedKafka]:
    """A broker without any topic (``kafka_server`` has the platform's already)."""
    server = EmbeddedKafka(tmp_path)
    server.start()
    yield server
    server.stop()


async def partition_counts(bootstrap: str, names: list[str]) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(names)
    finally:
        await admin.close()
    return {t["topic"]: len(t["partitions"]) for t in described if t["error_code"] == 0}


def test_events_are_compact_json_keyed_in_utf8() -> None:
    event = Event(topic="t", key="conversa-ção", payload={"text": "Olá", "n": [1, 2], "ok": True})
    assert encode_event(event) == ("conversa-ção".encode(), '{"text":"Olá","n":[1,2],"ok":true}'.encode())


async def test_round_trip_keeps_order_per_key_across_many_keys(kafka_bootstrap: str) -> None:
    keys = [f"conv-{k}" for k in range(40)]
    sent = [
        Event(topics.MESSAGES, key, {"key": key, "seq": seq, "text": f"m{seq} ✓"}) for seq in range(25) for key in keys
    ]
    async with KafkaPublisher(kafka_bootstrap) as publisher:
        for start in range(0, len(sent), 250):  # several calls, one after the other
            await publisher.publish(sent[start : start + 250])

    async with consumer(kafka_bootstrap, [topics.MESSAGES]) as c:
        got = await drain(c, len(sent))
    assert len(got) == len(sent)  # nothing lost, nothing twice
    by_key: dict[str, list[int]] = defaultdict(list)
    partitions: dict[str, set[int]] = defaultdict(set)
    for r in got:
        assert r.topic == topics.MESSAGES
        assert r.payload == {"key": r.key, "seq": r.payload["seq"], "text": f"m{r.payload['seq']} ✓"}
        by_key[r.key].append(r.payload["seq"])
        partitions[r.key].add(r.partition)
    assert sorted(by_key) == sorted(keys)
    for key, seqs in by_key.items():
        assert seqs == list(range(25)), key  # in the order published
        assert len(partitions[key]) == 1  # one key, one partition
    assert len({p for ps in partitions.values() for p in ps}) > 1  # and the keys spread over the partitions
    assert all(r.timestamp.tzinfo is not None for r in got)


async def test_uncommitted_records_go_to_the_next_consumer_of_the_group_committed_ones_do_not(
    kafka_bootstrap: str,
) -> None:
    async with KafkaPublisher(kafka_bootstrap) as publisher:
        await publisher.publish([Event(topics.STATUS, f"k{i % 7}", {"batch": 1, "i": i}) for i in range(60)])
        first = consumer(kafka_bootstrap, [topics.STATUS], "status-workers")
        async with first:
            done = await drain(first, 60)
            assert {r.payload["batch"] for r in done} == {1}
            await first.commit()  # batch 1 is durable
            await publisher.publish([Event(topics.STATUS, f"k{i % 7}", {"batch": 2, "i": i}) for i in range(40)])
            in_flight = await drain(first, 40)
            assert sorted(r.payload["i"] for r in in_flight) == list(range(40))
            # crash before the work of batch 2 was durable: no commit

    async with consumer(kafka_bootstrap, [topics.STATUS], "status-workers") as second:
        again = await drain(second, 40)
        assert await quiet(second, 1.0) == []
    assert [r.payload["batch"] for r in again] == [2] * 40
    assert sorted(r.payload["i"] for r in again) == list(range(40))

    async with consumer(kafka_bootstrap, [topics.STATUS], "another-group") as other:  # groups are independent
        assert len(await drain(other, 100)) == 100


async def test_ensure_topics_is_idempotent_and_creates_the_partition_counts_asked(bare_kafka: EmbeddedKafka) -> None:
    bootstrap = bare_kafka.bootstrap
    assert await ensure_topics(bootstrap, 3, ["t.alpha", "t.beta"]) == ["t.alpha", "t.beta"]
    assert await ensure_topics(bootstrap, 3, ["t.alpha", "t.beta"]) == []
    assert await ensure_topics(bootstrap, 5, ["t.alpha", "t.gamma"]) == ["t.gamma"]  # existing ones stay
    assert await partition_counts(bootstrap, ["t.alpha", "t.beta", "t.gamma"]) == {
        "t.alpha": 3,
        "t.beta": 3,
        "t.gamma": 5,
    }
    names = topics.all_topics()
    assert sorted(await ensure_topics(bootstrap)) == sorted(names)
    assert await partition_counts(bootstrap, names) == dict.fromkeys(names, DEFAULT_PARTITIONS)
    assert [s.name for s in catalogue(2)] == names
    assert {s.partitions for s in catalogue(2)} == {2}


async def test_ensure_topics_waits_for_a_starting_broker(tmp_path: Path) -> None:
    server = EmbeddedKafka(tmp_path)
    task = asyncio.create_task(ensure_topics(server.bootstrap, 2, ["late"], retry_for=20))
    await asyncio.sleep(0.5)  # the broker is not there yet: the call keeps trying
    assert not task.done()
    await asyncio.to_thread(server.start)
    try:
        assert await asyncio.wait_for(task, 20) == ["late"]
    finally:
        server.stop()


async def test_nothing_to_reach_is_unavailable_in_bounded_time() -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(Unavailable):
        await ensure_topics(nowhere, retry_for=1.0)
    with pytest.raises(Unavailable):
        await KafkaPublisher(nowhere, request_timeout_ms=1000).publish([Event(topics.MESSAGES, "k", {})])
    with pytest.raises(Unavailable):
        await consumer(nowhere, [topics.MESSAGES], start_timeout=2.0).start()
    assert time.monotonic() - started < 15


async def test_a_publisher_whose_broker_stopped_raises_unavailable_in_bounded_time(
    kafka_server: EmbeddedKafka,
) -> None:
    publisher = KafkaPublisher(kafka_server.bootstrap, request_timeout_ms=1500)
    await publisher.start()
    try:
        await publisher.publish([Event(topics.MESSAGES, "k", {"n": 1})])
        kafka_server.stop()
        started = time.monotonic()
        with pytest.raises(Unavailable):
            await publisher.publish([Event(topics.MESSAGES, "k", {"n": n}) for n in range(20)])
        assert time.monotonic() - started < publisher.publish_timeout + 1
    finally:
        await publisher.stop()


async def test_a_consumer_whose_broker_stopped_polls_nothing_and_cannot_commit(kafka_server: EmbeddedKafka) -> None:
    async with KafkaPublisher(kafka_server.bootstrap) as publisher:
        await publisher.publish([Event(topics.MESSAGES, "k", {"n": 1})])
    async with consumer(kafka_server.bootstrap, [topics.MESSAGES], commit_timeout=1.5) as c:
        assert len(await drain(c, 1)) == 1
        kafka_server.stop()
        assert await c.poll(timeout_ms=300) == []  # no crash while the broker is away
        started = time.monotonic()
        with pytest.raises(Unavailable):
            await c.commit()
        assert time.monotonic() - started < 5


async def test_an_undecodable_record_is_skipped_and_committed_not_fatal(
    kafka_bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    raw = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await raw.start()
    try:
        for value in (b"not json", b"[1, 2]", b'"a string"', b"\xff\xfe", None):
            await raw.send_and_wait(topics.RECEIPTS, value=value, key=b"same")
        await raw.send_and_wait(topics.RECEIPTS, value=b'{"ok": 1}', key=b"\xff")  # key is not utf-8
    finally:
        await raw.stop()
    async with KafkaPublisher(kafka_bootstrap) as publisher:
        await publisher.publish([Event(topics.RECEIPTS, "same", {"ok": 2})])

    with caplog.at_level(logging.WARNING, logger="adapters.kafka.consumer"):
        async with consumer(kafka_bootstrap, [topics.RECEIPTS], "receipts") as c:
            got = await drain(c, 1)
            assert [(r.key, r.payload) for r in got] == [("same", {"ok": 2})]
            await c.commit()
    assert sum("skipping record" in m for m in caplog.messages) == 6

    async with consumer(kafka_bootstrap, [topics.RECEIPTS], "receipts") as c:
        assert await quiet(c, 1.5) == []  # the skipped records were committed with the good one


async def test_two_consumers_of_a_group_split_the_partitions_and_one_takes_over(kafka_bootstrap: str) -> None:
    everything = {(topics.MESSAGES, p) for p in range(DEFAULT_PARTITIONS)}
    first = consumer(kafka_bootstrap, [topics.MESSAGES], "routers")
    second = consumer(kafka_bootstrap, [topics.MESSAGES], "routers")
    await first.start()
    try:
        await until(lambda: first.assignment() == everything, 20, "the first member owns every partition", first)
        await second.start()
        try:
            await until(
                lambda: bool(first.assignment()) and bool(second.assignment()),
                20,
                "both members own partitions",
                first,
                second,
            )
            assert first.assignment() | second.assignment() == everything
            assert not first.assignment() & second.assignment()

            events = [Event(topics.MESSAGES, f"c{i}", {"i": i}) for i in range(200)]
            async with KafkaPublisher(kafka_bootstrap) as publisher:
                await publisher.publish(events)
            got: list = []
            deadline = time.monotonic() + 20
            while len(got) < len(events):
                assert time.monotonic() < deadline, f"only {len(got)} records"
                a, b = await asyncio.gather(first.poll(200), second.poll(200))
                assert {(r.topic, r.partition) for r in a} <= first.assignment()
                assert {(r.topic, r.partition) for r in b} <= second.assignment()
                got += a + b
            assert sorted(r.payload["i"] for r in got) == list(range(200))
        finally:
            await second.stop()
        await until(lambda: first.assignment() == everything, 20, "the first member took every partition back", first)
    finally:
        await first.stop()


async def test_a_paused_consumer_receives_nothing_until_resumed(kafka_bootstrap: str) -> None:
    async with consumer(kafka_bootstrap, [topics.DEAD_LETTERS]) as c:
        await until(lambda: bool(c.assignment()), 20, "partitions assigned", c)
        c.pause_all()
        assert c.paused
        async with KafkaPublisher(kafka_bootstrap) as publisher:
            await publisher.publish([Event(topics.DEAD_LETTERS, f"k{i}", {"i": i}) for i in range(30)])
        assert await quiet(c, 1.5) == []
        c.resume_all()
        assert not c.paused
        assert sorted(r.payload["i"] for r in await drain(c, 30)) == list(range(30))


async def test_an_idle_consumer_fetches_with_the_long_wait_and_records_bring_the_short_one_back(
    kafka_bootstrap: str,
) -> None:
    topic = f"t.idle-{uuid.uuid4().hex[:8]}"
    await ensure_topics(kafka_bootstrap, 2, [topic])
    async with consumer(kafka_bootstrap, [topic], fetch_max_wait_ms=20, idle_fetch_max_wait_ms=400) as c:
        await until(lambda: bool(c.assignment()), 20, "partitions assigned", c)
        assert c.fetch_wait_ms == 20
        assert await quiet(c, 1.5) == []
        assert c.fetch_wait_ms == 400  # what aiokafka's next fetch requests carry
        async with KafkaPublisher(kafka_bootstrap) as publisher:
            await publisher.publish([Event(topic, "k", {"i": 1})])
        assert [r.payload["i"] for r in await drain(c, 1, within=5)] == [1]
        assert c.fetch_wait_ms == 20


async def test_a_rebalance_waits_for_the_batch_in_hand_so_the_new_member_does_not_get_it_again(
    kafka_bootstrap: str,
) -> None:
    """A member handling a batch when another joins finishes and commits it before giving partitions away."""
    topic = topics.outbound(Channel.MESSENGER)
    group = f"handover-{time.monotonic_ns()}"
    async with KafkaPublisher(kafka_bootstrap) as publisher:
        await publisher.publish([Event(topic, f"conversation-{i}", {"i": i}) for i in range(40)])
    first = consumer(kafka_bootstrap, [topic], group)
    second = consumer(kafka_bootstrap, [topic], group)
    await first.start()
    try:
        batch = await drain(first, 40)
        handled: list[int] = []

        async def handle_slowly() -> None:
            async with first.batch():  # the worker's loop holds its batch like this (entrypoints/workers/runner.py)
                await asyncio.sleep(3.0)  # the second member joins meanwhile: its rebalance must wait
                handled.extend(r.payload["i"] for r in batch)
                await first.commit()

        work = asyncio.create_task(handle_slowly())
        await asyncio.sleep(0.2)
        await second.start()
        try:
            again = await quiet(second, 6.0)  # joins, gets partitions once the batch is committed
            await work
            await until(lambda: bool(second.assignment()), 10, "the second member owns partitions", first, second)
            again += await quiet(second, 1.0)
        finally:
            await second.stop()
    finally:
        await first.stop()
    assert sorted(handled) == list(range(40))
    assert [r.payload["i"] for r in again] == [], "records the first member committed were read again"


async def test_a_member_that_finishes_records_out_of_order_commits_positions_and_hands_over_on_revoke(
    kafka_bootstrap: str,
) -> None:
    """The channel worker's way: positions committed per partition, and the revoke hook runs before the hand-over.

    The first member finishes every record but the first of one partition; when a second member joins, the hook
    commits what was finished, so the new owner of that partition reads from its unfinished record on.
    """
    topic = topics.outbound(Channel.INSTAGRAM)
    group = f"lanes-{time.monotonic_ns()}"
    async with KafkaPublisher(kafka_bootstrap) as publisher:
        await publisher.publish([Event(topic, f"conversation-{i}", {"i": i}) for i in range(40)])
    first = consumer(kafka_bootstrap, [topic], group)
    second = consumer(kafka_bootstrap, [topic], group)
    offsets = Offsets()
    revoked: list[frozenset[tuple[str, int]]] = []

    async def on_revoke(partitions: frozenset[tuple[str, int]]) -> None:
        revoked.append(partitions)
        await first.commit_positions(offsets.positions(partitions))
        offsets.forget(partitions)

    first.on_revoke = on_revoke
    await first.start()
    try:
        records = await drain(first, 40)
        for r in records:
            offsets.taken(r.topic, r.partition, r.offset)
        by_partition: dict[int, list] = defaultdict(list)
        for r in records:
            by_partition[r.partition].append(r)
        held = by_partition[min(by_partition)][0]  # unfinished: it and what follows in its partition come back
        for r in records:
            if r is not held:
                offsets.finished(r.topic, r.partition, r.offset)
        await second.start()
        try:
            await until(
                lambda: bool(first.assignment()) and bool(second.assignment()),
                20,
                "both members own partitions",
                first,
                second,
            )
            again = await quiet(second, 2.0) + await quiet(first, 0.5)
        finally:
            await second.stop()
    finally:
        await first.stop()
    assert revoked, "the hook was not called"
    expected = sorted(r.payload["i"] for r in by_partition[held.partition])
    assert sorted(r.payload["i"] for r in again) == expected
