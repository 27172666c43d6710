"""WebSocket push path: many sockets on one API process, message -> socket latency, a group burst.

Starts its own ``chat4all up`` on a private data dir and free ports (``--http-workers`` API processes,
1 by default, so that every socket lands on one process), then:

1. registers users over HTTP: ``ceil(--sockets / --per-user)`` recipients, ``--senders`` senders (no
   sockets) with one private conversation per recipient, and ``--group`` members of one group;
2. opens ``--sockets`` WebSockets (``--per-user`` per recipient, ``--open-concurrency`` at a time), waits
   for each ``connected`` frame, and reports the API process's RSS before and after (and per socket);
3. steady load: posts ``--rate`` msgs/s to the private conversations for ``--warmup`` + ``--seconds``,
   open loop (message i is due at start + i/rate, on ``--connections`` keep-alive HTTP/1.1 connections,
   whatever happened to the others; a send that could not start within ``--max-lag`` s of its due time
   is skipped and counted). Each ``message.created`` frame is timed when the socket reads it. Latency per
   frame (every socket of a recipient gets its own frame): accepted -> pushed (202 returned -> frame read)
   and sent -> pushed (request started -> frame read), both on this machine's monotonic clock, for the
   messages due in the measured window (a frame read before the 202 shows as a small negative accepted ->
   pushed). Lost: frames of accepted messages that did not arrive within ``--drain`` s after the last send.
   If the API answers slower than ``--connections`` / ``--rate``, sends fall behind and are skipped:
   the accepted rate is then what the stack (or the connection count) sustains, not the offered one;
4. group burst: each of ``--group`` members holds one socket; one member posts ``--burst`` messages as fast
   as the connections go; time from the first send until every other member has every message, and the
   per-frame latencies. The sender's socket gets a ``message.status`` frame per recipient and message
   (DELIVERED, once that recipient's socket took the frame), so it is reported separately.

The first socket is opened alone, the rest ``--open-concurrency`` at a time (``--cold-open``: all at once,
as clients reconnecting after a restart do; it checks that concurrent first subscriptions all get their
frames).

It prints a table, the command line and one JSON line with every figure. The load generator (this
process, one event loop) shares the machine with the stack: its CPU and its event loop's lag are
reported, because a busy client delays when a frame is read and so inflates the latencies.

    python benchmarks/ws_fanout.py                                       # 10k sockets, 1,000 msgs/s, 20 s
    python benchmarks/ws_fanout.py --sockets 1000 --rate 200 --seconds 10
    python benchmarks/ws_fanout.py --http-workers 2 --compression none
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

mono = time.monotonic
CREATED = '{"type":"message.created"'
MID_KEY = '"message_id":"'
PASSWORD = "benchmark-pw"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


# --- the stack -----------------------------------------------------------------------------------


@dataclass
class Stack:
    data: Path
    http_workers: int
    extra_env: dict[str, str]
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    log: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def state(self) -> dict[str, Any]:
        return json.loads((self.data / "stack.json").read_text())

    def start(self) -> None:
        env = {
            **os.environ,
            "CHAT4ALL_DATA_DIR": str(self.data),
            "CHAT4ALL_HTTP_PORT": str(self.port),
            "CHAT4ALL_PG_PORT": str(free_port()),
            "CHAT4ALL_KAFKA_PORT": str(free_port()),
            "CHAT4ALL_GRPC_PORT": str(free_port()),
            "CHAT4ALL_SANDBOX_PORT": str(free_port()),
            "CHAT4ALL_HTTP_WORKERS": str(self.http_workers),
            "CHAT4ALL_ARGON2_PROFILE": "test",
            # A few senders on one address, far faster than people: the limits stay on (their cost is in the
            # figures) but far away, and the loopback platform is not paced (it is not what is measured).
            "CHAT4ALL_RATE_LIMITS": json.dumps(
                {name: {"per_second": 1e6, "burst": 10**6} for name in ("send", "expensive", "anonymous", "login")}
            ),
            "CHAT4ALL_PACING": "false",
            "CHAT4ALL_DB_POOL_MAX": "20",
            "CHAT4ALL_LOG_LEVEL": "warning",
            "CHAT4ALL_SANDBOX": "false",
            **self.extra_env,
        }
        self.log = (self.data / "up.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "entrypoints.cli", "up"],
            env=env,
            start_new_session=True,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = mono() + 120
        while mono() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"chat4all up exited with code {self.proc.returncode}; see {self.data / 'up.log'}")
            try:
                if httpx.get(f"{self.url}/health/ready", timeout=1).status_code == 200 and self._http_listening():
                    return
            except (httpx.HTTPError, OSError, KeyError, ValueError):
                pass
            time.sleep(0.3)
        raise SystemExit("the stack did not become ready in 120 s")

    def _http_listening(self) -> bool:
        """Every API process listens on the shared port (else the first would get every socket)."""
        pids = self.http_pids()
        if len(pids) < self.http_workers:
            return False
        for pid in pids.values():
            try:
                conns = psutil.Process(pid).net_connections(kind="tcp")
            except psutil.Error:
                return False
            if not any(c.status == psutil.CONN_LISTEN and c.laddr.port == self.port for c in conns):
                return False
        return True

    def http_pids(self) -> dict[str, int]:
        """The API processes (runtimes ``http``, ``http-2``, ...) by name."""
        try:
            runtimes = self.state().get("runtimes") or []
        except (OSError, ValueError):
            return {}
        return {
            r["name"]: int(r["pid"])
            for r in runtimes
            if str(r.get("name", "")).split("-")[0] == "http" and r.get("pid")
        }

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if self.log is not None:
            self.log.close()


def rss_of(pid: int) -> int:
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except psutil.Error:
        return 0


def component_of(p: psutil.Process, names: dict[int, str]) -> str:
    if p.pid in names:
        return names[p.pid]
    try:
        name, cmd = p.name(), p.cmdline()
    except psutil.Error:
        return "gone"
    if name.startswith("postgres"):
        return "postgres"
    if "tansu" in name:
        return "kafka"
    if "redis" in name:
        return "redis"
    if "entrypoints.workers" in cmd:
        i = cmd.index("entrypoints.workers")
        return cmd[i + 1] if i + 1 < len(cmd) else "workers"
    for part in ("entrypoints.http", "entrypoints.grpc", "entrypoints.cli"):
        if part in cmd:
            return part.split(".")[1]
    return "other"


def cpu_snapshot(stack: Stack) -> dict[tuple[int, float], tuple[str, float]]:
    """CPU seconds so far of every process of the stack (and of this one), by (pid, create time)."""
    out: dict[tuple[int, float], tuple[str, float]] = {}
    if stack.proc is None:
        return out
    names = {pid: name for name, pid in stack.http_pids().items()}
    try:
        root = psutil.Process(stack.proc.pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return out
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError, psutil.Error):
        pg = stack.state().get("postgres") or {}
        if pg.get("pid"):
            pg_root = psutil.Process(int(pg["pid"]))
            known = {p.pid for p in procs}
            procs += [p for p in [pg_root, *pg_root.children(recursive=True)] if p.pid not in known]
    procs.append(psutil.Process())
    me = os.getpid()
    for p in procs:
        try:
            t = p.cpu_times()
            comp = "bench" if p.pid == me else component_of(p, names)
            out[(p.pid, p.create_time())] = (comp, t.user + t.system)
        except psutil.Error:
            continue
    return out


def cpu_delta(
    before: dict[tuple[int, float], tuple[str, float]], after: dict[tuple[int, float], tuple[str, float]]
) -> dict[str, float]:
    totals: dict[str, float] = {}
    for key, (comp, cpu) in after.items():
        totals[comp] = totals.get(comp, 0.0) + cpu - before.get(key, (comp, 0.0))[1]
    return {k: round(v, 2) for k, v in sorted(totals.items(), key=lambda kv: -kv[1]) if v >= 0.005}


def machine_busy() -> float:
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


_STAMP = re.compile(
    r"\d{4}-\d\d-\d\d[ T](\d\d:\d\d:\d\d)[,.]\d+( UTC)?"
    r"|\d+:[CM] \d\d \w{3} \d{4} (\d\d:\d\d:\d\d)\.\d+"
    r"|^(\d\d:\d\d:\d\d) "
)
_NOISE = ("Memory overcommit must be enabled", "database system is shut down")


def scan_logs(data: Path, limit: int = 10) -> dict[str, Any]:
    """Warnings, errors and tracebacks the stack logged (up.log holds every runtime's output), grouped by
    message with timestamps and numbers blanked, each with how often and when first and last."""
    counts: Counter[str] = Counter()
    seen: dict[str, list[Any]] = {}
    for path in sorted(data.rglob("*.log")):
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            upper = line.upper()
            kind = next(
                (k for k in ("TRACEBACK", "PANIC", "FATAL", "CRITICAL", "ERROR", "WARNING") if k in upper), None
            )
            if kind is None or any(n in line for n in _NOISE):
                continue
            counts[f"{path.name}:{kind.lower()}"] += 1
            m = _STAMP.search(line)
            at = next((g for g in m.groups() if g and ":" in g), "") if m else ""
            key = re.sub(r"\b\d+\b", "N", _STAMP.sub("", line))[:200]
            entry = seen.setdefault(f"{path.name}: {key}", [0, at, at])
            entry[0] += 1
            entry[2] = at
    top = sorted(seen.items(), key=lambda kv: -kv[1][0])[:limit]
    return {"counts": dict(counts), "samples": [f"{n}x ({a}..{b}) {k}" for k, (n, a, b) in top]}


# --- clients -------------------------------------------------------------------------------------


class RawConnection:
    """A lean keep-alive HTTP/1.1 client (httpx costs too much per request on a shared 2-core machine)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes, headers: bytes) -> tuple[int, bytes]:
        request = (
            b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s"
            % (
                path.encode(),
                self.host.encode(),
                len(body),
                headers,
                body,
            )
        )
        reused = self.writer is not None
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(request)
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionResetError):
            if not reused:
                raise
            # the server closed the idle keep-alive connection: once more on a new one (message_id makes it safe)
            self.close()
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            self.writer.write(request)
            head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        payload = await self.reader.readexactly(length)
        if b"connection: close" in head.lower():
            self.close()
        return status, payload

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


