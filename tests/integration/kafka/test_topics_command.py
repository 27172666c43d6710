"""`chat4all topics` creates the platform's topics on a Kafka cluster with the configured partitions and replication."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from click.testing import CliRunner

from adapters.kafka.topics import catalogue
from application.topics import all_topics
from entrypoints.cli import main
from entrypoints.stack.kafka import EmbeddedKafka

pytestmark = pytest.mark.integration


@pytest.fixture
def bare_broker(tmp_path: Path) -> Iterator[str]:
    """A fresh broker with no topic at all."""
    server = EmbeddedKafka(tmp_path / "kafka")
    server.start()
    try:
        yield server.bootstrap
    finally:
        server.stop()


def run_topics(**env: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["topics"], env={"CHAT4ALL_LOG_LEVEL": "WARNING", **env})
    return result.exit_code, result.output


async def partitions_of(bootstrap: str) -> dict[str, int]:
    """The platform's topics on ``bootstrap`` and their partition counts (asking about a missing topic would create
    it on Tansu: only the listed ones are described)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        present = [t for t in all_topics() if t in set(await admin.list_topics())]
        described = await admin.describe_topics(present) if present else []
        return {t["topic"]: len(t["partitions"]) for t in described}
    finally:
        await admin.close()


def test_it_creates_every_topic_once_with_the_configured_partitions(bare_broker: str) -> None:
    first = run_topics(CHAT4ALL_KAFKA_BOOTSTRAP=bare_broker, CHAT4ALL_KAFKA_PARTITIONS="3")
    again = run_topics(CHAT4ALL_KAFKA_BOOTSTRAP=bare_broker, CHAT4ALL_KAFKA_PARTITIONS="3")

    assert first[0] == 0, first[1]
    assert first[1].startswith("created ")
    assert set(first[1].removeprefix("created ").strip().split(", ")) == set(all_topics())
    assert again == (0, "every topic exists already\n")
    assert asyncio.run(partitions_of(bare_broker)) == dict.fromkeys(all_topics(), 3)


def test_it_needs_a_cluster_and_a_coherent_replication(bare_broker: str) -> None:
    no_cluster = run_topics()
    too_strict = run_topics(
        CHAT4ALL_KAFKA_BOOTSTRAP=bare_broker,
        CHAT4ALL_KAFKA_REPLICATION_FACTOR="2",
        CHAT4ALL_KAFKA_MIN_INSYNC_REPLICAS="3",
    )

    assert no_cluster[0] == 1
    assert "CHAT4ALL_KAFKA_BOOTSTRAP" in no_cluster[1]
    assert too_strict[0] == 1
    assert "min.insync.replicas 3 exceeds the replication factor 2" in too_strict[1]
    assert asyncio.run(partitions_of(bare_broker)) == {}  # nothing was created


def test_each_topic_asks_for_its_replication_and_min_insync_replicas() -> None:
    strict = catalogue(6, ["chat.messages"], replication_factor=3, min_insync_replicas=2)[0].new_topic()
    default = catalogue(6, ["chat.messages"])[0].new_topic()

    assert (strict.name, strict.num_partitions, strict.replication_factor) == ("chat.messages", 6, 3)
    assert strict.topic_configs == {"min.insync.replicas": "2"}
    assert (default.replication_factor, default.topic_configs) == (1, {})
