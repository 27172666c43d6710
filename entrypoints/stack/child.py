"""An embedded server `chat4all up` and the tests run as a child process: start, readiness, stop."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path

from entrypoints.stack.runtimes import port_free


class ChildServer(ABC):
    """One server process on ``host:port`` in its own session, its output in ``log_dir/<name>.log``."""

    name: str
    """What logs and errors call it (``kafka``, ``redis``)."""

    def __init__(self, log_dir: Path, *, host: str, port: int) -> None:
        self.log_dir = log_dir.resolve()
        self.host = host
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    @abstractmethod
    def argv(self) -> list[str]:
        """The command line."""

    @abstractmethod
    def ready(self) -> bool:
        """Does it answer its protocol yet?"""

    def env(self) -> Mapping[str, str]:
        """Its environment."""
        return os.environ

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 30.0) -> None:
        """Start it (a no-op while it runs) and wait until it is ready."""
        if self.running:
            return
        if not port_free(self.host, self.port):
            raise RuntimeError(
                f"port {self.port} on {self.host} (for {self.name}) is in use; stop what holds it or choose another"
            )
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 - our own binaries and arguments
                self.argv(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(self.env()),
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}; see {self.log_path}")
            if time.monotonic() > deadline:
                self.stop()
                where = f"{self.host}:{self.port}"
                raise TimeoutError(f"{self.name} did not answer on {where} in {timeout}s; see {self.log_path}")
            time.sleep(0.02)

    def stop(self, timeout: float = 2.0) -> None:
        """SIGTERM; SIGKILL if it will not go within ``timeout`` seconds."""
        p = self.process
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
