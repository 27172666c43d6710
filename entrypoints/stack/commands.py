"""`chat4all up`, `ps`, `scale` and `migrate`: each returns the process exit code; ``entrypoints.cli`` wires them
to click."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType
from typing import Any

import click

from entrypoints.settings import Settings
from entrypoints.stack.kafka import EmbeddedKafka
from entrypoints.stack.postgres import EmbeddedPostgres
from entrypoints.stack.redis import EmbeddedRedis
from entrypoints.stack.runtimes import (
    check_scale,
    forget_dead_processes,
    kind_counts,
    load_or_create_jwt_secret,
    load_or_create_sandbox_credentials,
    metrics_dir,
    plan_scale,
    port_free,
    redact_url,
    reset_metrics_dir,
    runtime_env,
    runtime_index,
    runtime_name,
    runtime_ports,
    runtime_spec,
    runtime_specs,
    sandbox_env,
    sandbox_wanted,
)
from entrypoints.stack.state import (
    SCALE_SIGNAL,
    StackLock,
    create_time,
    process_alive,
    read_scale_request,
    read_state,
    reap_orphans,
    remove_scale_request,
    remove_state,
    supervisor_alive,
    write_scale_request,
    write_state,
)
from entrypoints.stack.supervisor import Backoff, Supervisor

log = logging.getLogger("chat4all.stack")

PG_PORT_ENV = "CHAT4ALL_PG_PORT"
KAFKA_PORT_ENV = "CHAT4ALL_KAFKA_PORT"
DATABASE_NAME = "chat4all"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StackError(Exception):
    """A failure with a message fit for the user; no traceback."""


def _port_setting(environ: Mapping[str, str], name: str) -> int | None:
    raw = environ.get(name, "").strip()
    if not raw:
        return None
    try:
        port = int(raw)
    except ValueError:
        raise StackError(f"{name}={raw!r} is not a port number") from None
    if not 0 < port < 65536:
        raise StackError(f"{name}={port} is not a port number")
    return port


def pg_port(environ: Mapping[str, str]) -> int | None:
    """CHAT4ALL_PG_PORT: the embedded PostgreSQL's port (unset: any free one)."""
    return _port_setting(environ, PG_PORT_ENV)


def kafka_port(environ: Mapping[str, str]) -> int | None:
    """CHAT4ALL_KAFKA_PORT: the embedded Kafka broker's port (unset: any free one)."""
    return _port_setting(environ, KAFKA_PORT_ENV)


def migrate_database(conninfo: str) -> list[str]:
    from adapters.postgres.migrate import MigrationChanged, migrate_sync
    from application.errors import Unavailable

    try:
        return list(migrate_sync(conninfo))
    except (Unavailable, MigrationChanged) as exc:
        raise StackError(f"migrations failed: {exc}") from exc


def ensure_kafka_topics(bootstrap: str, settings: Settings, timeout: float = 30.0) -> list[str]:
    """Create the platform's missing topics on ``bootstrap`` with the configured partitions and replication
    (CHAT4ALL_KAFKA_PARTITIONS, _REPLICATION_FACTOR, _MIN_INSYNC_REPLICAS); the names of those created."""
    from adapters.kafka.topics import ensure_topics
    from application.errors import Unavailable

    try:
        return asyncio.run(
            ensure_topics(
                bootstrap,
                settings.kafka_partitions,
                replication_factor=settings.kafka_replication_factor,
                min_insync_replicas=settings.kafka_min_insync_replicas,
                retry_for=timeout,
            )
        )
    except (Unavailable, ValueError) as exc:
        raise StackError(str(exc)) from exc


def topics(settings: Settings) -> int:
    """`chat4all topics`: create the missing topics on CHAT4ALL_KAFKA_BOOTSTRAP with the configured partitions and
    replication (existing topics are left as they are). 0 on success, 1 otherwise."""
    if not settings.kafka_bootstrap:
        _err("set CHAT4ALL_KAFKA_BOOTSTRAP: `chat4all topics` is for a Kafka cluster (`up` makes its own topics)")
        return 1
    try:
        created = ensure_kafka_topics(settings.kafka_bootstrap, settings)
    except StackError as exc:
        _err(str(exc))
        return 1
    click.echo(f"created {', '.join(created)}" if created else "every topic exists already")
    return 0