@dataclass
class User:
    name: str
    id: str
    token: str

    @property
    def auth(self) -> bytes:
        return f"Authorization: Bearer {self.token}\r\n".encode()


async def register(client: httpx.AsyncClient, names: Sequence[str], concurrency: int) -> list[User]:
    gate = asyncio.Semaphore(concurrency)

    async def one(name: str) -> User:
        async with gate:
            r = await client.post("/v1/users", json={"username": name, "password": PASSWORD})
            r.raise_for_status()
            t = await client.post("/auth/token", json={"username": name, "password": PASSWORD})
            t.raise_for_status()
            return User(name, str(r.json()["user_id"]), str(t.json()["access_token"]))

    return list(await asyncio.gather(*(one(n) for n in names)))


async def conversation(client: httpx.AsyncClient, owner: User, kind: str, members: list[str]) -> str:
    r = await client.post(
        "/v1/conversations",
        json={"type": kind, "members": members},
        headers={"Authorization": f"Bearer {owner.token}"},
    )
    if r.status_code != 201:
        raise SystemExit(f"creating a {kind} conversation: {r.status_code} {r.text[:300]}")
    return str(r.json()["conversation_id"])


class Sockets:
    """Every WebSocket of the run, and the time each ``message.created`` frame was read, by message id."""

    def __init__(self, url: str, compression: str | None) -> None:
        self.ws_url = url.replace("http://", "ws://", 1) + "/v1/ws?token="
        self.compression = compression
        self.conns: list[ClientConnection] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.recv: dict[str, list[float]] = {}
        self.other: Counter[str] = Counter()
        self.instances: Counter[str] = Counter()
        self.open_errors: Counter[str] = Counter()
        self.closed: Counter[str] = Counter()
        self.closed_at: list[tuple[float, str]] = []
        self.closed_users: dict[str, str] = {}
        self.phase = "open"
        self.open_of_user: Counter[str] = Counter()
        self.created: list[int] = []  # message.created frames per socket
        self.socket_of: list[tuple[str, str]] = []  # (user id, instance) per socket
        self.stopping = False

    async def open(self, user: User, gate: asyncio.Semaphore, attempts: int = 3) -> bool:
        for attempt in range(attempts):
            async with gate:
                try:
                    ws = await connect(
                        self.ws_url + user.token,
                        open_timeout=60,
                        ping_interval=None,
                        close_timeout=2,
                        compression=self.compression,
                        user_agent_header=None,
                    )
                except Exception as exc:  # refused, reset, timed out, rejected handshake: counted
                    self.open_errors[type(exc).__name__] += 1
                    await asyncio.sleep(0.2 * (attempt + 1))
                    continue
                try:
                    first = json.loads(await asyncio.wait_for(ws.recv(), 60))
                except ConnectionClosed as exc:
                    code = exc.rcvd.code if exc.rcvd is not None else None
                    self.open_errors[f"closed before connected: {code} {exc.rcvd.reason if exc.rcvd else ''}"] += 1
                    continue
                except (TimeoutError, ValueError) as exc:
                    self.open_errors[f"first frame: {type(exc).__name__}"] += 1
                    with contextlib.suppress(Exception):
                        ws.transport.abort()
                    continue
            if first.get("type") != "connected":
                self.open_errors[f"first frame {first.get('type')}"] += 1
                ws.transport.abort()
                continue
            instance = str(first.get("instance"))
            self.instances[instance] += 1
            self.open_of_user[user.id] += 1
            self.conns.append(ws)
            self.created.append(0)
            self.socket_of.append((user.id, instance))
            self.tasks.append(asyncio.create_task(self._read(ws, user.id, len(self.created) - 1)))
            return True
        return False

    async def _read(self, ws: ClientConnection, user_id: str, index: int) -> None:
        recv = self.recv
        created = self.created
        other = self.other
        clock = mono
        try:
            async for raw in ws:
                t = clock()
                text = raw.decode() if isinstance(raw, bytes) else raw
                if text.startswith(CREATED):
                    i = text.find(MID_KEY, 25)
                    mid = text[i + 14 : i + 50]
                    created[index] += 1
                    got = recv.get(mid)
                    if got is None:
                        recv[mid] = [t]
                    else:
                        got.append(t)
                else:
                    i = text.find('"type":"') + 8
                    other[text[i : text.find('"', i)] if i > 7 else "?"] += 1
        except ConnectionClosed:
            pass
        if not self.stopping:
            rcvd = ws.close_code
            why = f"{rcvd} {ws.close_reason or ''}".strip()
            self.closed[f"{self.phase}: {why}"] += 1
            self.closed_at.append((mono(), why))
            self.closed_users[user_id] = why
            self.open_of_user[user_id] -= 1

    def silent(self, users: set[str], before: list[int]) -> Counter[str]:
        """Open sockets of ``users`` that got no message.created frame since ``before``, by API process."""
        out: Counter[str] = Counter()
        for i, (user_id, instance) in enumerate(self.socket_of):
            quiet = self.created[i] == (before[i] if i < len(before) else 0)
            if quiet and user_id in users and user_id not in self.closed_users:
                out[instance] += 1
        return out

    def abort_all(self) -> None:
        self.stopping = True
        for t in self.tasks:
            t.cancel()
        for ws in self.conns:
            with contextlib.suppress(Exception):
                ws.transport.abort()


