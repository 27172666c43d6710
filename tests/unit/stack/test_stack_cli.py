"""`chat4all up/ps/migrate` wiring, on fake runtimes and a fake database (no PostgreSQL here)."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from click.testing import CliRunner

from entrypoints import cli
from entrypoints.settings import Settings
from entrypoints.stack import commands
from entrypoints.stack.postgres import free_port
from entrypoints.stack.runtimes import (
    connect_host,
    forget_dead_processes,
    http_base,
    load_or_create_jwt_secret,
    load_or_create_sandbox_credentials,
    metrics_dir,
    platforms_configured,
    port_free,
    redact_url,
    reset_metrics_dir,
    runtime_env,
    runtime_name,
    runtime_ports,
    runtime_specs,
    sandbox_env,
    sandbox_wanted,
)
from entrypoints.stack.state import StackLock, create_time, read_state, write_scale_request, write_state
from entrypoints.stack.supervisor import RuntimeSpec

SLEEPER = (sys.executable, "-c", "import time; time.sleep(60)")


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    p = subprocess.Popen(list(SLEEPER), start_new_session=True)
    yield p
    p.kill()
    p.wait()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name in list(os.environ):
        if name.startswith("CHAT4ALL_"):
            monkeypatch.delenv(name)
    return {"CHAT4ALL_DATA_DIR": str(tmp_path)}


def run(args: list[str], env: dict[str, str]) -> Any:
    return CliRunner().invoke(cli.main, args, env=env, catch_exceptions=False)


# -- helpers ----------------------------------------------------------------------------------------------------------


def test_jwt_secret_is_created_once_and_private(tmp_path: Path) -> None:
    first = load_or_create_jwt_secret(tmp_path)
    path = tmp_path / "secrets" / "jwt_secret"
    assert len(first) >= 64
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load_or_create_jwt_secret(tmp_path) == first
    path.chmod(0o644)
    assert load_or_create_jwt_secret(tmp_path) == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.write_text("")
    assert load_or_create_jwt_secret(tmp_path) not in ("", first)


def test_urls() -> None:
    assert redact_url("postgresql://app:s3cret@db:5432/chat") == "postgresql://app:***@db:5432/chat"
    assert (
        redact_url("postgresql://postgres@127.0.0.1:5432/chat4all") == "postgresql://postgres@127.0.0.1:5432/chat4all"
    )
    assert connect_host("0.0.0.0") == "127.0.0.1"
    assert http_base("0.0.0.0", 8000) == "http://127.0.0.1:8000"
    assert http_base("::", 8000) == "http://[::1]:8000"


def test_pg_port() -> None:
    assert commands.pg_port({}) is None
    assert commands.pg_port({"CHAT4ALL_PG_PORT": "5433"}) == 5433
    for bad in ("x", "0", "70000"):
        with pytest.raises(commands.StackError):
            commands.pg_port({"CHAT4ALL_PG_PORT": bad})


def test_kafka_port() -> None:
    assert commands.kafka_port({}) is None
    assert commands.kafka_port({"CHAT4ALL_PG_PORT": "5433"}) is None
    assert commands.kafka_port({"CHAT4ALL_KAFKA_PORT": " 19092 "}) == 19092
    for bad in ("x", "0", "70000"):
        with pytest.raises(commands.StackError, match="CHAT4ALL_KAFKA_PORT"):
            commands.kafka_port({"CHAT4ALL_KAFKA_PORT": bad})


def test_kafka_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHAT4ALL_KAFKA_BOOTSTRAP", raising=False)
    monkeypatch.delenv("CHAT4ALL_KAFKA_PARTITIONS", raising=False)
    assert Settings().kafka_bootstrap is None
    assert Settings().kafka_partitions == 8
    monkeypatch.setenv("CHAT4ALL_KAFKA_BOOTSTRAP", "k1:9092,k2:9092")
    monkeypatch.setenv("CHAT4ALL_KAFKA_PARTITIONS", "12")
    assert Settings().kafka_bootstrap == "k1:9092,k2:9092"
    assert Settings().kafka_partitions == 12


def test_port_free() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert not port_free("127.0.0.1", s.getsockname()[1])
    assert port_free("127.0.0.1", 0)


def test_the_http_runtime(tmp_path: Path) -> None:
    settings = Settings(http_port=8123, host="0.0.0.0", sandbox=False)
    env = runtime_env(
        {"PATH": "/bin", "CHAT4ALL_METRICS_PORT": "9100"},
        settings,
        database_url="postgresql://db/x",
        kafka_bootstrap="127.0.0.1:9092",
        jwt_secret="k",
        data_dir=tmp_path,
    )
    assert env["PATH"] == "/bin"
    assert "CHAT4ALL_METRICS_PORT" not in env  # every runtime would bind it; they share the API's /metrics instead
    assert env["CHAT4ALL_DATABASE_URL"] == "postgresql://db/x"
    assert env["CHAT4ALL_KAFKA_BOOTSTRAP"] == "127.0.0.1:9092"
    assert env["CHAT4ALL_JWT_SECRET"] == "k"
    assert env["CHAT4ALL_HTTP_PORT"] == "8123"
    assert env["CHAT4ALL_DATA_DIR"] == str(tmp_path)
    # one prometheus multiprocess directory for the whole stack: the HTTP API's /metrics shows the workers' counters
    assert env["PROMETHEUS_MULTIPROC_DIR"] == str(tmp_path / "metrics" / "stack-8123")
    assert env["CHAT4ALL_HTTP_REUSE_PORT"] == "1"
    assert env["CHAT4ALL_WEBHOOK_ALLOW_LOOPBACK"] == "true"  # receivers on this machine; private networks stay out
    http, http2, grpc, *workers = runtime_specs(settings, env)
    assert (http2.name, http2.argv, http2.url) == ("http-2", http.argv, http.url)  # two API processes, one port
    assert grpc.name == "grpc"
    assert [w.name for w in workers] == ["relay", "router", "channels", "status", "push", "webhooks", "sweeper"]
    assert all(list(w.argv) == [sys.executable, "-m", "entrypoints.workers", w.name] for w in workers)
    assert all(w.env is env and w.health_url is None for w in workers)
    assert http.name == "http"
    assert list(http.argv) == [sys.executable, "-m", "entrypoints.http"]
    assert http.url == "http://127.0.0.1:8123"
    assert http.health_url == "http://127.0.0.1:8123/health/ready"
    assert http.env is env
    more = Settings(worker_processes={"router": 2, "channels": 3, "sweeper": 0}, sandbox=False)
    assert [w.name for w in runtime_specs(more, env)[3:]] == [
        "relay",
        "router",
        "router-2",
        "channels",
        "channels-2",
        "channels-3",
        "status",
        "push",
        "webhooks",
    ]
    polling = Settings(
        telegram_updates="polling", telegram_bot_token="1:a", worker_processes={"telegram-updates": 3}, sandbox=False
    )
    assert [w.name for w in runtime_specs(polling, env)].count("telegram-updates") == 1  # never two pollers
    assert "telegram-updates" not in [w.name for w in runtime_specs(Settings(telegram_updates="polling"), env)]
    with pytest.raises(ValueError, match="unknown worker kinds"):
        Settings(worker_processes={"routers": 2})
    with pytest.raises(ValueError, match="unknown rate limits"):
        Settings(rate_limits={"sends": None})
    with pytest.raises(ValueError, match="unknown channels"):
        Settings(channel_paces={"signal": {}})
    with pytest.raises(ValueError, match="between 0 and 16"):
        Settings(worker_processes={"router": 17})


def test_the_metrics_directory_starts_empty_and_forgets_the_live_gauges_of_dead_processes(tmp_path: Path) -> None:
    path = metrics_dir(tmp_path, Settings(http_port=8124))
    assert path == tmp_path / "metrics" / "stack-8124"
    reset_metrics_dir(path)
    assert path.is_dir()
    for name in ("counter_11.db", "gauge_livemax_11.db", "gauge_livesum_12.db", "gauge_max_11.db", "histogram_11.db"):
        (path / name).write_bytes(b"")
    (path / "gauge_livemax_13.db").write_bytes(b"")
    assert forget_dead_processes(path, alive=lambda pid: pid == 13) == [11, 12]
    assert sorted(f.name for f in path.iterdir()) == [
        "counter_11.db",  # what a dead process counted stays counted
        "gauge_livemax_13.db",
        "gauge_max_11.db",
        "histogram_11.db",
    ]
    reset_metrics_dir(path)  # a new stack starts from nothing
    assert list(path.iterdir()) == []


# -- ps ---------------------------------------------------------------------------------------------------------------


def test_ps_without_a_stack(env: dict[str, str]) -> None:
    result = run(["ps"], env)
    assert result.exit_code == 1
    assert "no chat4all stack is running" in result.output


def test_ps_with_a_stale_stack_json(env: dict[str, str], tmp_path: Path) -> None:
    write_state(tmp_path, {"supervisor_pid": os.getpid(), "supervisor_create_time": 1.0, "runtimes": []})
    result = run(["ps"], env)
    assert result.exit_code == 1
    assert "stale" in result.output


def test_ps_lists_the_runtimes(env: dict[str, str], tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    me = os.getpid()
    write_state(
        tmp_path,
        {
            "supervisor_pid": me,
            "supervisor_create_time": create_time(me),
            "started_at": "2026-01-01T00:00:00+00:00",
            "postgres": {"pid": sleeper.pid, "url": "postgresql://postgres@127.0.0.1:5999/chat4all"},
            "kafka": {"pid": sleeper.pid, "bootstrap": "127.0.0.1:5998", "create_time": create_time(sleeper.pid)},
            "runtimes": [
                {"name": "http", "pid": sleeper.pid, "url": "http://127.0.0.1:8000", "restarts": 2},
                {"name": "grpc", "pid": 0, "url": "http://127.0.0.1:50051", "restarts": 0},
            ],
        },
    )
    result = run(["ps"], env)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    http = next(line for line in lines if " http " in line)
    assert str(sleeper.pid) in http
    assert "running" in http
    assert "http://127.0.0.1:8000" in http
    assert "dead" in next(line for line in lines if " grpc " in line)
    assert "postgres" in result.output
    kafka = next(line for line in lines if " kafka " in line)
    assert "127.0.0.1:5998" in kafka
    assert str(sleeper.pid) in kafka
    assert "running" in kafka

    as_json = run(["ps", "--json"], env)
    assert as_json.exit_code == 0
    doc = json.loads(as_json.output)
    assert doc["supervisor_pid"] == me
    rows = {row["name"]: row for row in doc["processes"]}
    assert rows["http"] == {
        "name": "http",
        "pid": sleeper.pid,
        "state": "running",
        "url": "http://127.0.0.1:8000",
        "restarts": 2,
    }
    assert rows["grpc"]["state"] == "dead"
    assert rows["postgres"]["state"] == "running"
    assert rows["kafka"] == {"name": "kafka", "pid": sleeper.pid, "state": "running", "url": "127.0.0.1:5998"}


# -- up ---------------------------------------------------------------------------------------------------------------


def test_up_refuses_when_another_holds_the_data_dir(env: dict[str, str], tmp_path: Path) -> None:
    with StackLock(tmp_path) as lock:
        assert lock.acquire()
        result = run(["up"], env)
    assert result.exit_code == 1
    assert "already running" in result.output


def test_up_refuses_when_stack_json_names_a_live_supervisor(
    env: dict[str, str], tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    state = {"supervisor_pid": sleeper.pid, "supervisor_create_time": create_time(sleeper.pid), "runtimes": []}
    write_state(tmp_path, state)
    result = run(["up"], env)
    assert result.exit_code == 1
    assert f"already running on {tmp_path.resolve()} (supervisor pid {sleeper.pid})" in result.output
    assert read_state(tmp_path) == state  # left alone


def test_up_refuses_a_port_in_use(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(commands, "migrate_database", lambda url: pytest.fail("must not migrate"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        result = run(["up"], {**env, "CHAT4ALL_HTTP_PORT": str(port), "CHAT4ALL_DATABASE_URL": "postgresql://x/y"})
    assert result.exit_code == 1


def sigterm_once(
    data_dir: Path, seen: dict[str, Any], act: Callable[[dict[str, Any]], bool] | None = None
) -> threading.Thread:
    """A thread that waits for `up` to run its runtime, calls ``act(state)`` until it is True, then SIGTERMs us."""

    def running(state: dict[str, Any] | None) -> bool:
        return bool(state and state["runtimes"] and state["runtimes"][0]["pid"])

    def stop_when_running() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            state = read_state(data_dir)
            if running(state) and (act is None or act(state or {})):
                seen.update(state or {})
                time.sleep(0.3)  # let the banner out
                handler = signal.getsignal(signal.SIGTERM)
                # never SIGTERM pytest itself: only while `up` has its handler installed
                if isinstance(getattr(handler, "__self__", None), commands.StopSignals):
                    os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=stop_when_running)
    killer.start()
    return killer


def fake_runtime(monkeypatch: pytest.MonkeyPatch) -> list[RuntimeSpec]:
    specs: list[RuntimeSpec] = []

    def fake_specs(settings: Settings, runtime_env: dict[str, str]) -> list[RuntimeSpec]:
        specs.append(RuntimeSpec("fake", SLEEPER, env=runtime_env, url="http://127.0.0.1:1"))
        return specs

    monkeypatch.setattr(commands, "runtime_specs", fake_specs)
    return specs


def test_up_supervises_until_sigterm(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The whole `up` flow in process: external database and kafka (faked), one fake runtime, SIGTERM to ourselves."""
    migrated: list[str] = []
    monkeypatch.setattr(commands, "migrate_database", lambda url: migrated.append(url) or ["0001_initial"])
    topics: list[tuple[str, int]] = []
    monkeypatch.setattr(
        commands, "ensure_kafka_topics", lambda b, s, **kw: topics.append((b, s.kafka_partitions)) or []
    )
    monkeypatch.setattr(commands, "EmbeddedKafka", lambda *a, **kw: pytest.fail("must not start a broker"))
    specs = fake_runtime(monkeypatch)
    stale = tmp_path / "metrics" / "stack-0" / "counter_1.db"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"")
    seen: dict[str, Any] = {}
    killer = sigterm_once(tmp_path, seen)
    settings = Settings(
        data_dir=tmp_path,
        database_url="postgresql://app:s3cret@127.0.0.1:1/chat",
        kafka_bootstrap="kafka-1:9092,kafka-2:9092",
        kafka_partitions=16,
        http_port=0,
        grpc_port=0,
        host="127.0.0.1",
    )
    code = commands.up(settings, {"PATH": os.environ["PATH"]})
    killer.join()
    out = capsys.readouterr().out
    assert code == 0
    assert migrated == ["postgresql://app:s3cret@127.0.0.1:1/chat"]
    assert topics == [("kafka-1:9092,kafka-2:9092", 16)]
    assert seen["supervisor_pid"] == os.getpid()
    assert seen["postgres"] is None
    assert seen["kafka"] is None
    assert "external     kafka-1:9092,kafka-2:9092" in out
    [rt] = seen["runtimes"]
    assert rt["name"] == "fake"
    assert rt["restarts"] == 0
    assert "s3cret" not in out
    assert "postgresql://app:***@127.0.0.1:1/chat" in out
    assert f"pid {rt['pid']}" in out
    secret = (tmp_path / "secrets" / "jwt_secret").read_text().strip()
    assert secret not in out
    assert specs[0].env is not None
    assert specs[0].env["CHAT4ALL_JWT_SECRET"] == secret
    assert specs[0].env["CHAT4ALL_DATABASE_URL"] == "postgresql://app:s3cret@127.0.0.1:1/chat"
    assert specs[0].env["CHAT4ALL_KAFKA_BOOTSTRAP"] == "kafka-1:9092,kafka-2:9092"
    assert specs[0].env["PROMETHEUS_MULTIPROC_DIR"] == str(stale.parent)
    assert stale.parent.is_dir()
    assert not stale.exists()  # emptied for the new stack
    assert read_state(tmp_path) is None  # removed on the way out
    with pytest.raises(ProcessLookupError):
        os.kill(rt["pid"], 0)


