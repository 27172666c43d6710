"""The runtimes `chat4all up` runs, their environment, and the secrets it keeps for them."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from entrypoints.settings import WORKER_KINDS, Settings
from entrypoints.stack.supervisor import RuntimeSpec

JWT_SECRET_FILE = Path("secrets") / "jwt_secret"
SANDBOX_SECRETS_FILE = Path("secrets") / "sandbox.json"
SANDBOX_PHONE_NUMBER_ID = "106540352242922"
METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"


def connect_host(host: str) -> str:
    """Where to reach a server bound to ``host`` from this machine (a wildcard bind is reached on loopback)."""
    if host in ("", "0.0.0.0"):  # noqa: S104 - comparing, not binding
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def http_base(host: str, port: int) -> str:
    h = connect_host(host)
    return f"http://[{h}]:{port}" if ":" in h else f"http://{h}:{port}"


def redact_url(url: str) -> str:
    """``url`` without its password, for banners and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def platforms_configured(settings: Settings) -> bool:
    """Are any real platform credentials set (then `up` leaves the channels alone unless told otherwise)?"""
    s = settings
    return any(
        v is not None
        for v in (s.whatsapp_access_token, s.messenger_page_token, s.instagram_access_token, s.telegram_bot_token)
    )


def sandbox_wanted(settings: Settings) -> bool:
    """Does `up` run the channel sandbox: CHAT4ALL_SANDBOX if set, else when no platform is configured."""
    return settings.sandbox if settings.sandbox is not None else not platforms_configured(settings)


def load_or_create_sandbox_credentials(data_dir: Path) -> dict[str, str]:
    """The credentials `up` gives both the channel sandbox and the connectors, kept at ``secrets/sandbox.json``
    (0600) so that a restarted stack and the platform it talks to still agree."""
    path = data_dir / SANDBOX_SECRETS_FILE
    with contextlib.suppress(FileNotFoundError, ValueError):
        stored = json.loads(path.read_text())
        if isinstance(stored, dict) and all(isinstance(v, str) for v in stored.values()):
            return stored
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    token = secrets.token_urlsafe
    created = {
        "CHAT4ALL_WHATSAPP_ACCESS_TOKEN": f"EAAG{token(32)}",
        "CHAT4ALL_WHATSAPP_PHONE_NUMBER_ID": SANDBOX_PHONE_NUMBER_ID,
        "CHAT4ALL_WHATSAPP_APP_SECRET": secrets.token_hex(16),
        "CHAT4ALL_WHATSAPP_VERIFY_TOKEN": token(16),
        "CHAT4ALL_MESSENGER_PAGE_TOKEN": f"EAAG{token(32)}",
        "CHAT4ALL_MESSENGER_APP_SECRET": secrets.token_hex(16),
        "CHAT4ALL_MESSENGER_VERIFY_TOKEN": token(16),
        "CHAT4ALL_INSTAGRAM_ACCESS_TOKEN": f"IGQV{token(32)}",
        "CHAT4ALL_INSTAGRAM_APP_SECRET": secrets.token_hex(16),
        "CHAT4ALL_INSTAGRAM_VERIFY_TOKEN": token(16),
        "CHAT4ALL_TELEGRAM_BOT_TOKEN": f"{secrets.randbelow(9 * 10**9) + 10**9}:{token(26)}",
        "CHAT4ALL_TELEGRAM_WEBHOOK_SECRET": token(24),
    }
    _write_private(path, json.dumps(created, indent=2) + "\n")
    return created


def sandbox_env(settings: Settings, credentials: Mapping[str, str]) -> dict[str, str]:
    """What points every channel at the sandbox (and the sandbox back at the API): the credentials and base URLs.

    The web app gets the sandbox's URL too (``GET /config.json``), for its phones view; a URL set by hand
    (``CHAT4ALL_WEB_SANDBOX_URL``: the sandbox as a browser elsewhere reaches it) wins.
    """
    sandbox = http_base(settings.host, settings.sandbox_port)
    return {
        **credentials,
        "CHAT4ALL_GRAPH_API_BASE": sandbox,
        "CHAT4ALL_TELEGRAM_API_BASE": sandbox,
        "CHAT4ALL_SANDBOX_CHAT4ALL_URL": http_base(settings.host, settings.http_port),
        "CHAT4ALL_WEB_SANDBOX_URL": settings.web_sandbox_url or sandbox,
    }


def load_or_create_jwt_secret(data_dir: Path) -> str:
    """The signing key kept at ``<data_dir>/secrets/jwt_secret`` (0600); created once, so tokens survive restarts."""
    path = data_dir / JWT_SECRET_FILE
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        existing = path.read_text().strip()
        if existing:
            if path.stat().st_mode & 0o077:
                path.chmod(0o600)
            return existing
        path.unlink()
    value = secrets.token_urlsafe(48)
    _write_private(path, value + "\n")
    return value