class LoopLag:
    """How late this process's event loop wakes up (a busy load generator reads frames late)."""

    def __init__(self, every: float = 0.01) -> None:
        self.every = every
        self.samples: list[tuple[float, float]] = []
        self.task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            t = mono()
            await asyncio.sleep(self.every)
            now = mono()
            self.samples.append((now, now - t - self.every))

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    def between(self, a: float, b: float) -> list[float]:
        return [lag for t, lag in self.samples if a <= t <= b]


# --- figures -------------------------------------------------------------------------------------


def pct(values: Sequence[float], q: float) -> float:
    """The q-th percentile (nearest rank) of sorted ``values``."""
    if not values:
        return float("nan")
    return values[min(len(values) - 1, max(0, math.ceil(q / 100 * len(values)) - 1))]


def dist_ms(values: list[float]) -> dict[str, float | int]:
    v = sorted(x * 1000 for x in values)
    if not v:
        return {"n": 0}
    return {
        "n": len(v),
        "min": round(v[0], 1),
        "p50": round(pct(v, 50), 1),
        "p90": round(pct(v, 90), 1),
        "p99": round(pct(v, 99), 1),
        "max": round(v[-1], 1),
    }


def fmt_dist(d: dict[str, Any]) -> str:
    if not d.get("n"):
        return "n/a"
    return f"p50 {d['p50']:.1f}  p90 {d['p90']:.1f}  p99 {d['p99']:.1f}  max {d['max']:.1f} ms  (n={d['n']})"


