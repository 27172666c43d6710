"""The process supervisor on tiny python runtimes: restarts, backoff, clean stop."""

from __future__ import annotations

import http.server
import itertools
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from entrypoints.stack.postgres import free_port
from entrypoints.stack.supervisor import Backoff, RuntimeSpec, Supervisor, describe_exit, http_ok

PY = sys.executable
SLEEPER = (PY, "-c", "import time; time.sleep(60)")
CRASHER = (PY, "-c", "raise SystemExit(3)")


def with_child(marker: Path) -> tuple[str, ...]:
    """A runtime that starts a grandchild in its process group, writes the grandchild's pid, then sleeps."""
    code = (
        "import subprocess, sys, time, pathlib;"
        "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
        f"pathlib.Path({str(marker)!r}).write_text(str(c.pid));"
        "time.sleep(60)"
    )
    return (PY, "-c", code)


def ignoring_sigterm(marker: Path) -> tuple[str, ...]:
    code = (
        "import signal, time, pathlib;"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN);"
        f"pathlib.Path({str(marker)!r}).write_text('ok');"
        "time.sleep(60)"
    )
    return (PY, "-c", code)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_for(condition: Callable[[], object], timeout: float = 10.0, step: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(step)


@pytest.fixture
def supervise() -> Iterator[Callable[..., Supervisor]]:
    """Build supervisors that are always stopped at the end of the test."""
    made: list[Supervisor] = []

    def make(*specs: RuntimeSpec, **kwargs: object) -> Supervisor:
        sup = Supervisor(list(specs), **kwargs)  # type: ignore[arg-type]
        made.append(sup)
        return sup

    yield make
    for sup in made:
        sup.stop()


def poll_until(sup: Supervisor, condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        sup.poll()
        time.sleep(0.01)


def test_backoff_doubles_up_to_the_cap() -> None:
    b = Backoff()
    assert [b.delay(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    assert b.delay(10_000) == 30  # no float overflow in a long crash loop


def test_exit_descriptions() -> None:
    assert describe_exit(3) == "code 3"
    assert describe_exit(-signal.SIGKILL) == "signal SIGKILL"


def test_names_must_be_unique() -> None:
    with pytest.raises(ValueError, match="unique"):
        Supervisor([RuntimeSpec("a", SLEEPER), RuntimeSpec("a", SLEEPER)])


def test_each_runtime_runs_in_its_own_session(supervise: Callable[..., Supervisor]) -> None:
    sup = supervise(RuntimeSpec("one", SLEEPER), RuntimeSpec("two", SLEEPER))
    sup.start()
    for rt in sup.runtimes:
        assert rt.running
        assert rt.pid is not None
        assert os.getpgid(rt.pid) == rt.pid
        assert os.getsid(rt.pid) == rt.pid
    assert not sup.poll()  # nothing happened
    assert [rt.restarts for rt in sup.runtimes] == [0, 0]


def test_stop_ends_runtimes_and_everything_in_their_process_groups(
    supervise: Callable[..., Supervisor], tmp_path: Path
) -> None:
    marker = tmp_path / "child.pid"
    sup = supervise(RuntimeSpec("parent", with_child(marker)), RuntimeSpec("plain", SLEEPER))
    sup.start()
    wait_for(lambda: marker.exists() and marker.read_text())
    grandchild = int(marker.read_text())
    leaders = [rt.pid for rt in sup.runtimes]
    t0 = time.monotonic()
    sup.stop()
    assert time.monotonic() - t0 < 3
    wait_for(lambda: gone(grandchild), timeout=3)
    for pid in leaders:
        assert pid is not None and gone(pid)
    assert all(not rt.running for rt in sup.runtimes)
    assert not sup.poll()  # a stopped supervisor restarts nothing
    assert all(rt.process is None for rt in sup.runtimes)


def test_a_runtime_that_ignores_sigterm_is_killed_after_the_timeout(
    supervise: Callable[..., Supervisor], tmp_path: Path
) -> None:
    marker = tmp_path / "ready"
    sup = supervise(RuntimeSpec("stubborn", ignoring_sigterm(marker)), stop_timeout=0.5)
    sup.start()
    wait_for(marker.exists)
    pid = sup["stubborn"].pid
    assert pid is not None
    t0 = time.monotonic()
    sup.stop()
    took = time.monotonic() - t0
    assert 0.5 <= took < 3
    assert gone(pid)
    assert sup["stubborn"].last_exit == -signal.SIGKILL


def test_a_crashing_runtime_is_restarted_with_growing_delays(
    supervise: Callable[..., Supervisor], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="chat4all.supervisor")
    backoff = Backoff(initial=0.1, factor=2, cap=0.4, reset_after=60)
    spawns: list[tuple[float, int]] = []

    def record(sup: Supervisor) -> None:
        rt = sup["crasher"]
        if rt.running and rt.pid is not None and (not spawns or spawns[-1][1] != rt.pid):
            spawns.append((time.monotonic(), rt.pid))

    sup = supervise(RuntimeSpec("crasher", CRASHER), backoff=backoff, on_change=record)
    sup.start()
    poll_until(sup, lambda: sup["crasher"].restarts >= 4)
    rt = sup["crasher"]
    assert rt.last_exit == 3
    assert len(spawns) == rt.restarts + 1
    assert len({pid for _, pid in spawns}) == len(spawns)  # a new process each time
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(spawns)]
    for n, gap in enumerate(gaps, start=1):
        assert gap >= backoff.delay(n), (n, gaps)
        assert gap < backoff.delay(n) + 2.0, (n, gaps)
    delays = [
        r.getMessage().rsplit("restarting in ", 1)[1] for r in caplog.records if "restarting in" in r.getMessage()
    ]
    assert delays[:4] == ["0.1s", "0.2s", "0.4s", "0.4s"]
    assert any("restarted (pid" in r.getMessage() for r in caplog.records)


def test_backoff_starts_over_after_a_long_enough_run(
    supervise: Callable[..., Supervisor], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="chat4all.supervisor")
    runs_then_dies = (PY, "-c", "import time; time.sleep(0.3); raise SystemExit(1)")
    backoff = Backoff(initial=0.1, factor=10, cap=5, reset_after=0.2)  # without the reset: 0.1, 1.0, 5.0
    sup = supervise(RuntimeSpec("flaky", runs_then_dies), backoff=backoff)
    sup.start()
    poll_until(sup, lambda: sup["flaky"].restarts >= 3)
    delays = [
        r.getMessage().rsplit("restarting in ", 1)[1] for r in caplog.records if "restarting in" in r.getMessage()
    ]
    assert len(delays) >= 3
    assert set(delays) == {"0.1s"}
    assert sup["flaky"].failures == 1


def test_the_leftovers_of_a_dead_runtime_are_swept_before_it_restarts(
    supervise: Callable[..., Supervisor], tmp_path: Path
) -> None:
    marker = tmp_path / "child.pid"
    sup = supervise(RuntimeSpec("parent", with_child(marker)), backoff=Backoff(initial=0.05))
    sup.start()
    wait_for(lambda: marker.exists() and marker.read_text())
    grandchild = int(marker.read_text())
    first = sup["parent"].pid
    assert first is not None
    marker.unlink()
    os.kill(first, signal.SIGKILL)  # like an OOM kill: the worker it forked would keep the port
    poll_until(sup, lambda: sup["parent"].restarts == 1)
    wait_for(lambda: gone(grandchild), timeout=3)
    assert sup["parent"].last_exit == -signal.SIGKILL
    assert sup["parent"].pid != first
    assert sup["parent"].running


def test_a_runtime_that_cannot_be_spawned_is_retried(
    supervise: Callable[..., Supervisor], caplog: pytest.LogCaptureFixture
) -> None:
    sup = supervise(RuntimeSpec("ghost", ("/nonexistent/chat4all-runtime",)), backoff=Backoff(initial=0.05))
    sup.start()
    rt = sup["ghost"]
    assert rt.process is None
    assert rt.restart_at is not None
    poll_until(sup, lambda: sup["ghost"].restarts >= 2)
    assert not rt.running
    assert "could not be started" in caplog.text


def test_on_change_sees_every_start_and_exit(supervise: Callable[..., Supervisor]) -> None:
    seen: list[tuple[int | None, bool]] = []
    sup = supervise(
        RuntimeSpec("crasher", CRASHER),
        backoff=Backoff(initial=0.05),
        on_change=lambda s: seen.append((s["crasher"].pid, s["crasher"].running)),
    )
    sup.start()
    poll_until(sup, lambda: sup["crasher"].restarts >= 1)
    assert len(seen) >= 2
    assert seen[0][1] or seen[0][0] is not None


def test_env_is_the_runtime_environment(supervise: Callable[..., Supervisor], tmp_path: Path) -> None:
    out = tmp_path / "env.txt"
    code = f"import os, pathlib; pathlib.Path({str(out)!r}).write_text(os.environ.get('CHAT4ALL_X', '-'))"
    sup = supervise(RuntimeSpec("env", (PY, "-c", code), env={**os.environ, "CHAT4ALL_X": "42"}))
    sup.start()
    wait_for(lambda: out.exists() and out.read_text())
    assert out.read_text() == "42"


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/ok" else 503)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def test_http_ok(health_server: str) -> None:
    assert http_ok(f"{health_server}/ok")
    assert not http_ok(f"{health_server}/down")
    assert not http_ok(f"http://127.0.0.1:{free_port()}/")
    assert not http_ok("not a url")


def test_wait_ready_waits_for_the_health_url(supervise: Callable[..., Supervisor], tmp_path: Path) -> None:
    port = free_port()
    server = (PY, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(tmp_path))
    sup = supervise(
        RuntimeSpec("web", server, health_url=f"http://127.0.0.1:{port}/"),
        RuntimeSpec("quiet", SLEEPER),
    )
    sup.start()
    assert sup.wait_ready(timeout=15) == {"web": True, "quiet": True}


def test_wait_ready_gives_up_after_the_timeout(supervise: Callable[..., Supervisor]) -> None:
    sup = supervise(RuntimeSpec("mute", SLEEPER, health_url=f"http://127.0.0.1:{free_port()}/"))
    sup.start()
    t0 = time.monotonic()
    assert sup.wait_ready(timeout=0.5) == {"mute": False}
    assert time.monotonic() - t0 < 3
    assert sup.wait_ready(timeout=10, should_stop=lambda: True) == {"mute": False}


# -- add and remove at run time (`chat4all scale`) ---------------------------------------------------------------------


def leaving_on_sigterm(marker: Path) -> tuple[str, ...]:
    """A runtime that, on SIGTERM, writes ``bye`` to ``marker`` and exits 0: a graceful stop leaves evidence."""
    code = (
        "import signal, sys, time, pathlib;"
        f"p = pathlib.Path({str(marker)!r});"
        "signal.signal(signal.SIGTERM, lambda *a: (p.write_text('bye'), sys.exit(0)));"
        "p.write_text('ready');"
        "time.sleep(60)"
    )
    return (PY, "-c", code)


def test_add_starts_a_runtime_in_its_own_session_and_supervises_it(supervise: Callable[..., Supervisor]) -> None:
    changes: list[list[str]] = []
    sup = supervise(
        RuntimeSpec("one", SLEEPER),
        backoff=Backoff(initial=0.05),
        on_change=lambda s: changes.append([rt.name for rt in s.runtimes]),
    )
    sup.start()
    one = sup["one"].pid
    rt = sup.add(RuntimeSpec("two", SLEEPER))
    assert rt is sup["two"]
    assert [r.name for r in sup.runtimes] == ["one", "two"]
    assert changes[-1] == ["one", "two"]  # stack.json is saved with it
    assert rt.running
    assert rt.pid is not None
    assert os.getpgid(rt.pid) == rt.pid
    assert sup["one"].pid == one  # the others are left alone
    first = rt.pid
    os.kill(first, signal.SIGKILL)
    poll_until(sup, lambda: sup["two"].restarts == 1 and sup["two"].running)
    assert sup["two"].pid != first
    sup.stop()
    assert gone(sup["two"].pid or 0)


def test_add_refuses_a_name_in_use_and_a_stopped_supervisor(supervise: Callable[..., Supervisor]) -> None:
    sup = supervise(RuntimeSpec("one", SLEEPER))
    sup.start()
    with pytest.raises(ValueError, match="unique"):
        sup.add(RuntimeSpec("one", SLEEPER))
    assert len(sup.runtimes) == 1
    sup.stop()
    with pytest.raises(RuntimeError, match="stopped"):
        sup.add(RuntimeSpec("two", SLEEPER))
    assert [r.name for r in sup.runtimes] == ["one"]


def test_remove_stops_one_runtime_gracefully_and_never_restarts_it(
    supervise: Callable[..., Supervisor], tmp_path: Path
) -> None:
    marker = tmp_path / "leaver"
    changes: list[list[str]] = []
    sup = supervise(
        RuntimeSpec("stays", SLEEPER),
        RuntimeSpec("leaves", leaving_on_sigterm(marker)),
        backoff=Backoff(initial=0.01),
        on_change=lambda s: changes.append([rt.name for rt in s.runtimes]),
    )
    sup.start()
    wait_for(lambda: marker.exists() and marker.read_text() == "ready")
    stays, leaves = sup["stays"].pid, sup["leaves"].pid
    assert leaves is not None
    sup.remove("leaves")
    assert marker.read_text() == "bye"  # SIGTERM first, and it had the time to finish
    assert gone(leaves)
    assert [rt.name for rt in sup.runtimes] == ["stays"]
    assert changes[-1] == ["stays"]
    with pytest.raises(KeyError):
        sup["leaves"]
    for _ in range(20):  # whatever the backoff, nothing brings it back
        sup.poll()
    assert [rt.name for rt in sup.runtimes] == ["stays"]
    assert sup["stays"].pid == stays
    assert sup["stays"].running


def test_remove_kills_what_ignores_sigterm_after_the_timeout_and_its_whole_group(
    supervise: Callable[..., Supervisor], tmp_path: Path
) -> None:
    stubborn, parent = tmp_path / "stubborn", tmp_path / "child.pid"
    sup = supervise(
        RuntimeSpec("stubborn", ignoring_sigterm(stubborn)),
        RuntimeSpec("parent", with_child(parent)),
        RuntimeSpec("stays", SLEEPER),
        stop_timeout=0.5,
    )
    sup.start()
    wait_for(lambda: stubborn.exists() and parent.exists() and parent.read_text())
    grandchild = int(parent.read_text())
    pids = [sup["stubborn"].pid, sup["parent"].pid]
    t0 = time.monotonic()
    sup.remove("stubborn", "parent")  # together: one stop_timeout, not one each
    took = time.monotonic() - t0
    assert 0.5 <= took < 3
    assert all(pid is not None and gone(pid) for pid in pids)
    wait_for(lambda: gone(grandchild), timeout=3)
    assert [rt.name for rt in sup.runtimes] == ["stays"]
    assert sup["stays"].running


def test_remove_of_an_unknown_name_changes_nothing(supervise: Callable[..., Supervisor]) -> None:
    sup = supervise(RuntimeSpec("one", SLEEPER))
    sup.start()
    with pytest.raises(KeyError, match="nope"):
        sup.remove("one", "nope")
    assert sup["one"].running


def test_a_crashed_runtime_that_is_removed_while_it_waits_for_its_restart_stays_gone(
    supervise: Callable[..., Supervisor],
) -> None:
    sup = supervise(RuntimeSpec("crasher", CRASHER), backoff=Backoff(initial=0.2))
    sup.start()
    poll_until(sup, lambda: sup["crasher"].restart_at is not None and not sup["crasher"].running)
    sup.remove("crasher")
    assert sup.runtimes == []
    deadline = time.monotonic() + 0.5  # past the restart it had been given
    while time.monotonic() < deadline:
        assert not sup.poll()
        time.sleep(0.02)
    assert sup.runtimes == []
