"""`chat4all scale`: parsing KIND=N, the reconcile plan, the request file and the command, without a real stack."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from entrypoints import cli
from entrypoints.settings import Settings
from entrypoints.stack import commands
from entrypoints.stack.runtimes import (
    SCALABLE_KINDS,
    ScalePlan,
    kind_counts,
    parse_scale,
    plan_scale,
    runtime_index,
    runtime_spec,
    runtime_specs,
)
from entrypoints.stack.state import (
    SCALE_SIGNAL,
    create_time,
    read_scale_request,
    remove_scale_request,
    scale_path,
    write_scale_request,
    write_state,
)


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name in list(os.environ):
        if name.startswith("CHAT4ALL_"):
            monkeypatch.delenv(name)
    return {"CHAT4ALL_DATA_DIR": str(tmp_path)}


# -- KIND=N -----------------------------------------------------------------------------------------------------------


def test_parse_scale_reads_each_kind_and_count() -> None:
    assert parse_scale(["router=3", "channels=3"]) == {"router": 3, "channels": 3}
    assert parse_scale([" http = 4 "]) == {"http": 4}
    assert parse_scale(["sweeper=0", "relay=16", "http=1"]) == {"sweeper": 0, "relay": 16, "http": 1}
    assert set(SCALABLE_KINDS) == {"http", "relay", "router", "channels", "status", "push", "webhooks", "sweeper"}


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        ([], "say what to scale"),
        (["router"], "is not KIND=N"),
        (["router="], "is not KIND=N"),
        (["=3"], "is not KIND=N"),
        (["router=x"], "is not a whole number"),
        (["router=2.5"], "is not a whole number"),
        (["router=-1"], "between 0 and 16"),
        (["router=17"], "between 0 and 16"),
        (["http=0"], "between 1 and 64"),
        (["http=65"], "between 1 and 64"),
        (["grpc=2"], "unknown kind 'grpc'"),
        (["routers=2"], "unknown kind 'routers'"),
        (["telegram-updates=1"], "telegram-updates cannot be scaled"),
        (["router=2", "router=3"], "router is given twice"),
        (["router=2", "channels=99"], "channels=99"),
    ],
)
def test_parse_scale_refuses_bad_input_naming_the_problem(args: list[str], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_scale(args)


# -- the plan ---------------------------------------------------------------------------------------------------------

RUNNING = ["sandbox", "http", "http-2", "grpc", "relay", "router", "channels", "channels-2", "channels-3", "status"]


def test_runtime_index_tells_the_kind_and_number_of_a_name() -> None:
    assert runtime_index("router", "router") == 1
    assert runtime_index("router-3", "router") == 3
    assert runtime_index("router", "channels") is None
    for name in ("router-1", "router-0", "router-02", "router-x", "routerx", "router-"):
        assert runtime_index(name, "router") is None, name
    assert runtime_index("telegram-updates", "telegram") is None
    assert kind_counts(RUNNING) == {
        "http": 2,
        "relay": 1,
        "router": 1,
        "channels": 3,
        "status": 1,
        "push": 0,
        "webhooks": 0,
        "sweeper": 0,
    }


def test_plan_scale_starts_the_missing_numbers_and_stops_the_highest() -> None:
    assert plan_scale(RUNNING, {"router": 3, "channels": 1}) == ScalePlan(
        start=(("router", 2), ("router", 3)), stop=("channels-3", "channels-2")
    )
    assert plan_scale(RUNNING, {"push": 2, "http": 1}) == ScalePlan(start=(("push", 1), ("push", 2)), stop=("http-2",))
    assert plan_scale(RUNNING, {"relay": 0}) == ScalePlan(stop=("relay",))


def test_plan_scale_leaves_alone_what_is_as_wanted_or_not_named() -> None:
    assert plan_scale(RUNNING, {}) == ScalePlan()
    assert plan_scale(RUNNING, {"channels": 3, "router": 1}) == ScalePlan()
    assert plan_scale([], {"sweeper": 0}) == ScalePlan()


def test_plan_scale_fills_gaps_so_the_names_are_one_to_n() -> None:
    assert plan_scale(["router", "router-3"], {"router": 3}) == ScalePlan(start=(("router", 2),))
    assert plan_scale(["router-2", "router-3"], {"router": 2}) == ScalePlan(start=(("router", 1),), stop=("router-3",))


def test_runtime_spec_builds_what_up_builds() -> None:
    settings = Settings(http_port=8123, http_workers=2, worker_processes={"router": 2}, sandbox=False)
    env = {"PATH": "/bin"}
    by_name = {spec.name: spec for spec in runtime_specs(settings, env)}
    for kind, index, name in [
        ("http", 1, "http"),
        ("http", 2, "http-2"),
        ("router", 2, "router-2"),
        ("push", 1, "push"),
    ]:
        assert runtime_spec(settings, env, kind, index) == by_name[name]
    third = runtime_spec(settings, env, "router", 3)
    assert (third.name, list(third.argv), third.env) == (
        "router-3",
        [sys.executable, "-m", "entrypoints.workers", "router"],
        env,
    )
    with pytest.raises(ValueError, match="unknown runtime kind"):
        runtime_spec(settings, env, "grpc", 2)


# -- scale.json and the signal ----------------------------------------------------------------------------------------


def test_the_scale_request_file(tmp_path: Path) -> None:
    assert read_scale_request(tmp_path) == {}
    write_scale_request(tmp_path, {"router": 3})
    assert read_scale_request(tmp_path) == {"router": 3}
    assert list(tmp_path.iterdir()) == [scale_path(tmp_path)]  # no temporary file left
    for bad in ("{", "[1]", '{"router": "3"}', '{"router": true}'):
        scale_path(tmp_path).write_text(bad)
        with pytest.raises(ValueError, match=r"scale\.json"):
            read_scale_request(tmp_path)
    remove_scale_request(tmp_path)
    remove_scale_request(tmp_path)
    assert read_scale_request(tmp_path) == {}


def test_scale_signals_are_counted_not_acted_on_and_none_is_lost() -> None:
    signals = commands.StopSignals()
    previous = signal.getsignal(SCALE_SIGNAL)
    with signals:
        assert not signals.take_scale_request()
        os.kill(os.getpid(), SCALE_SIGNAL)
        os.kill(os.getpid(), SCALE_SIGNAL)
        deadline = time.monotonic() + 5
        while not signals.scale_pending() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert signals.scale_pending()
        assert not signals.requested()  # a scale request is no stop request
        assert signals.take_scale_request()
        assert not signals.take_scale_request()
        assert not signals.scale_pending()
    assert signal.getsignal(SCALE_SIGNAL) == previous
    assert signal.SIGHUP in commands.STOP_SIGNALS  # a hang-up still stops the stack


# -- the command ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["router=x"], "is not a whole number"),
        (["telegram-updates=1"], "telegram-updates cannot be scaled"),
        (["router=1", "http=0"], "between 1 and 64"),
        ([], "Missing argument"),
    ],
)
def test_scale_refuses_bad_input_with_a_usage_error_and_changes_nothing(
    env: dict[str, str], tmp_path: Path, args: list[str], problem: str
) -> None:
    result = CliRunner().invoke(cli.main, ["scale", *args], env=env)
    assert result.exit_code == 2, result.output
    assert problem in result.output
    assert not scale_path(tmp_path).exists()


def test_scale_without_a_stack(env: dict[str, str], tmp_path: Path) -> None:
    result = CliRunner().invoke(cli.main, ["scale", "router=2"], env=env)
    assert result.exit_code == 1
    assert f"no chat4all stack is running on {tmp_path.resolve()}" in result.output
    write_state(tmp_path, {"supervisor_pid": os.getpid(), "supervisor_create_time": 1.0, "runtimes": []})  # stale
    result = CliRunner().invoke(cli.main, ["scale", "router=2"], env=env)
    assert result.exit_code == 1
    assert "no chat4all stack is running" in result.output
    assert not scale_path(tmp_path).exists()


@pytest.fixture
def deaf_supervisor(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A live process in the supervisor's place that ignores the scale signal: a stack that never scales."""
    ready = tmp_path / "deaf-ready"
    code = (
        "import signal, time, pathlib;"
        f"signal.signal({int(SCALE_SIGNAL)}, signal.SIG_IGN);"
        f"pathlib.Path({str(ready)!r}).write_text('ok');"
        "time.sleep(60)"
    )
    process = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    deadline = time.monotonic() + 10
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert ready.exists()
    yield process
    process.kill()
    process.wait()