def mib(n: float) -> float:
    return round(n / 2**20, 1)


# --- phases --------------------------------------------------------------------------------------


async def send_one(
    conn: RawConnection, conv: str, owner: User, i: int, sent: dict[str, float], accepted: dict[str, float]
) -> tuple[int, str]:
    mid = str(uuid.uuid4())
    body = b'{"conversation_id":"%s","message_id":"%s","payload":{"type":"text","text":"ws fan-out %d"}}' % (
        conv.encode(),
        mid.encode(),
        i,
    )
    sent[mid] = mono()
    try:
        status, _ = await conn.post("/v1/messages", body, owner.auth)
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
        conn.close()
        del sent[mid]
        return -1, mid
    if status == 202:
        accepted[mid] = mono()
    else:
        del sent[mid]
    return status, mid


async def wait_frames(sockets: Sockets, expected: dict[str, int], within: float) -> float:
    """Wait until every message id has its expected number of frames (or ``within`` s); returns when it ended."""
    deadline = mono() + within
    pending = dict(expected)
    while pending and mono() < deadline:
        recv = sockets.recv
        pending = {m: n for m, n in pending.items() if len(recv.get(m, ())) < n}
        if pending:
            await asyncio.sleep(0.1)
    return mono()


def frame_latencies(
    sockets: Sockets, mids: Sequence[str], sent: dict[str, float], accepted: dict[str, float]
) -> tuple[list[float], list[float], int]:
    acc, snt, frames = [], [], 0
    for m in mids:
        got = sockets.recv.get(m)
        if not got:
            continue
        a, s = accepted[m], sent[m]
        for t in got:
            acc.append(t - a)
            snt.append(t - s)
        frames += len(got)
    return acc, snt, frames


