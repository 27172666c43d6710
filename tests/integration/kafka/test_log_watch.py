"""The relay's watch on the broker's log, against a Tansu that is killed and comes back empty."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from adapters.kafka import KafkaPublisher, ensure_topics
from adapters.kafka.logwatch import LogWatch
from application.errors import Unavailable
from application.ports import Event
from entrypoints.stack.kafka import EmbeddedKafka

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

TOPICS = ["watched.a", "watched.b"]


async def _publish(bootstrap: str, count: int) -> None:
    async with KafkaPublisher(bootstrap) as publisher:
        await publisher.publish([Event(TOPICS[i % 2], f"k{i}", {"n": i}) for i in range(count)])


async def test_a_log_that_only_grows_is_not_lost_and_one_that_restarted_empty_is(tmp_path: Path) -> None:
    server = EmbeddedKafka(tmp_path)
    server.start()
    watch = LogWatch(server.bootstrap, TOPICS, timeout=5.0)
    try:
        await ensure_topics(server.bootstrap, 2, TOPICS)
        await _publish(server.bootstrap, 40)
        assert await watch.lost() == []
        await _publish(server.bootstrap, 10)
        assert await watch.lost() == []  # more records: nothing lost

        assert server.process is not None
        server.process.send_signal(signal.SIGKILL)
        server.process.wait()
        with pytest.raises(Unavailable):
            await watch.lost()  # the broker is down: not an answer either way
        server.start()
        await ensure_topics(server.bootstrap, 2, TOPICS)
        await _publish(server.bootstrap, 2)  # a little traffic already reached the new, empty log

        lost = await watch.lost()
        assert lost, "every partition went back to (nearly) zero"
        assert {name.rsplit("/", 1)[0] for name in lost} <= set(TOPICS)
        assert await watch.lost() == []  # the new log is the baseline from now on
    finally:
        await watch.stop()
        server.stop()
