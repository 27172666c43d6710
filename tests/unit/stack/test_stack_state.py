"""stack.json, the data-dir lock and the liveness checks `up` and `ps` rely on."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from entrypoints.stack.state import (
    StackLock,
    create_time,
    process_alive,
    read_state,
    reap_orphans,
    remove_state,
    state_path,
    supervisor_alive,
    write_state,
)


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    yield p
    p.kill()
    p.wait()


def test_state_round_trip_leaves_no_temporary_files(tmp_path: Path) -> None:
    assert read_state(tmp_path) is None
    write_state(tmp_path, {"supervisor_pid": 1, "runtimes": []})
    write_state(tmp_path, {"supervisor_pid": 2, "runtimes": []})
    assert read_state(tmp_path) == {"supervisor_pid": 2, "runtimes": []}
    assert [p.name for p in tmp_path.iterdir()] == ["stack.json"]
    remove_state(tmp_path)
    remove_state(tmp_path)  # idempotent
    assert read_state(tmp_path) is None


@pytest.mark.parametrize("content", ["", "{not json", "[1, 2]"])
def test_unreadable_state_counts_as_none(tmp_path: Path, content: str) -> None:
    state_path(tmp_path).write_text(content)
    assert read_state(tmp_path) is None


def test_process_alive(sleeper: subprocess.Popen[bytes]) -> None:
    me = os.getpid()
    assert process_alive(me)
    assert process_alive(me, create_time(me))
    assert not process_alive(me, (create_time(me) or 0) - 3600)  # same pid, another process: recycled
    assert not process_alive(None)
    assert not process_alive(0)
    sleeper.kill()
    sleeper.wait()
    assert not process_alive(sleeper.pid)
    assert create_time(sleeper.pid) is None


def test_a_zombie_is_not_alive() -> None:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while psutil.Process(p.pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert not process_alive(p.pid)
    p.wait()


def test_supervisor_alive() -> None:
    me = os.getpid()
    assert supervisor_alive({"supervisor_pid": me, "supervisor_create_time": create_time(me)})
    assert supervisor_alive({"supervisor_pid": me})
    assert not supervisor_alive({"supervisor_pid": me, "supervisor_create_time": 1.0})
    assert not supervisor_alive({})
    assert not supervisor_alive(None)


def test_the_lock_is_exclusive(tmp_path: Path) -> None:
    first, second = StackLock(tmp_path), StackLock(tmp_path)
    assert first.acquire()
    assert not second.acquire()
    first.release()
    with second:
        assert second.acquire()
    assert first.acquire()
    first.release()


def test_the_lock_is_held_across_processes(tmp_path: Path) -> None:
    code = (
        "import sys; from pathlib import Path; from entrypoints.stack.state import StackLock;"
        "sys.exit(0 if StackLock(Path(sys.argv[1])).acquire() else 7)"
    )
    with StackLock(tmp_path) as lock:
        assert lock.acquire()
        assert subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=False).returncode == 7
    assert subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=False).returncode == 0


def test_reap_orphans_stops_only_the_processes_stack_json_started(sleeper: subprocess.Popen[bytes]) -> None:
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        state = {
            "runtimes": [
                {"name": "http", "pid": sleeper.pid, "create_time": create_time(sleeper.pid)},
                {"name": "recycled", "pid": other.pid, "create_time": 12345.0},
                {"name": "dead", "pid": None},
            ]
        }
        assert reap_orphans(state, timeout=5) == [sleeper.pid]
        assert sleeper.wait(timeout=5) is not None
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_reap_orphans_stops_the_embedded_broker_too(sleeper: subprocess.Popen[bytes]) -> None:
    state = {"kafka": {"pid": sleeper.pid, "bootstrap": "127.0.0.1:1", "create_time": create_time(sleeper.pid)}}
    assert reap_orphans(state, timeout=5) == [sleeper.pid]
    assert sleeper.wait(timeout=5) is not None
    assert reap_orphans({"kafka": None, "runtimes": []}) == []
