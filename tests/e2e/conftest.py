"""The real `chat4all up` as a subprocess: embedded PostgreSQL 18, migrations, the supervised runtimes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from entrypoints.stack.postgres import free_port

START_TIMEOUT = 120.0  # thirteen processes importing at once on two cores, beside the stacks other tests keep up
STOP_TIMEOUT = 30.0
REPO = Path(__file__).resolve().parents[2]


def stack_env(data_dir: Path, *, http_port: int | None = None, pg_port: int | None = None) -> dict[str, str]:
    """Our environment without any CHAT4ALL_* of the developer's, plus a private data dir and free ports."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT4ALL_")}
    env.update(
        CHAT4ALL_DATA_DIR=str(data_dir),
        CHAT4ALL_HTTP_PORT=str(http_port or free_port()),
        CHAT4ALL_GRPC_PORT=str(free_port()),
        CHAT4ALL_PG_PORT=str(pg_port or free_port()),
        CHAT4ALL_ARGON2_PROFILE="test",
        # The loopback platform by default (its fault file drives the pipeline tests); test_channels runs the sandbox.
        CHAT4ALL_SANDBOX="false",
        CHAT4ALL_SANDBOX_PORT=str(free_port()),
        # A dead worker's partitions move on within seconds, and the sweeper re-drives after seconds, not minutes.
        CHAT4ALL_WORKER_SESSION_TIMEOUT_MS="2000",
        CHAT4ALL_SWEEP_INTERVAL_S="1",
        CHAT4ALL_SWEEP_DEADLINE_S="5",
        CHAT4ALL_BREAKER_RESET_S="2",
        # The pipeline tests send hundreds of messages to one platform user in seconds; the pace a platform would
        # hold them to (Telegram: one per second per chat) is tested in tests/unit and tests/contract.
        CHAT4ALL_PACING="false",
        # Webhook retries within seconds, and a dead letter after four attempts.
        CHAT4ALL_WEBHOOK_RETRY_BASE_S="0.2",
        CHAT4ALL_WEBHOOK_RETRY_CAP_S="1",
        CHAT4ALL_WEBHOOK_ATTEMPTS="4",
        # The tests sign up, log in and send from one address much faster than people do; the limits stay on
        # (through Redis), far enough away. tests/api covers what happens past them.
        CHAT4ALL_RATE_LIMITS=json.dumps(
            {name: {"per_second": 10_000, "burst": 10_000} for name in ("send", "expensive", "login", "anonymous")}
        ),
        PYTHONUNBUFFERED="1",
    )
    return env


def cli(env: dict[str, str], *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """`chat4all ARGS` in a subprocess, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "entrypoints.cli", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def survivors(data_dir: Path) -> list[psutil.Process]:
    """Processes that still belong to the stack of ``data_dir``: its path on their command line or in their env."""
    mark = str(data_dir)
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        if p.pid == os.getpid() or p.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        try:
            if any(mark in part for part in p.info["cmdline"] or []) or p.environ().get("CHAT4ALL_DATA_DIR") == mark:
                found.append(p)
        except psutil.Error:
            continue
    return found


@dataclass
class RunningStack:
    """One `chat4all up` process and what it told us."""

    data_dir: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    log_path: Path
    base_url: str
    database_url: str = ""
    http: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.http = httpx.Client(base_url=self.base_url, trust_env=False, timeout=5.0)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def state(self) -> dict[str, Any]:
        return dict(json.loads((self.data_dir / "stack.json").read_text()))

    def runtime(self, name: str) -> dict[str, Any]:
        return next(rt for rt in self.state()["runtimes"] if rt["name"] == name)

    def cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return cli(self.env, *args, timeout=timeout)

    def wait_until(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if condition():
                    return
            except (httpx.HTTPError, OSError, ValueError, KeyError, StopIteration):
                pass
            if self.process.poll() is not None:
                pytest.fail(
                    f"chat4all up exited with {self.process.returncode} while waiting for {what}:\n{self.log()}"
                )
            if time.monotonic() > deadline:
                pytest.fail(f"{what}: not within {timeout:.0f}s\n{self.log()}")
            time.sleep(0.1)

    def ok(self, path: str) -> bool:
        return self.http.get(path).status_code == 200

    def stop(self) -> None:
        """SIGTERM; `up` must exit 0 and leave no process of its stack behind."""
        self.http.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"chat4all up did not stop within {STOP_TIMEOUT:.0f}s of SIGTERM:\n{self.log()}")
        deadline = time.monotonic() + 5
        while (left := survivors(self.data_dir)) and time.monotonic() < deadline:
            time.sleep(0.1)
        for p in left:  # do not leak them into the rest of the session
            p.kill()
        assert code == 0, f"chat4all up exited with {code}:\n{self.log()}"
        assert not left, f"orphans after stop: {[(p.pid, p.info['cmdline']) for p in left]}"
        assert not (self.data_dir / "stack.json").exists()


def start_stack(
    data_dir: Path, log_path: Path, *, timeout: float = START_TIMEOUT, extra_env: dict[str, str] | None = None
) -> RunningStack:
    """Start `chat4all up` on ``data_dir`` (with ``extra_env`` on top) and wait until the HTTP API is ready."""
    env = stack_env(data_dir) | (extra_env or {})
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "entrypoints.cli", "up"],
            env=env,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    stack = RunningStack(
        data_dir=data_dir,
        env=env,
        process=process,
        log_path=log_path,
        base_url=f"http://127.0.0.1:{env['CHAT4ALL_HTTP_PORT']}",
    )
    try:
        stack.wait_until(lambda: stack.ok("/health/ready"), timeout, "GET /health/ready == 200")
        stack.wait_until(lambda: bool(stack.state()["postgres"]["url"]), 10, "postgres in stack.json")
    except BaseException:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        stack.http.close()
        raise
    stack.database_url = stack.state()["postgres"]["url"]
    return stack


class StackLauncher:
    """Starts stacks on fresh (or given) data dirs; whatever is still running at the end of the session is stopped."""

    env = staticmethod(stack_env)
    cli = staticmethod(cli)
    survivors = staticmethod(survivors)

    def __init__(self) -> None:
        self.started: list[RunningStack] = []
        self.roots: list[Path] = []

    def data_dir(self) -> Path:
        # Not under pytest's basetemp: as root, postgres runs as an unprivileged user that must traverse the path,
        # and every pytest session resets /tmp/pytest-of-<user> to 0700.
        root = Path(tempfile.mkdtemp(prefix="chat4all-e2e-"))
        self.roots.append(root)
        return (root / "data").resolve()

    def __call__(self, data_dir: Path | None = None, *, extra_env: dict[str, str] | None = None) -> RunningStack:
        data_dir = (data_dir or self.data_dir()).resolve()
        stack = start_stack(data_dir, data_dir.parent / f"up-{len(self.started)}.log", extra_env=extra_env)
        self.started.append(stack)
        return stack

    def close(self) -> None:
        try:
            for stack in self.started:
                if stack.process.poll() is None:
                    stack.stop()
                stack.http.close()  # a test may have stopped its stack by hand
        finally:
            for root in self.roots:
                shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def launch_stack() -> Iterator[StackLauncher]:
    """``launch_stack(data_dir=None)`` starts a private stack; ``.env``, ``.cli``, ``.survivors`` are helpers."""
    launcher = StackLauncher()
    yield launcher
    launcher.close()


@pytest.fixture(scope="session")
def stack(launch_stack: StackLauncher) -> Iterator[RunningStack]:
    """The stack the e2e tests share: base_url, data_dir, process, database_url."""
    running = launch_stack()
    yield running
    running.stop()