class Revival:
    """Backoff bookkeeping for one embedded server that `up` starts again whenever it dies."""

    def __init__(self, backoff: Backoff) -> None:
        self.backoff = backoff
        self.failures = 0
        self.retry_at: float | None = None

    def attempt(self, name: str, pid: int | None, returncode: int | None, restart: Callable[[], None]) -> bool:
        """Call ``restart`` now, unless an earlier failure scheduled the next try later. True when it worked."""
        now = time.monotonic()
        if self.retry_at is None:
            log.error("%s (pid %s) exited with code %s; starting it again", name, pid, returncode)
        elif now < self.retry_at:
            return False
        try:
            restart()
        except Exception as exc:
            self.failures += 1
            delay = self.backoff.delay(self.failures)
            self.retry_at = now + delay
            log.error("%s could not be restarted (%s); retrying in %.0fs", name, exc, delay)
            return False
        self.failures = 0
        self.retry_at = None
        return True


def data_dir_of(settings: Settings) -> Path:
    data_dir = settings.data_dir.expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    return data_dir


def _err(message: str) -> None:
    click.echo(message, err=True)


class StopSignals:
    """SIGINT/SIGTERM/SIGHUP only raise a flag, which the supervision loop checks; old handlers come back on exit.

    SCALE_SIGNAL (SIGUSR1, from `chat4all scale`) only counts a request the loop then takes up: a handler must not
    start or stop processes in the middle of whatever the loop was doing.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._scale_requests = 0  # only the handler writes it: a request arriving mid-check is never lost
        self._scale_taken = 0
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum

    def _handle_scale(self, signum: int, frame: FrameType | None) -> None:
        self._scale_requests += 1

    def requested(self) -> bool:
        return self.signum is not None

    def scale_pending(self) -> bool:
        return self._scale_requests != self._scale_taken

    def take_scale_request(self) -> bool:
        """True once for any number of scale signals since the last call (scale.json holds the latest counts)."""
        seen = self._scale_requests
        if seen == self._scale_taken:
            return False
        self._scale_taken = seen
        return True

    def __enter__(self) -> StopSignals:
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        self._previous[SCALE_SIGNAL] = signal.signal(SCALE_SIGNAL, self._handle_scale)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class Stack:
    """One `chat4all up`: postgres, kafka and redis (unless external), migrations, topics, the supervised runtimes."""

    def __init__(
        self,
        settings: Settings,
        data_dir: Path,
        environ: Mapping[str, str],
        *,
        backoff: Backoff | None = None,
        ready_timeout: float = 60.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self.settings = settings
        self.data_dir = data_dir
        self.environ = environ
        self.backoff = backoff
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.started_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        self.postgres: EmbeddedPostgres | None = None
        self.postgres_url: str | None = None
        self.database_url: str | None = None
        self.kafka: EmbeddedKafka | None = None
        self.kafka_bootstrap: str | None = None
        self.redis: EmbeddedRedis | None = None
        self.redis_url: str | None = None
        self.supervisor: Supervisor | None = None
        self.env: dict[str, str] | None = None  # what every runtime runs with; `scale` starts new ones with it too
        self.metrics_dir: Path | None = None
        self.signals = StopSignals()
        self._create_times: dict[int, float | None] = {}
        self._pg_revival = Revival(backoff or Backoff())
        self._kafka_revival = Revival(backoff or Backoff())
        self._redis_revival = Revival(backoff or Backoff())

    # -- stack.json -------------------------------------------------------------------------------------------------

    def _created(self, pid: int | None) -> float | None:
        if pid is None:
            return None
        if pid not in self._create_times:
            self._create_times[pid] = create_time(pid)
        return self._create_times[pid]

    def state(self) -> dict[str, Any]:
        pg = self.postgres
        kafka = self.kafka
        redis = self.redis
        return {
            "supervisor_pid": os.getpid(),
            "supervisor_create_time": self._created(os.getpid()),
            "started_at": self.started_at,
            "data_dir": str(self.data_dir),
            "postgres": (
                {"pid": pg.pid, "url": self.postgres_url, "create_time": self._created(pg.pid)}
                if pg is not None and pg.pid is not None
                else None
            ),
            "kafka": (
                {"pid": kafka.pid, "bootstrap": kafka.bootstrap, "create_time": self._created(kafka.pid)}
                if kafka is not None and kafka.pid is not None
                else None
            ),
            "redis": (
                {"pid": redis.pid, "url": redis.url, "create_time": self._created(redis.pid)}
                if redis is not None and redis.pid is not None
                else None
            ),
            "runtimes": [
                {
                    "name": rt.name,
                    "pid": rt.pid,
                    "url": rt.spec.url,
                    "health_url": rt.spec.health_url,
                    "restarts": rt.restarts,
                    "create_time": self._created(rt.pid),
                }
                for rt in (self.supervisor.runtimes if self.supervisor is not None else [])
            ],
        }

    def save(self, _: object = None) -> None:
        write_state(self.data_dir, self.state())

    def _runtimes_changed(self, _: object = None) -> None:
        self.save()
        if self.metrics_dir is not None:
            forget_dead_processes(self.metrics_dir, process_alive)

    # -- lifecycle --------------------------------------------------------------------------------------------------

    def _check_ports(self) -> None:
        for name, port in runtime_ports(self.settings).items():
            if not port_free(self.settings.host, port):
                raise StackError(
                    f"port {port} on {self.settings.host} (for the {name} runtime) is in use; "
                    f"stop what holds it or choose another with CHAT4ALL_{name.upper()}_PORT"
                )
        fixed = None if self.settings.kafka_bootstrap else kafka_port(self.environ)
        if fixed is not None and not port_free("127.0.0.1", fixed):
            raise StackError(
                f"port {fixed} on 127.0.0.1 (for kafka) is in use; "
                f"stop what holds it or choose another with {KAFKA_PORT_ENV}"
            )

    def _start_postgres(self) -> str:
        if self.settings.database_url:
            log.info("using the database at %s", redact_url(self.settings.database_url))
            return self.settings.database_url
        pg = EmbeddedPostgres(self.data_dir, port=pg_port(self.environ))
        self.postgres = pg
        log.info("starting postgres (data in %s, port %d)", pg.pgdata, pg.port)
        pg.start()
        self.postgres_url = pg.create_database(DATABASE_NAME)
        log.info("postgres is up (pid %s)", pg.pid)
        self.save()
        return self.postgres_url

    def _watch_postgres(self) -> None:
        """The embedded postgres died under us: start it again on the same port, with backoff while that fails."""
        pg = self.postgres
        if pg is None or pg.process is None or pg.process.poll() is None:
            return
        if self._pg_revival.attempt("postgres", pg.pid, pg.process.returncode, pg.start):
            log.warning("postgres restarted (pid %s)", pg.pid)
            self.save()

    def _start_kafka(self) -> str:
        if self.settings.kafka_bootstrap:
            bootstrap = self.settings.kafka_bootstrap
            log.info("using the kafka cluster at %s", bootstrap)
        else:
            kafka = EmbeddedKafka(self.data_dir, port=kafka_port(self.environ), environ=self.environ)
            self.kafka = kafka
            log.info("starting kafka (tansu, in memory, port %d)", kafka.port)
            try:
                kafka.start()
            except (RuntimeError, TimeoutError) as exc:
                raise StackError(str(exc)) from exc
            bootstrap = kafka.bootstrap
            log.info("kafka is up (pid %s)", kafka.pid)
            self.save()
        created = ensure_kafka_topics(bootstrap, self.settings)
        log.info("kafka topics: %s", f"{len(created)} created" if created else "all present")
        return bootstrap

    def _restart_kafka(self) -> None:
        kafka = self.kafka
        if kafka is None:
            return
        kafka.start()
        try:
            ensure_kafka_topics(kafka.bootstrap, self.settings, timeout=10.0)
        except BaseException:
            kafka.stop()  # try the whole restart again later
            raise

    def _watch_kafka(self) -> None:
        """The embedded broker died: start it again on the same port and re-create the topics (its log is gone)."""
        kafka = self.kafka
        if kafka is None or kafka.process is None or kafka.process.poll() is None:
            return
        if self._kafka_revival.attempt("kafka", kafka.pid, kafka.process.returncode, self._restart_kafka):
            log.warning("kafka restarted (pid %s) with empty in-memory storage; topics re-created", kafka.pid)
            self.save()

    def _start_redis(self) -> str:
        if self.settings.redis_url:
            log.info("using the redis at %s", redact_url(self.settings.redis_url))
            return self.settings.redis_url
        redis = EmbeddedRedis(self.data_dir)
        self.redis = redis
        log.info("starting redis (in memory, port %d)", redis.port)
        try:
            redis.start()
        except (RuntimeError, TimeoutError) as exc:
            raise StackError(str(exc)) from exc
        log.info("redis is up (pid %s)", redis.pid)
        self.save()
        return redis.url

    def _watch_redis(self) -> None:
        """The embedded redis died: start it again on the same port (presence starts over; clients resync)."""
        redis = self.redis
        if redis is None or redis.process is None or redis.process.poll() is None:
            return
        if self._redis_revival.attempt("redis", redis.pid, redis.process.returncode, redis.start):
            log.warning("redis restarted (pid %s)", redis.pid)
            self.save()

    def _rescale(self) -> None:
        """Apply scale.json (`chat4all scale`): start or stop processes of the kinds it names, nothing else.

        The whole request is checked first: a bad count anywhere (the file may be written by hand) changes nothing.
        """
        supervisor, env = self.supervisor, self.env
        if supervisor is None or env is None:
            return
        try:
            wanted = read_scale_request(self.data_dir)
            for kind, count in wanted.items():
                check_scale(kind, count)
        except ValueError as exc:
            log.error("scale request ignored: %s", exc)
            return
        names = [rt.name for rt in supervisor.runtimes]
        before = kind_counts(names, wanted)
        plan = plan_scale(names, wanted)
        for kind, index in plan.start:  # new processes first: they import while the surplus ones shut down
            supervisor.add(runtime_spec(self.settings, env, kind, index))
        if plan.stop:
            supervisor.remove(*plan.stop)
        for kind, count in wanted.items():
            if before[kind] != count:
                log.info("scaled %s: %d -> %d", kind, before[kind], count)

    def banner(self, ready: Mapping[str, bool]) -> str:
        lines = [f"chat4all is up: supervisor pid {os.getpid()}, data in {self.data_dir}"]
        if self.postgres is not None:
            lines.append(f"  {'postgres':<10} pid {self.postgres.pid!s:<8} {self.postgres_url}")
        elif self.database_url is not None:
            lines.append(f"  {'database':<10} {'external':<12} {redact_url(self.database_url)}")
        if self.kafka is not None:
            lines.append(f"  {'kafka':<10} pid {self.kafka.pid!s:<8} {self.kafka.bootstrap}")
        elif self.kafka_bootstrap is not None:
            lines.append(f"  {'kafka':<10} {'external':<12} {self.kafka_bootstrap}")
        if self.redis is not None:
            lines.append(f"  {'redis':<10} pid {self.redis.pid!s:<8} {self.redis.url}")
        elif self.redis_url is not None:
            lines.append(f"  {'redis':<10} {'external':<12} {redact_url(self.redis_url)}")
        if self.supervisor is not None:
            for rt in self.supervisor.runtimes:
                status = "ready" if ready.get(rt.name) else "starting (not ready yet)"
                lines.append(f"  {rt.name:<10} pid {rt.pid!s:<8} {rt.spec.url or '-'}  {status}")
            http = next((rt.spec.url for rt in self.supervisor.runtimes if rt.name == "http" and rt.spec.url), None)
            if http is not None:
                lines.append(f"The web app: {http.rstrip('/')}/ (API docs at {http.rstrip('/')}/docs)")
        lines.append(f"Stop with Ctrl-C (or kill -TERM {os.getpid()}); `chat4all ps` lists the processes.")
        return "\n".join(lines)

    def run(self) -> int:
        with self.signals:
            try:
                return self._run()
            except StackError as exc:
                log.error("%s", exc)
                return 1
            except Exception:
                log.exception("chat4all up failed")
                return 1
            finally:
                self._shutdown()

    def _run(self) -> int:
        stop = self.signals
        remove_scale_request(self.data_dir)  # counts asked of an earlier run do not carry over
        self._check_ports()
        self.database_url = self._start_postgres()
        if stop.requested():
            return 0
        self.kafka_bootstrap = self._start_kafka()
        if stop.requested():
            return 0
        self.redis_url = self._start_redis()
        if stop.requested():
            return 0
        applied = migrate_database(self.database_url)
        log.info("migrations: %s", ", ".join(applied) if applied else "schema is up to date")
        secret = self.settings.jwt_secret
        jwt_secret = secret.get_secret_value() if secret is not None else load_or_create_jwt_secret(self.data_dir)
        self.metrics_dir = metrics_dir(self.data_dir, self.settings)
        reset_metrics_dir(self.metrics_dir)  # the runtimes' shared /metrics starts from zero with the stack
        self.env = env = runtime_env(
            self.environ,
            self.settings,
            database_url=self.database_url,
            kafka_bootstrap=self.kafka_bootstrap,
            redis_url=self.redis_url,
            jwt_secret=jwt_secret,
            data_dir=self.data_dir,
            sandbox=(
                sandbox_env(self.settings, load_or_create_sandbox_credentials(self.data_dir))
                if sandbox_wanted(self.settings)
                else None
            ),
        )
        self.supervisor = Supervisor(
            runtime_specs(self.settings, env),
            backoff=self.backoff,
            stop_timeout=self.stop_timeout,
            on_change=self._runtimes_changed,
        )
        if stop.requested():
            return 0
        self.supervisor.start()
        ready = self.supervisor.wait_ready(self.ready_timeout, stop.requested)
        if not stop.requested():
            click.echo(self.banner(ready))
            sys.stdout.flush()
            for name, ok in ready.items():
                if not ok:
                    log.warning("runtime %s is not ready after %.0fs; still supervising it", name, self.ready_timeout)
        while not stop.requested():
            if stop.take_scale_request():
                self._rescale()
            self.supervisor.poll()
            self._watch_postgres()
            self._watch_kafka()
            self._watch_redis()
            deadline = time.monotonic() + 0.5
            while not stop.requested() and not stop.scale_pending() and time.monotonic() < deadline:
                time.sleep(0.05)
        log.info("received %s; stopping", signal.Signals(stop.signum).name if stop.signum else "a stop request")
        return 0

    def _shutdown(self) -> None:
        try:
            if self.supervisor is not None:
                self.supervisor.stop()
        finally:
            try:
                if self.redis is not None:
                    log.info("stopping redis (pid %s)", self.redis.pid)
                    self.redis.stop()
                if self.kafka is not None:
                    log.info("stopping kafka (pid %s)", self.kafka.pid)
                    self.kafka.stop()
            finally:
                try:
                    if self.postgres is not None:
                        log.info("stopping postgres (pid %s)", self.postgres.pid)
                        self.postgres.stop()
                finally:
                    remove_state(self.data_dir)
                    log.info("stopped")


def up(
    settings: Settings,
    environ: Mapping[str, str] | None = None,
    *,
    backoff: Backoff | None = None,
    ready_timeout: float = 60.0,
    stop_timeout: float = 10.0,
) -> int:
    """Run the whole stack in the foreground until SIGINT/SIGTERM."""
    environ = os.environ if environ is None else environ
    data_dir = data_dir_of(settings)
    lock = StackLock(data_dir)
    if not lock.acquire():
        holder = read_state(data_dir) or {}
        pid = holder.get("supervisor_pid", "?")
        _err(
            f"chat4all is already running on {data_dir} (supervisor pid {pid}); stop it first or use another data dir."
        )
        return 1
    try:
        state = read_state(data_dir)
        if state is not None:
            if supervisor_alive(state) and state.get("supervisor_pid") != os.getpid():
                _err(f"chat4all is already running on {data_dir} (supervisor pid {state['supervisor_pid']}).")
                return 1
            log.warning(
                "stale %s (supervisor pid %s is gone); cleaning up",
                data_dir / "stack.json",
                state.get("supervisor_pid"),
            )
            for pid in reap_orphans(state):
                log.warning("stopped orphaned runtime process group %d", pid)
            remove_state(data_dir)
        stack = Stack(
            settings, data_dir, environ, backoff=backoff, ready_timeout=ready_timeout, stop_timeout=stop_timeout
        )
        return stack.run()
    finally:
        lock.release()


# -- ps ----------------------------------------------------------------------------------------------------------------


def ps_rows(state: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    pg = state.get("postgres")
    if isinstance(pg, dict):
        alive = process_alive(pg.get("pid"), pg.get("create_time"))
        rows.append(
            {"name": "postgres", "pid": pg.get("pid"), "state": "running" if alive else "dead", "url": pg.get("url")}
        )
    kafka = state.get("kafka")
    if isinstance(kafka, dict):
        alive = process_alive(kafka.get("pid"), kafka.get("create_time"))
        rows.append(
            {
                "name": "kafka",
                "pid": kafka.get("pid"),
                "state": "running" if alive else "dead",
                "url": kafka.get("bootstrap"),
            }
        )
    for rt in state.get("runtimes") or []:
        if not isinstance(rt, dict):
            continue
        alive = process_alive(rt.get("pid"), rt.get("create_time"))
        rows.append(
            {
                "name": rt.get("name"),
                "pid": rt.get("pid"),
                "state": "running" if alive else "dead",
                "url": rt.get("url"),
                "restarts": rt.get("restarts", 0),
            }
        )
    return rows


def ps(data_dir: Path, *, as_json: bool = False) -> int:
    data_dir = data_dir.expanduser().resolve()
    state = read_state(data_dir)
    if state is None:
        _err(f"no chat4all stack is running on {data_dir}")
        return 1
    if not supervisor_alive(state):
        gone = state.get("supervisor_pid")
        _err(f"no chat4all stack is running on {data_dir} (stale stack.json: supervisor pid {gone} is gone)")
        return 1
    _echo_processes(state, ps_rows(state), as_json=as_json)
    return 0


def _echo_processes(state: Mapping[str, Any], rows: list[dict[str, Any]], *, as_json: bool) -> None:
    """The table of `ps` (or its JSON), also what `scale` shows once it is done."""
    if as_json:
        click.echo(
            json.dumps(
                {
                    "supervisor_pid": state.get("supervisor_pid"),
                    "started_at": state.get("started_at"),
                    "processes": rows,
                },
                indent=2,
            )
        )
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"chat4all stack (supervisor pid {state.get('supervisor_pid')}, up since {state.get('started_at')})"
    )
    for column in ("name", "pid", "state", "url", "restarts"):
        table.add_column(column, no_wrap=True)
    for row in rows:
        state_text = row["state"] if row["state"] == "dead" else f"[green]{row['state']}[/green]"
        restarts = row.get("restarts")
        table.add_row(
            str(row["name"]),
            str(row["pid"]),
            state_text,
            str(row["url"] or "-"),
            "-" if restarts is None else str(restarts),
        )
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)
    console.print(table)


# -- scale -------------------------------------------------------------------------------------------------------------


def scale_shortfall(state: Mapping[str, Any], wanted: Mapping[str, int]) -> list[str]:
    """What stack.json still shows apart from ``wanted`` ("router-3 is not running", ...); empty once scaled."""
    runtimes = [rt for rt in state.get("runtimes") or [] if isinstance(rt, dict)]
    problems: list[str] = []
    for kind, count in wanted.items():
        have: dict[int, Mapping[str, Any]] = {}
        for entry in runtimes:
            index = runtime_index(str(entry.get("name")), kind)
            if index is not None:
                have[index] = entry
        for index in range(1, count + 1):
            rt = have.get(index)
            if rt is None:
                problems.append(f"{runtime_name(kind, index)} is not started")
            elif not process_alive(rt.get("pid"), rt.get("create_time")):
                problems.append(f"{runtime_name(kind, index)} is not running")
        problems.extend(f"{runtime_name(kind, i)} is still there" for i in sorted(have) if i > count)
    return problems


class ScaleError(Exception):
    """No stack runs, it stopped, or it did not run the wanted processes in time."""


def request_scale(data_dir: Path, wanted: Mapping[str, int], *, timeout: float = 30.0) -> dict[str, Any]:
    """Ask the running `up` on ``data_dir`` for these counts; wait until it runs exactly them; its state then.

    ``wanted`` is checked already (``parse_scale``). It joins the earlier requests of this run in scale.json, so
    two requests in quick succession both hold; SCALE_SIGNAL tells the supervisor to read the file.

    Raises:
        ScaleError: no stack runs, it stopped, or it did not scale within ``timeout``.
    """
    data_dir = data_dir.expanduser().resolve()
    state = read_state(data_dir)
    if state is None or not supervisor_alive(state):
        raise ScaleError(f"no chat4all stack is running on {data_dir}")
    write_scale_request(data_dir, {**_earlier_scale_request(data_dir), **wanted})
    try:
        os.kill(int(state["supervisor_pid"]), SCALE_SIGNAL)
    except ProcessLookupError:
        raise ScaleError(f"no chat4all stack is running on {data_dir}") from None
    deadline = time.monotonic() + timeout
    while True:
        state = read_state(data_dir)
        if state is None or not supervisor_alive(state):
            raise ScaleError(f"the chat4all stack on {data_dir} stopped before it was scaled")
        left = scale_shortfall(state, wanted)
        if not left:
            return state
        if time.monotonic() >= deadline:
            raise ScaleError(
                f"the stack on {data_dir} did not scale within {timeout:g}s: {'; '.join(left)} (see its log)"
            )
        time.sleep(0.1)


def scale(data_dir: Path, wanted: Mapping[str, int], *, timeout: float = 30.0, as_json: bool = False) -> int:
    """`chat4all scale KIND=N ...`: :func:`request_scale`, then the processes as `ps` shows them (0; 1 if not done)."""
    try:
        state = request_scale(data_dir, wanted, timeout=timeout)
    except ScaleError as exc:
        _err(str(exc))
        return 1
    _echo_processes(state, ps_rows(state), as_json=as_json)
    return 0


def _earlier_scale_request(data_dir: Path) -> dict[str, int]:
    """The counts asked before in this run that still make sense (a bad entry would make the supervisor refuse all)."""
    try:
        earlier = read_scale_request(data_dir)
    except ValueError:
        return {}
    valid: dict[str, int] = {}
    for kind, count in earlier.items():
        try:
            check_scale(kind, count)
        except ValueError:
            continue
        valid[kind] = count
    return valid


# -- migrate -----------------------------------------------------------------------------------------------------------


def migrate(settings: Settings, environ: Mapping[str, str] | None = None) -> int:
    """Apply pending migrations to CHAT4ALL_DATABASE_URL, or to the data dir's embedded postgres."""
    environ = os.environ if environ is None else environ
    try:
        applied = _migrate(settings, environ)
    except StackError as exc:
        _err(str(exc))
        return 1
    except Exception:
        log.exception("chat4all migrate failed")
        return 1
    if applied:
        for name in applied:
            click.echo(f"applied {name}")
    else:
        click.echo("database is up to date")
    return 0


def _migrate(settings: Settings, environ: Mapping[str, str]) -> list[str]:
    if settings.database_url:
        log.info("migrating %s", redact_url(settings.database_url))
        return migrate_database(settings.database_url)
    data_dir = data_dir_of(settings)
    lock = StackLock(data_dir)
    if not lock.acquire():
        # `up` owns the data dir: migrate the postgres it runs instead of starting a second one
        state = read_state(data_dir)
        pg = state.get("postgres") if state and supervisor_alive(state) else None
        if not isinstance(pg, dict) or not pg.get("url"):
            raise StackError(f"another chat4all process holds {data_dir}; try again when it is done")
        log.info("migrating the running stack's postgres at %s", pg["url"])
        return migrate_database(str(pg["url"]))
    try:
        pg_server = EmbeddedPostgres(data_dir, port=pg_port(environ))
        log.info("starting postgres (data in %s)", pg_server.pgdata)
        pg_server.start()
        try:
            return migrate_database(pg_server.create_database(DATABASE_NAME))
        finally:
            pg_server.stop()
    finally:
        lock.release()