def test_scale_starts_and_stops_workers_of_a_running_up(
    env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`up` in process on fake runtimes; another thread runs `chat4all scale` against it, as another process would."""
    caplog.set_level(logging.INFO, logger="chat4all.stack")
    monkeypatch.setattr(commands, "migrate_database", lambda url: [])
    monkeypatch.setattr(commands, "ensure_kafka_topics", lambda b, s, **kw: [])
    built: list[tuple[str, int, dict[str, str]]] = []

    def fake_spec(settings: Settings, runtime_env: dict[str, str], kind: str, index: int) -> RuntimeSpec:
        built.append((kind, index, runtime_env))
        return RuntimeSpec(runtime_name(kind, index), SLEEPER, env=runtime_env)

    monkeypatch.setattr(commands, "runtime_spec", fake_spec)
    monkeypatch.setattr(commands, "runtime_specs", lambda settings, e: [fake_spec(settings, e, "router", 1)])
    write_scale_request(tmp_path, {"sweeper": 2})  # left by an earlier run: not for this one
    results: list[tuple[str, int, dict[str, Any]]] = []

    def scale_up_then_down(state: dict[str, Any]) -> bool:
        results.append(("first", 0, state))
        for label, wanted in (("up", {"router": 3, "push": 1}), ("down", {"router": 1, "push": 0})):
            code = commands.scale(tmp_path, wanted, timeout=20)
            results.append((label, code, read_state(tmp_path) or {}))
        return True

    seen: dict[str, Any] = {}
    killer = sigterm_once(tmp_path, seen, scale_up_then_down)
    settings = Settings(data_dir=tmp_path, database_url="postgresql://x/y", kafka_bootstrap="k:1", http_port=0)
    code = commands.up(settings, {"PATH": os.environ["PATH"]}, stop_timeout=5)
    killer.join()
    assert code == 0
    [(_, _, first), (_, up_code, scaled), (_, down_code, back)] = results

    def names(state: dict[str, Any]) -> list[str]:
        return [rt["name"] for rt in state["runtimes"]]

    assert names(first) == ["router"]
    assert up_code == 0
    # no sweeper: the stale scale.json was dropped when `up` started, so the command's request did not join it
    assert sorted(names(scaled)) == ["push", "router", "router-2", "router-3"]
    assert scaled["runtimes"][0]["pid"] == first["runtimes"][0]["pid"]  # nothing else restarted
    assert sorted((kind, index) for kind, index, _ in built) == [
        ("push", 1),
        ("router", 1),
        ("router", 2),
        ("router", 3),
    ]
    assert all(e is built[0][2] for _, _, e in built)  # the stack's own environment
    assert down_code == 0
    assert names(back) == ["router"]
    assert back["runtimes"][0]["pid"] == first["runtimes"][0]["pid"]
    for rt in scaled["runtimes"]:  # the ones scaled away are stopped, not left behind
        if rt["name"] == "router":
            continue
        with pytest.raises(ProcessLookupError):
            os.kill(rt["pid"], 0)
    out = capsys.readouterr().out
    assert "router-3" in out  # the table printed once scaled
    messages = [r.getMessage() for r in caplog.records]
    for line in ("scaled router: 1 -> 3", "scaled push: 0 -> 1", "scaled router: 3 -> 1", "scaled push: 1 -> 0"):
        assert line in messages


class FakeBroker:
    """Stands in for EmbeddedKafka: a sleeping process per start, on the port it was given."""

    made: ClassVar[list[FakeBroker]] = []

    def __init__(self, log_dir: Path, *, port: int | None = None, environ: Any = None) -> None:
        self.port = port or 1
        self.process: subprocess.Popen[bytes] | None = None
        self.pids: list[int] = []
        FakeBroker.made.append(self)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self) -> None:
        self.process = subprocess.Popen(list(SLEEPER), start_new_session=True)
        self.pids.append(self.process.pid)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait()


def test_up_runs_the_embedded_broker_restarts_it_and_stops_it(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(commands, "migrate_database", lambda url: [])
    topics: list[tuple[str, int]] = []
    monkeypatch.setattr(
        commands, "ensure_kafka_topics", lambda b, s, **kw: topics.append((b, s.kafka_partitions)) or []
    )
    FakeBroker.made.clear()
    monkeypatch.setattr(commands, "EmbeddedKafka", FakeBroker)
    specs = fake_runtime(monkeypatch)
    port = free_port()
    killed: list[int] = []

    def kill_the_broker_once_then_see_it_back(state: dict[str, Any]) -> bool:
        kafka = state.get("kafka") or {}
        if not killed:
            killed.append(kafka["pid"])
            os.kill(kafka["pid"], signal.SIGKILL)
            return False
        return kafka.get("pid") not in (None, killed[0])

    seen: dict[str, Any] = {}
    killer = sigterm_once(tmp_path, seen, kill_the_broker_once_then_see_it_back)
    settings = Settings(
        data_dir=tmp_path, database_url="postgresql://x/y", http_port=0, grpc_port=0, kafka_partitions=3
    )
    code = commands.up(settings, {"PATH": os.environ["PATH"], "CHAT4ALL_KAFKA_PORT": str(port)})
    killer.join()
    out = capsys.readouterr().out
    assert code == 0
    [broker] = FakeBroker.made
    assert broker.port == port
    assert len(broker.pids) == 2  # started, killed, started again
    assert seen["kafka"]["pid"] == broker.pids[1]
    assert seen["kafka"]["bootstrap"] == f"127.0.0.1:{port}"
    assert topics == [(f"127.0.0.1:{port}", 3)] * 2  # topics ensured again after the restart
    assert f"kafka      pid {broker.pids[0]}" in out
    assert specs[0].env is not None
    assert specs[0].env["CHAT4ALL_KAFKA_BOOTSTRAP"] == f"127.0.0.1:{port}"
    for pid in broker.pids:  # nothing left running
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert read_state(tmp_path) is None


def test_up_refuses_a_kafka_port_in_use(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(commands, "migrate_database", lambda url: pytest.fail("must not migrate"))
    monkeypatch.setattr(commands, "EmbeddedKafka", lambda *a, **kw: pytest.fail("must not start a broker"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = str(s.getsockname()[1])
        result = run(
            ["up"],
            {
                **env,
                "CHAT4ALL_HTTP_PORT": str(free_port()),
                "CHAT4ALL_KAFKA_PORT": busy,
                "CHAT4ALL_DATABASE_URL": "postgresql://x/y",
            },
        )
    assert result.exit_code == 1
    assert any(f"port {busy}" in m and "CHAT4ALL_KAFKA_PORT" in m for m in caplog.messages)


def test_migrate_with_a_database_url(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    applied = iter([["0001_initial", "0002_more"], []])
    monkeypatch.setattr(commands, "migrate_database", lambda url: next(applied))
    env = {**env, "CHAT4ALL_DATABASE_URL": "postgresql://x/y"}
    first = run(["migrate"], env)
    assert first.exit_code == 0
    assert "applied 0001_initial" in first.output
    assert "applied 0002_more" in first.output
    second = run(["migrate"], env)
    assert second.exit_code == 0
    assert "up to date" in second.output


def test_up_runs_the_sandbox_and_points_the_channels_at_it_unless_a_platform_is_configured(tmp_path: Path) -> None:
    plain = Settings(http_port=8123, sandbox_port=8181)
    real = Settings(whatsapp_access_token="EAAG-real", whatsapp_phone_number_id="1")
    forced = real.model_copy(update={"sandbox": True})
    assert [sandbox_wanted(plain), sandbox_wanted(real), sandbox_wanted(forced)] == [True, False, True]
    assert runtime_ports(plain) == {"http": 8123, "grpc": 50051, "sandbox": 8181}
    assert runtime_ports(real) == {"http": 8000, "grpc": 50051}

    credentials = load_or_create_sandbox_credentials(tmp_path)
    env = runtime_env(
        {},
        plain,
        database_url="postgresql://db/x",
        kafka_bootstrap="k:1",
        jwt_secret="k",
        data_dir=tmp_path,
        sandbox=sandbox_env(plain, credentials),
    )
    sandbox, http = runtime_specs(plain, env)[:2]

    assert (sandbox.name, sandbox.url, sandbox.health_url) == (
        "sandbox",
        "http://127.0.0.1:8181",
        "http://127.0.0.1:8181/health",
    )
    assert list(sandbox.argv) == [sys.executable, "-m", "entrypoints.sandbox"]
    assert http.name == "http"
    assert env["CHAT4ALL_GRAPH_API_BASE"] == env["CHAT4ALL_TELEGRAM_API_BASE"] == "http://127.0.0.1:8181"
    assert env["CHAT4ALL_SANDBOX_CHAT4ALL_URL"] == "http://127.0.0.1:8123"
    assert env["CHAT4ALL_WHATSAPP_APP_SECRET"] == credentials["CHAT4ALL_WHATSAPP_APP_SECRET"]
    configured = Settings(**{k.removeprefix("CHAT4ALL_").lower(): v for k, v in credentials.items()})
    assert platforms_configured(configured)
    # kept private and reused, so a restarted stack and its sandbox still agree
    assert (tmp_path / "secrets" / "sandbox.json").stat().st_mode & 0o777 == 0o600
    assert load_or_create_sandbox_credentials(tmp_path) == credentials
