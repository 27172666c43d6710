"""What a running `chat4all up` tells the world: ``<data_dir>/stack.json``, plus the lock that makes it the only one."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import psutil

from entrypoints.stack.supervisor import group_alive

STATE_FILE = "stack.json"
LOCK_FILE = "stack.lock"
SCALE_FILE = "scale.json"
SCALE_SIGNAL = signal.SIGUSR1
"""What `chat4all scale` sends the supervisor after writing scale.json. Not SIGHUP: that one is a hang-up (the
terminal of `make up` closed) and stops the stack, as SIGINT and SIGTERM do."""


def state_path(data_dir: Path) -> Path:
    return data_dir / STATE_FILE


def create_time(pid: int) -> float | None:
    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return None


def process_alive(pid: int | None, started: float | None = None) -> bool:
    """Is ``pid`` a live (non-zombie) process and, if ``started`` is known, the very one that started then?"""
    if pid is None or pid <= 0:
        return False
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return started is None or abs(float(process.create_time()) - started) < 1.0
    except psutil.Error:
        return False


def read_state(data_dir: Path) -> dict[str, Any] | None:
    """The stack.json of ``data_dir``, or None when there is none (or it is unreadable)."""
    try:
        data = json.loads(state_path(data_dir).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_state(data_dir: Path, state: dict[str, Any]) -> None:
    """Replace stack.json atomically, so `ps` never reads half a file."""
    path = state_path(data_dir)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.replace(path)


def remove_state(data_dir: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        state_path(data_dir).unlink()


def scale_path(data_dir: Path) -> Path:
    return data_dir / SCALE_FILE


def read_scale_request(data_dir: Path) -> dict[str, int]:
    """The process counts `chat4all scale` asked the running stack for (``{}`` when none); ValueError if unreadable.

    The counts are not checked here: the supervisor checks them again, since anyone may write the file.
    """
    try:
        data = json.loads(scale_path(data_dir).read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ValueError(f"{scale_path(data_dir)} is unreadable: {exc}") from exc
    if not isinstance(data, dict) or not all(isinstance(k, str) and type(v) is int for k, v in data.items()):
        raise ValueError(f"{scale_path(data_dir)} is not an object of process counts")
    return data


def write_scale_request(data_dir: Path, counts: dict[str, int]) -> None:
    """Replace scale.json atomically, so the supervisor never reads half a request."""
    path = scale_path(data_dir)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(counts, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def remove_scale_request(data_dir: Path) -> None:
    """Counts asked of an earlier run of `up` do not carry over: each run starts from its settings."""
    with contextlib.suppress(FileNotFoundError):
        scale_path(data_dir).unlink()


def supervisor_alive(state: dict[str, Any] | None) -> bool:
    if not state:
        return False
    return process_alive(state.get("supervisor_pid"), state.get("supervisor_create_time"))


def reap_orphans(state: dict[str, Any], timeout: float = 5.0) -> list[int]:
    """After a supervisor died without cleaning up: stop the runtimes and the embedded broker it left.

    Each runs in its own session, so its pid is its process group. Only processes whose creation time matches
    stack.json are touched, never a recycled pid. Postgres is not handled here: EmbeddedPostgres.start() stops
    a stale postmaster itself.
    """
    groups = [
        int(entry["pid"])
        for entry in [state.get("kafka"), *(state.get("runtimes") or [])]
        if isinstance(entry, dict) and process_alive(entry.get("pid"), entry.get("create_time"))
    ]
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(group_alive(g) for g in groups):
        time.sleep(0.05)
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
    return groups


class StackLock:
    """An exclusive ``flock`` on ``<data_dir>/stack.lock``, held for the life of the process that owns the data dir."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> StackLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