def test_scale_gives_up_after_the_timeout_saying_what_is_missing(
    env: dict[str, str], tmp_path: Path, deaf_supervisor: subprocess.Popen[bytes]
) -> None:
    pid = deaf_supervisor.pid
    write_state(
        tmp_path,
        {
            "supervisor_pid": pid,
            "supervisor_create_time": create_time(pid),
            "runtimes": [
                {"name": "router", "pid": pid, "create_time": create_time(pid)},
                {"name": "channels", "pid": pid, "create_time": create_time(pid)},
                {"name": "channels-2", "pid": pid, "create_time": create_time(pid)},
            ],
        },
    )
    write_scale_request(tmp_path, {"push": 2, "telegram-updates": 3})  # an earlier request, one entry bad
    result = CliRunner().invoke(cli.main, ["scale", "router=2", "channels=1", "--timeout", "0.3"], env=env)
    assert result.exit_code == 1
    assert "did not scale within 0.3s: router-2 is not started; channels-2 is still there" in result.output
    assert read_scale_request(tmp_path) == {"push": 2, "router": 2, "channels": 1}  # joined, the bad entry dropped
    assert deaf_supervisor.poll() is None  # it got the signal, and ignored it


def test_scale_is_done_at_once_when_the_stack_already_runs_that(
    env: dict[str, str], tmp_path: Path, deaf_supervisor: subprocess.Popen[bytes]
) -> None:
    pid = deaf_supervisor.pid
    write_state(
        tmp_path,
        {
            "supervisor_pid": pid,
            "supervisor_create_time": create_time(pid),
            "started_at": "2026-01-01T00:00:00+00:00",
            "runtimes": [{"name": "router", "pid": pid, "create_time": create_time(pid), "restarts": 0}],
        },
    )
    result = CliRunner().invoke(cli.main, ["scale", "router=1", "push=0", "--json", "--timeout", "5"], env=env)
    assert result.exit_code == 0, result.output
    assert '"name": "router"' in result.output