def port_free(host: str, port: int) -> bool:
    """Can a server bind ``host:port`` (with SO_REUSEADDR, as servers do)?"""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def runtime_env(
    base: Mapping[str, str],
    settings: Settings,
    *,
    database_url: str,
    kafka_bootstrap: str,
    redis_url: str | None = None,
    jwt_secret: str,
    data_dir: Path,
    sandbox: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Our environment plus what the runtimes must agree on (and, with ``sandbox``, the channels pointed at it)."""
    env = dict(base)
    # One port per process: under `up` the runtimes share the HTTP API's /metrics (PROMETHEUS_MULTIPROC_DIR),
    # and a CHAT4ALL_METRICS_PORT exported by the developer would make every worker but one fail to bind it.
    env.pop("CHAT4ALL_METRICS_PORT", None)
    env.update(sandbox or {})
    env.update(
        CHAT4ALL_DATABASE_URL=database_url,
        CHAT4ALL_KAFKA_BOOTSTRAP=kafka_bootstrap,
        CHAT4ALL_JWT_SECRET=jwt_secret,
        CHAT4ALL_DATA_DIR=str(data_dir),
        CHAT4ALL_HOST=settings.host,
        CHAT4ALL_HTTP_PORT=str(settings.http_port),
        CHAT4ALL_GRPC_PORT=str(settings.grpc_port),
        CHAT4ALL_HTTP_REUSE_PORT="1",  # each API process is a runtime of its own, on the one port
        CHAT4ALL_SANDBOX_PORT=str(settings.sandbox_port),
        PYTHONUNBUFFERED="1",
    )
    if redis_url is not None:
        env["CHAT4ALL_REDIS_URL"] = redis_url
    # A stack on one machine: webhook receivers on it (a script, a test) are reachable; private networks
    # and metadata addresses stay refused. Set CHAT4ALL_WEBHOOK_ALLOW_LOOPBACK=false to refuse them too.
    env.setdefault("CHAT4ALL_WEBHOOK_ALLOW_LOOPBACK", "true")
    env[METRICS_ENV] = str(metrics_dir(data_dir, settings))
    return env


def metrics_dir(data_dir: Path, settings: Settings) -> Path:
    """The prometheus-client multiprocess directory every runtime of a stack shares: the HTTP API's /metrics
    shows what the workers count. One per data dir and HTTP port; `up` empties it when it starts.
    """
    return data_dir / "metrics" / f"stack-{settings.http_port}"


def reset_metrics_dir(path: Path) -> None:
    """Create ``path`` empty (multiprocess mode needs a clean directory at start)."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)


_LIVE_GAUGE_FILE = re.compile(r"gauge_live[a-z]+_(\d+)\.db")


def forget_dead_processes(path: Path, alive: Callable[[int], bool]) -> list[int]:
    """Drop the ``live*`` gauges of processes that are gone (prometheus-client's ``mark_process_dead``).

    Counters of dead processes stay: what they counted happened.
    """
    from prometheus_client import multiprocess

    pids = {int(m.group(1)) for f in path.glob("gauge_live*.db") if (m := _LIVE_GAUGE_FILE.fullmatch(f.name))}
    gone = sorted(pid for pid in pids if not alive(pid))
    for pid in gone:
        multiprocess.mark_process_dead(pid, str(path))  # type: ignore[no-untyped-call]
    return gone


WORKERS = WORKER_KINDS

HTTP = "http"
SCALABLE_KINDS = (HTTP, *(kind for kind in WORKERS if kind != "telegram-updates"))
"""What `chat4all scale` may change: the API processes (they share one port with SO_REUSEPORT) and every worker
but Telegram's poller (Telegram ends a second ``getUpdates`` with 409)."""
MAX_PROCESSES = {HTTP: 64, **dict.fromkeys(WORKERS, 16)}  # as CHAT4ALL_HTTP_WORKERS / _WORKER_PROCESSES allow
MIN_PROCESSES = {HTTP: 1, **dict.fromkeys(WORKERS, 0)}  # a stack without an HTTP API is no stack


def runtime_name(kind: str, index: int) -> str:
    """``router``, ``router-2``, ...: the first process of a kind has the kind's name."""
    return kind if index == 1 else f"{kind}-{index}"


def runtime_index(name: str, kind: str) -> int | None:
    """Which process of ``kind`` the runtime ``name`` is (1-based), or None when it is not one of that kind."""
    if name == kind:
        return 1
    suffix = name.removeprefix(f"{kind}-")
    if suffix != name and suffix.isdigit() and not suffix.startswith("0") and int(suffix) >= 2:
        return int(suffix)
    return None


def runtime_spec(settings: Settings, env: Mapping[str, str], kind: str, index: int) -> RuntimeSpec:
    """The ``index``-th process of ``kind`` (``http`` or a worker kind): one builder for `up` and `scale` alike."""
    name = runtime_name(kind, index)
    if kind == HTTP:
        http = http_base(settings.host, settings.http_port)
        # The API processes share the port (SO_REUSEPORT); events cross them through Redis.
        return RuntimeSpec(
            name=name,
            argv=(sys.executable, "-m", "entrypoints.http"),
            env=env,
            url=http,
            health_url=f"{http}/health/ready",
        )
    if kind not in WORKERS:
        raise ValueError(f"unknown runtime kind {kind!r}")
    return RuntimeSpec(name=name, argv=(sys.executable, "-m", "entrypoints.workers", kind), env=env)


def runtime_specs(settings: Settings, env: Mapping[str, str]) -> list[RuntimeSpec]:
    """The runtimes of a stack: the HTTP API processes, gRPC, the workers, and the channel sandbox when wanted."""
    sandbox = http_base(settings.host, settings.sandbox_port)
    playing = [
        RuntimeSpec(
            name="sandbox",
            argv=(sys.executable, "-m", "entrypoints.sandbox"),
            env=env,
            url=sandbox,
            health_url=f"{sandbox}/health",
        )
    ]
    return [
        *(playing if sandbox_wanted(settings) else []),
        *(runtime_spec(settings, env, HTTP, i) for i in range(1, settings.http_workers + 1)),
        RuntimeSpec(  # the gRPC API (docs/grpc.md); its readiness is its gRPC health service, not a URL
            name="grpc",
            argv=(sys.executable, "-m", "entrypoints.grpc"),
            env=env,
            url=f"grpc://{http_base(settings.host, settings.grpc_port).removeprefix('http://')}",
        ),
        *(runtime_spec(settings, env, kind, i) for kind in WORKERS for i in range(1, worker_count(settings, kind) + 1)),
    ]


def check_scale(kind: str, count: int) -> None:
    """Refuse a count `chat4all scale` must not apply, with a message that names the problem (ValueError)."""
    if kind == "telegram-updates":
        raise ValueError("telegram-updates cannot be scaled: Telegram refuses a second getUpdates poller")
    if kind not in SCALABLE_KINDS:
        raise ValueError(f"unknown kind {kind!r}; one of {', '.join(SCALABLE_KINDS)}")
    low, high = MIN_PROCESSES[kind], MAX_PROCESSES[kind]
    if not low <= count <= high:
        raise ValueError(f"{kind}={count}: between {low} and {high} processes")


def parse_scale(args: Sequence[str]) -> dict[str, int]:
    """``["router=3", "channels=2"]`` -> ``{"router": 3, "channels": 2}``; ValueError naming the first bad one."""
    if not args:
        raise ValueError("say what to scale: KIND=N, e.g. router=3")
    counts: dict[str, int] = {}
    for arg in args:
        kind, sep, raw = (part.strip() for part in arg.partition("="))
        if not sep or not kind or not raw:
            raise ValueError(f"{arg!r} is not KIND=N (e.g. router=3)")
        try:
            count = int(raw)
        except ValueError:
            raise ValueError(f"{arg!r}: {raw!r} is not a whole number") from None
        if kind in counts:
            raise ValueError(f"{kind} is given twice")
        check_scale(kind, count)
        counts[kind] = count
    return counts


@dataclass(frozen=True)
class ScalePlan:
    """What turns the running runtimes into the wanted counts: ``start`` as (kind, index), ``stop`` as names."""

    start: tuple[tuple[str, int], ...] = ()
    stop: tuple[str, ...] = ()


def plan_scale(current: Iterable[str], wanted: Mapping[str, int]) -> ScalePlan:
    """Pure: the runtimes to start and stop so each kind of ``wanted`` runs ``kind``, ``kind-2`` ... ``kind-N``.

    Kinds not in ``wanted`` are left alone. The highest-numbered processes go first, so the names left are always
    1..N, the ones `up` itself would have started with that count.
    """
    names = list(current)
    start: list[tuple[str, int]] = []
    stop: list[str] = []
    for kind, count in wanted.items():
        running = {i: name for name in names if (i := runtime_index(name, kind)) is not None}
        start.extend((kind, i) for i in range(1, count + 1) if i not in running)
        stop.extend(running[i] for i in sorted(running, reverse=True) if i > count)
    return ScalePlan(tuple(start), tuple(stop))


def kind_counts(names: Iterable[str], kinds: Iterable[str] = SCALABLE_KINDS) -> dict[str, int]:
    """How many runtimes of each of ``kinds`` there are among ``names``."""
    listed = list(names)
    return {kind: sum(runtime_index(name, kind) is not None for name in listed) for kind in kinds}


def worker_count(settings: Settings, kind: str) -> int:
    """How many processes of worker ``kind`` a stack runs (CHAT4ALL_WORKER_PROCESSES; 1 by default).

    The Telegram poller runs when updates are polled for a bot, and never twice.
    """
    if kind == "telegram-updates":
        polling = settings.telegram_updates == "polling" and settings.telegram_bot_token is not None
        return min(settings.worker_processes.get(kind, 1 if polling else 0), 1 if polling else 0)
    return settings.worker_processes.get(kind, 1)


def runtime_ports(settings: Settings) -> dict[str, int]:
    """The ports the runtimes of :func:`runtime_specs` bind, checked before anything starts."""
    ports = {"http": settings.http_port, "grpc": settings.grpc_port}
    if sandbox_wanted(settings):
        ports["sandbox"] = settings.sandbox_port
    return ports