async def steady(
    args: argparse.Namespace,
    stack: Stack,
    sockets: Sockets,
    pairs: list[tuple[str, User, User]],
    lag: LoopLag,
) -> dict[str, Any]:
    host, port = "127.0.0.1", stack.port
    rate = args.rate
    total = int(rate * (args.warmup + args.seconds))
    queue: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()
    sent: dict[str, float] = {}
    accepted: dict[str, float] = {}
    due_of: dict[str, float] = {}
    recipient_of: dict[str, str] = {}
    statuses: Counter[int] = Counter()
    skipped = 0
    start = mono() + 0.2
    measure_from = start + args.warmup
    end = start + args.warmup + args.seconds

    async def worker() -> None:
        nonlocal skipped
        conn = RawConnection(host, port)
        while (job := await queue.get()) is not None:
            i, due = job
            if mono() - due > args.max_lag:
                skipped += 1
                continue
            conv, owner, recipient = pairs[i % len(pairs)]
            status, mid = await send_one(conn, conv, owner, i, sent, accepted)
            statuses[status] += 1
            if status == 202:
                due_of[mid] = due
                recipient_of[mid] = recipient.id
        conn.close()

    created_before = list(sockets.created)
    workers = [asyncio.create_task(worker()) for _ in range(args.connections)]
    cpu0, busy0, t0 = cpu_snapshot(stack), machine_busy(), mono()
    for i in range(total):
        due = start + i / rate
        delay = due - mono()
        if delay > 0.001:
            await asyncio.sleep(delay)
        queue.put_nowait((i, due))
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    sending_done = mono()
    cpu1, busy1, t1 = cpu_snapshot(stack), machine_busy(), mono()
    expected = {m: max(0, sockets.open_of_user[recipient_of[m]]) for m in accepted}
    drained = await wait_frames(sockets, expected, args.drain)

    measured = [m for m in accepted if due_of[m] >= measure_from]
    silent = sockets.silent(set(recipient_of.values()), created_before)
    acc, snt, frames = frame_latencies(sockets, measured, sent, accepted)
    exp_frames = sum(expected[m] for m in measured)
    no_frame = sum(1 for m in measured if not sockets.recv.get(m))
    short = sum(1 for m in measured if len(sockets.recv.get(m, ())) < expected[m])
    extra = sum(max(0, len(sockets.recv.get(m, ())) - expected[m]) for m in measured)
    http = [accepted[m] - sent[m] for m in measured]
    complete = [max(sockets.recv[m]) - accepted[m] for m in measured if len(sockets.recv.get(m, ())) >= expected[m]]
    window_lag = sorted(x * 1000 for x in lag.between(measure_from, end))
    cpu = cpu_delta(cpu0, cpu1)
    all_frames = sum(len(sockets.recv.get(m, ())) for m in accepted)
    return {
        "offered_msgs_per_s": rate,
        "offered": total,
        "measured_offered": sum(1 for i in range(total) if start + i / rate >= measure_from),
        "measured_accepted": len(measured),
        "accepted_msgs_per_s": round(len(measured) / args.seconds, 1),
        "accepted_total": len(accepted),
        "skipped_late": skipped,
        "http_status": {str(k): v for k, v in sorted(statuses.items())},
        "send_overrun_s": round(sending_done - end, 2),
        "frames_expected": exp_frames,
        "frames_received": frames,
        "frames_per_s": round(all_frames / max(1e-9, (sending_done - start)), 1),
        "frames_missing": max(0, exp_frames - (frames - extra)),
        "frames_extra": extra,
        "messages_without_frame": no_frame,
        "messages_short": short,
        "silent_sockets_by_instance": dict(silent),
        "drain_s": round(drained - sending_done, 2),
        "accepted_to_pushed_ms": dist_ms(acc),
        "sent_to_pushed_ms": dist_ms(snt),
        "accepted_to_all_sockets_ms": dist_ms(complete),
        "http_accept_ms": dist_ms(http),
        "client_loop_lag_ms": {
            "p50": round(pct(window_lag, 50), 1),
            "p99": round(pct(window_lag, 99), 1),
            "max": round(window_lag[-1], 1) if window_lag else None,
        },
        "cpu_s": cpu,
        "machine_busy": round((busy1 - busy0) / ((t1 - t0) * (psutil.cpu_count() or 1)), 2),
        "other_processes_cpu_s": round(max(0.0, busy1 - busy0 - sum(cpu.values())), 1),
    }


async def burst(
    args: argparse.Namespace, stack: Stack, sockets: Sockets, group: str, members: list[User], lag: LoopLag
) -> dict[str, Any]:
    sender = members[0]
    recipients = members[1:]
    sent: dict[str, float] = {}
    accepted: dict[str, float] = {}
    statuses: Counter[int] = Counter()
    todo = list(range(args.burst))
    conns = [RawConnection("127.0.0.1", stack.port) for _ in range(min(args.connections, args.burst))]
    # warm the connections up, so the burst does not also time TCP handshakes
    for c in conns:
        c.reader, c.writer = await asyncio.open_connection(c.host, c.port)

    async def worker(conn: RawConnection) -> None:
        while todo:
            i = todo.pop()
            statuses[(await send_one(conn, group, sender, i, sent, accepted))[0]] += 1
        conn.close()

    cpu0 = cpu_snapshot(stack)
    other0 = Counter(sockets.other)
    created_before = list(sockets.created)
    t0 = mono()
    await asyncio.gather(*(worker(c) for c in conns))
    sent_all = mono()
    expected_per = sum(1 for u in recipients if sockets.open_of_user[u.id] > 0)
    expected = dict.fromkeys(accepted, expected_per)
    done = await wait_frames(sockets, expected, args.drain)
    cpu1 = cpu_snapshot(stack)
    acc, snt, frames = frame_latencies(sockets, list(accepted), sent, accepted)
    last = max((t for m in accepted for t in sockets.recv.get(m, ())), default=float("nan"))
    complete = frames >= expected_per * len(accepted) and len(accepted) == args.burst
    window_lag = sorted(x * 1000 for x in lag.between(t0, done))
    return {
        "members": len(members),
        "messages": args.burst,
        "accepted": len(accepted),
        "http_status": {str(k): v for k, v in sorted(statuses.items())},
        "send_s": round(sent_all - t0, 3),
        "frames_expected": expected_per * len(accepted),
        "frames_received": frames,
        "all_received": complete,
        "first_send_to_last_frame_s": round(last - t0, 3) if frames else None,
        "accepted_to_pushed_ms": dist_ms(acc),
        "sent_to_pushed_ms": dist_ms(snt),
        "client_loop_lag_ms": {
            "p99": round(pct(window_lag, 99), 1),
            "max": round(window_lag[-1], 1) if window_lag else None,
        },
        "other_frames": dict(Counter(sockets.other) - other0),
        "sender_socket_closed": sockets.closed_users.get(sender.id),
        "silent_sockets_by_instance": dict(sockets.silent({u.id for u in recipients}, created_before)),
        "recipient_sockets_closed": sum(1 for u in recipients if u.id in sockets.closed_users),
        "cpu_s": cpu_delta(cpu0, cpu1),
    }


