"""The runtimes `chat4all up` runs, their environment, and the secrets it keeps for them."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import socket
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from entrypoints.settings import WORKER_KINDS, Settings
from entrypoints.stack.supervisor import RuntimeSpec

JWT_SECRET_FILE = Path("secrets") / "jwt_secret"
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
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
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
    jwt_secret: str,
    data_dir: Path,
) -> dict[str, str]:
    """Our environment plus what the runtimes must agree on."""
    env = dict(base)
    env.update(
        CHAT4ALL_DATABASE_URL=database_url,
        CHAT4ALL_KAFKA_BOOTSTRAP=kafka_bootstrap,
        CHAT4ALL_JWT_SECRET=jwt_secret,
        CHAT4ALL_DATA_DIR=str(data_dir),
        CHAT4ALL_HOST=settings.host,
        CHAT4ALL_HTTP_PORT=str(settings.http_port),
        CHAT4ALL_GRPC_PORT=str(settings.grpc_port),
        CHAT4ALL_SANDBOX_PORT=str(settings.sandbox_port),
        PYTHONUNBUFFERED="1",
    )
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


def runtime_specs(settings: Settings, env: Mapping[str, str]) -> list[RuntimeSpec]:
    """The runtimes of a stack. gRPC and the channel sandbox join here as they are written."""
    http = http_base(settings.host, settings.http_port)
    return [
        RuntimeSpec(
            name="http",
            argv=(sys.executable, "-m", "entrypoints.http"),
            env=env,
            url=http,
            health_url=f"{http}/health/ready",
        ),
        *(
            RuntimeSpec(
                name=kind if i == 1 else f"{kind}-{i}",
                argv=(sys.executable, "-m", "entrypoints.workers", kind),
                env=env,
            )
            for kind in WORKERS
            for i in range(1, worker_count(settings, kind) + 1)
        ),
    ]


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
    return {"http": settings.http_port}