async def run(args: argparse.Namespace, stack: Stack) -> dict[str, Any]:
    fig: dict[str, Any] = {}
    main_task = asyncio.current_task()
    assert main_task is not None
    # SIGTERM cancels the run (a Python-level handler that raises is unreliable under uvloop)
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    lag = LoopLag()
    lag.start()
    tag = uuid.uuid4().hex[:5]
    n_recipients = math.ceil(args.sockets / args.per_user)
    t = mono()
    limits = httpx.Limits(max_connections=args.setup_concurrency, max_keepalive_connections=args.setup_concurrency)
    async with httpx.AsyncClient(base_url=stack.url, timeout=120, limits=limits) as client:
        users = await register(
            client,
            [f"w{tag}r{i}" for i in range(n_recipients)]
            + [f"w{tag}s{i}" for i in range(args.senders)]
            + [f"w{tag}g{i}" for i in range(args.group)],
            args.setup_concurrency,
        )
        recipients = users[:n_recipients]
        senders = users[n_recipients : n_recipients + args.senders]
        members = users[n_recipients + args.senders :]
        fig["users_per_s"] = round(len(users) / (mono() - t), 1)
        gate = asyncio.Semaphore(args.setup_concurrency)

        async def private(i: int) -> tuple[str, User, User]:
            owner, other = senders[i % len(senders)], recipients[i]
            async with gate:
                return await conversation(client, owner, "private", [other.name]), owner, other

        pairs = list(await asyncio.gather(*(private(i) for i in range(n_recipients))))
        group = await conversation(client, members[0], "group", [m.name for m in members[1:]]) if members else ""
    fig["setup_s"] = round(mono() - t, 1)
    fig["users"] = len(users)
    print(
        f"setup: {len(users)} users, {len(pairs)} private conversations, group of {len(members)} in {fig['setup_s']} s"
    )

    pids = stack.http_pids()
    fig["api_processes"] = pids
    rss0 = {n: rss_of(p) for n, p in pids.items()}
    sockets = Sockets(stack.url, None if args.compression == "none" else "deflate")
    gate = asyncio.Semaphore(args.open_concurrency)
    plan = [recipients[i // args.per_user] for i in range(args.sockets)]
    cpu0 = cpu_snapshot(stack)
    t = mono()
    opened = []
    if not args.cold_open:
        # One socket at a time until every API process holds one: concurrent first subscribes race in an API
        # process's Redis pub/sub connection (redis-py PubSub.connect), and their channels then get nothing.
        while plan and len(sockets.instances) < args.http_workers and len(opened) < 64 * args.http_workers:
            opened.append(await sockets.open(plan[0], gate))
            plan = plan[1:]
    opened += await asyncio.gather(*(sockets.open(u, gate) for u in plan))
    open_s = mono() - t
    cpu1 = cpu_snapshot(stack)
    n_open = sum(opened)
    print(f"opened {n_open}/{args.sockets} sockets in {open_s:.1f} s; errors {dict(sockets.open_errors)}")
    await asyncio.sleep(args.settle)
    rss1 = {n: rss_of(p) for n, p in pids.items()}
    me = psutil.Process()
    fig["sockets"] = {
        "requested": args.sockets,
        "open": n_open,
        "per_user": args.per_user,
        "compression": args.compression,
        "open_s": round(open_s, 1),
        "opened_per_s": round(n_open / open_s, 1) if open_s else None,
        "open_errors": dict(sockets.open_errors),
        "by_instance": dict(sockets.instances),
        "api_rss_before_mib": {n: mib(v) for n, v in rss0.items()},
        "api_rss_after_mib": {n: mib(v) for n, v in rss1.items()},
        "api_rss_per_socket_kib": round((sum(rss1.values()) - sum(rss0.values())) / max(1, n_open) / 1024, 1),
        "client_rss_mib": mib(me.memory_info().rss),
        "cpu_s": cpu_delta(cpu0, cpu1),
    }
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError, psutil.Error):
        fig["sockets"]["redis_rss_mib"] = mib(rss_of(int(stack.state()["redis"]["pid"])))

    # the pipeline is live (workers joined their consumer groups): one message reaches its sockets
    probe_sent: dict[str, float] = {}
    probe_acc: dict[str, float] = {}
    conn = RawConnection("127.0.0.1", stack.port)
    conv, owner, _ = pairs[0]
    t = mono()
    probe_status: Counter[int] = Counter()
    while mono() - t < 90:
        status, mid = await send_one(conn, conv, owner, -1, probe_sent, probe_acc)
        probe_status[status] += 1
        if status == 202:
            await wait_frames(sockets, {mid: 1}, 5)
            if sockets.recv.get(mid):
                break
        await asyncio.sleep(0.5)
    else:
        raise SystemExit(
            f"no message.created frame reached a socket within 90 s (sends: {dict(probe_status)}, "
            f"frames other than message.created: {dict(sockets.other)}, closed: {dict(sockets.closed)})"
        )
    conn.close()
    fig["pipeline_ready_s"] = round(mono() - t, 1)
    await asyncio.sleep(1)

    sockets.phase = "steady"
    print(f"steady: {args.rate:g} msgs/s for {args.warmup:g} + {args.seconds:g} s ...")
    fig["steady"] = await steady(args, stack, sockets, pairs, lag)
    fig["steady"]["api_rss_after_mib"] = {n: mib(rss_of(p)) for n, p in pids.items()}

    if members:
        sockets.phase = "group open"
        gate = asyncio.Semaphore(args.open_concurrency)
        ok = await asyncio.gather(*(sockets.open(u, gate) for u in members))
        # the members' presence frames (each member's arrival goes to the other members) settle first
        settle_until, last = mono() + 15, -1
        while mono() < settle_until and (now := sum(sockets.other.values())) != last:
            last = now
            await asyncio.sleep(1)
        sockets.phase = "burst"
        print(f"burst: {args.burst} messages to a group of {len(members)} ({sum(ok)} sockets) ...")
        fig["burst"] = await burst(args, stack, sockets, group, members, lag)
    fig["sockets"]["closed_by_server"] = dict(sockets.closed)
    fig["sockets"]["other_frames"] = dict(sockets.other)
    fig["sockets"]["api_rss_end_mib"] = {n: mib(rss_of(p)) for n, p in pids.items()}
    fig["sockets"]["client_rss_end_mib"] = mib(me.memory_info().rss)
    sockets.abort_all()
    if lag.task is not None:
        lag.task.cancel()
    return fig


# --- report --------------------------------------------------------------------------------------


def report(args: argparse.Namespace, fig: dict[str, Any]) -> None:
    s, st, b = fig.get("sockets", {}), fig.get("steady", {}), fig.get("burst", {})
    rows: list[tuple[str, str]] = []
    if s:
        api_after = sum(s["api_rss_after_mib"].values())
        biggest = max(s["api_rss_after_mib"].values(), default=0.0)
        rows += [
            ("sockets open", f"{s['open']} / {s['requested']} ({s['per_user']} per user), {s['opened_per_s']}/s"),
            ("  by API process", ", ".join(f"{k}: {v}" for k, v in s["by_instance"].items())),
            (
                "API RSS",
                f"{sum(s['api_rss_before_mib'].values()):.1f} -> {api_after:.1f} MiB with sockets "
                f"({s['api_rss_per_socket_kib']} KiB/socket); end {sum(s['api_rss_end_mib'].values()):.1f} MiB",
            ),
            (
                "  target",
                f"10k sockets on one API process under 1024 MiB: largest process {biggest:.1f} MiB with "
                f"{max(s['by_instance'].values(), default=0)} sockets"
                + (" -- met" if biggest < 1024 and max(s["by_instance"].values(), default=0) >= 10_000 else ""),
            ),
            ("client RSS", f"{s['client_rss_mib']} MiB; redis {s.get('redis_rss_mib', '?')} MiB"),
            ("closed by server", str(s.get("closed_by_server") or "none")),
        ]
    if st:
        rows += [
            (
                "steady send",
                f"offered {st['offered_msgs_per_s']:g}/s, accepted {st['accepted_msgs_per_s']}/s "
                f"({st['measured_accepted']}/{st['measured_offered']} in the window), skipped late "
                f"{st['skipped_late']}, http {st['http_status']}",
            ),
            ("  accept (HTTP)", fmt_dist(st["http_accept_ms"])),
            ("  accepted->pushed", fmt_dist(st["accepted_to_pushed_ms"])),
            ("  sent->pushed", fmt_dist(st["sent_to_pushed_ms"])),
            ("  ->all sockets", fmt_dist(st["accepted_to_all_sockets_ms"])),
            (
                "  frames",
                f"{st['frames_received']}/{st['frames_expected']} ({st['frames_per_s']}/s), missing "
                f"{st['frames_missing']}, extra {st['frames_extra']}, messages without a frame "
                f"{st['messages_without_frame']}, open sockets that got none "
                f"{st['silent_sockets_by_instance'] or 0}",
            ),
            (
                "  target",
                "p99 accepted->pushed < 100 ms at 1,000 msgs/s: "
                + (
                    f"not tested (offered {st['offered_msgs_per_s']:g} msgs/s)"
                    if st["offered_msgs_per_s"] < 1000
                    else "met"
                    if st["accepted_to_pushed_ms"].get("p99", 1e9) < 100 and st["accepted_msgs_per_s"] >= 990
                    else "NOT met"
                ),
            ),
            ("  client loop lag", str(st["client_loop_lag_ms"])),
            (
                "  CPU s",
                f"{st['cpu_s']} (machine {st['machine_busy'] * 100:.0f}% busy; processes outside the stack "
                f"and this one: {st['other_processes_cpu_s']} s)",
            ),
        ]
    if b:
        rows += [
            (
                "group burst",
                f"{b['accepted']}/{b['messages']} messages to {b['members']} members sent in {b['send_s']} s; "
                f"every member had every message after {b['first_send_to_last_frame_s']} s"
                + ("" if b["all_received"] else f" -- INCOMPLETE {b['frames_received']}/{b['frames_expected']}"),
            ),
            ("  accepted->pushed", fmt_dist(b["accepted_to_pushed_ms"])),
            ("  sent->pushed", fmt_dist(b["sent_to_pushed_ms"])),
            (
                "  other frames",
                f"{b['other_frames']}; sender's socket closed: {b['sender_socket_closed'] or 'no'}; "
                f"recipients' sockets closed: {b['recipient_sockets_closed']}; "
                f"silent: {b['silent_sockets_by_instance'] or 0}",
            ),
        ]
    logs = fig.get("stack_log", {})
    if logs.get("counts"):
        rows.append(("stack log", str(logs["counts"])))
        rows += [("", line) for line in logs["samples"]]
    width = max(len(k) for k, _ in rows) if rows else 0
    print()
    print(f"$ {fig['command']}")
    print(
        f"(load generator shares the machine's {psutil.cpu_count()} cores with the stack; "
        "latencies are read on this process's monotonic clock)"
    )
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    print(json.dumps(fig, separators=(",", ":")))


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def raise_nofile(wanted: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, wanted)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sockets", type=int, default=10_000, help="WebSockets held open during the steady load")
    p.add_argument("--per-user", type=int, default=10, help="sockets per recipient user (each gets every frame)")
    p.add_argument("--rate", type=float, default=1000.0, help="offered msgs/s of the steady load (open loop)")
    p.add_argument("--seconds", type=float, default=20.0, help="measured window of the steady load")
    p.add_argument("--warmup", type=float, default=3.0, help="steady load before the measured window")
    p.add_argument("--senders", type=int, default=16, help="sending users (no sockets)")
    p.add_argument("--connections", type=int, default=64, help="keep-alive HTTP connections that send")
    p.add_argument("--max-lag", type=float, default=2.0, help="skip a send that cannot start this late (s)")
    p.add_argument("--group", type=int, default=100, help="members of the burst's group (0: no burst)")
    p.add_argument("--burst", type=int, default=100, help="messages one member sends to the group at once")
    p.add_argument("--drain", type=float, default=10.0, help="how long to wait for the last frames (s)")
    p.add_argument("--http-workers", type=int, default=1, help="API processes (CHAT4ALL_HTTP_WORKERS)")
    p.add_argument("--compression", choices=("deflate", "none"), default="deflate", help="offer permessage-deflate")
    p.add_argument("--open-concurrency", type=int, default=200, help="sockets being opened at once")
    p.add_argument("--setup-concurrency", type=int, default=32, help="concurrent setup requests")
    p.add_argument(
        "--cold-open",
        action="store_true",
        help="open every socket concurrently from the start (by default the first is opened alone; see run())",
    )
    p.add_argument("--settle", type=float, default=2.0, help="pause after opening before measuring RSS (s)")
    p.add_argument("--stack-env", action="append", default=[], metavar="KEY=VALUE", help="extra env for `up`")
    p.add_argument("--keep-data", action="store_true", help="keep the stack's data dir (logs) afterwards")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args()
    if args.per_user < 1 or args.sockets < 1:
        p.error("--sockets and --per-user must be positive")
    raised_max = any(e.startswith("CHAT4ALL_GROUP_MAX=") for e in args.stack_env)
    if args.group in (1, 2) or (args.group > 100 and not raised_max):
        p.error("--group: 0 (no burst) or 3..100 (more with --stack-env CHAT4ALL_GROUP_MAX=N)")

    nofile = raise_nofile(args.sockets + args.group + args.connections + 1024)
    if nofile < args.sockets + args.group + args.connections + 256:
        print(f"warning: RLIMIT_NOFILE is {nofile}: too few descriptors for {args.sockets} sockets", file=sys.stderr)

    def on_term(*_: object) -> None:
        raise KeyboardInterrupt  # stop where it is, then clean up (below)

    signal.signal(signal.SIGTERM, on_term)
    stack = Stack(
        data=Path(tempfile.mkdtemp(prefix="c4a-wsfan-")),
        http_workers=args.http_workers,
        extra_env=dict(kv.split("=", 1) for kv in args.stack_env),
    )
    fig: dict[str, Any] = {
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "nofile": nofile,
        "cpus": psutil.cpu_count(),
    }
    ok = False
    try:
        print(f"starting chat4all up in {stack.data} (http workers {args.http_workers}, port {stack.port}) ...")
        t = mono()
        stack.start()
        print(f"stack ready in {mono() - t:.1f} s")
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            fig.update(runner.run(run(args, stack)))
        ok = True
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted", file=sys.stderr)
    finally:
        # a second Ctrl-C or SIGTERM must not cut the stack's shutdown short (it has its own time limits)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stack.stop()
        fig["stack_log"] = scan_logs(stack.data)
        if args.keep_data:
            print(f"data dir kept: {stack.data}")
        else:
            shutil.rmtree(stack.data, ignore_errors=True)
    if ok:
        report(args, fig)
        if args.json:
            args.json.write_text(json.dumps(fig, indent=2) + "\n")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
