"""Event pipeline throughput and latency: accepted -> DELIVERED, end to end.

Each of ``--conversations`` private conversations has a recipient with a linked telegram
identity, so every message gets an ``internal`` delivery and a ``telegram`` one. The telegram
delivery travels the whole pipeline: outbox (the job, queued with the message, ADR 004) -> relay ->
chat.outbound.telegram -> channel worker (loopback connector) -> chat.receipts -> status worker.
With ``--fetch-interval`` the recipients also fetch their history, which makes the internal
deliveries DELIVERED.

Messages are accepted through the application's send use case in-process (``--via bus``, the
default: ``MessageBus`` over ``PostgresUnitOfWork``, wired by ``entrypoints.container`` exactly as
the HTTP runtime wires it), because HTTP acceptance alone tops out well below the pipeline's
target on two cores; ``--via http`` posts to ``/v1/messages`` instead. Users, identities and
conversations are created over HTTP. ``--rate`` paces the senders open-loop (message i is due
at start + i/rate, whatever happened to the others), so a slow pipeline shows as latency, not
as a lower offered load.

Per telegram delivery the benchmark reads from PostgreSQL afterwards (no column records when a
transaction committed, so a watcher process polls ``max(outbox.id)`` every ``--poll-ms`` and
notes when each id became visible; every transaction of the path commits an outbox row):

- accepted: when the accepting transaction committed (its ``message.created`` outbox row became
  visible); the client's clock when the send returned is reported too;
- DELIVERED: when the status worker's transaction that made the delivery DELIVERED committed
  (its ``message.status`` outbox row became visible). Primary figure: DELIVERED - accepted;
- for comparison: ``outbox.created_at`` of that ``message.status`` row (``DEFAULT now()``, the
  server's clock at the start of the status worker's transaction) and the ``at`` of the DELIVERED
  history entry (the loopback connector's clock when it accepted the send; ``deliveries.updated_at``
  is the same value, so neither says when the database recorded it);
- stages: relay published (``outbox.published_at`` of ``message.created``), handed to the platform
  (the history entry's ``at``), ledger (``channel_sends.sent_at``), DELIVERED committed;
- batch sizes of the relay, channel and status workers (rows of one transaction share a timestamp),
  CPU per message by component (psutil over the stack's processes), and PostgreSQL's commits, WAL
  records, bytes and fsyncs per message.

It checks that every accepted message's telegram delivery is DELIVERED and that the loopback log
(``<data dir>/loopback-sends.jsonl``) has exactly one send per delivery.

    python benchmarks/pipeline.py                      # starts its own `chat4all up` on free ports
    python benchmarks/pipeline.py --workers 2 --rate 1000
    python benchmarks/pipeline.py --url http://127.0.0.1:8000 --database-url postgresql://... \\
        --data-dir .chat4all                           # against a running stack
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import itertools
import json
import math
import multiprocessing
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from accept import RawConnection  # the lean keep-alive HTTP/1.1 client

from entrypoints.stack.postgres import free_port

WORKER_KINDS = ("relay", "router", "channels", "status")
PLATFORM = "telegram"


# --- the stack -----------------------------------------------------------------------------------


@dataclass
class StackSpec:
    """Where an own stack lives, so that it can be started again on the same data and ports."""

    data: Path
    http_workers: int
    partitions: int | None
    extra_env: dict[str, str]
    port: int = field(default_factory=free_port)
    pg_port: int = field(default_factory=free_port)
    kafka_port: int = field(default_factory=free_port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start_stack(spec: StackSpec, processes: dict[str, int]) -> tuple[subprocess.Popen[bytes], str]:
    """`chat4all up` with ``processes`` per worker kind; returns it and its database URL once ready."""
    env = {
        **os.environ,
        "CHAT4ALL_DATA_DIR": str(spec.data),
        "CHAT4ALL_HTTP_PORT": str(spec.port),
        "CHAT4ALL_PG_PORT": str(spec.pg_port),
        "CHAT4ALL_KAFKA_PORT": str(spec.kafka_port),
        "CHAT4ALL_HTTP_WORKERS": str(spec.http_workers),
        "CHAT4ALL_ARGON2_PROFILE": "test",
        # A few senders on one address, far faster than people: the limits stay on (their cost is in the
        # figures) but far away, and the loopback platform is not paced (it is not what is measured).
        "CHAT4ALL_RATE_LIMITS": json.dumps(
            {name: {"per_second": 1e6, "burst": 10**6} for name in ("send", "expensive", "anonymous", "login")}
        ),
        "CHAT4ALL_PACING": "false",
        "CHAT4ALL_DB_POOL_MAX": "20",
        "CHAT4ALL_LOG_LEVEL": "warning",
        "CHAT4ALL_WORKER_PROCESSES": json.dumps(processes),
        "CHAT4ALL_SANDBOX": "false",  # the loopback platform: measure Chat4All, not a stand-in for the platforms
    }
    if spec.partitions is not None:
        env["CHAT4ALL_KAFKA_PARTITIONS"] = str(spec.partitions)
    env.update(spec.extra_env)
    proc = subprocess.Popen([sys.executable, "-m", "entrypoints.cli", "up"], env=env, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"chat4all up exited with code {proc.returncode}")
        try:
            if httpx.get(f"{spec.url}/health/ready", timeout=1).status_code == 200:
                stack = json.loads((spec.data / "stack.json").read_text())
                return proc, stack["postgres"]["url"]
        except (httpx.HTTPError, OSError, KeyError, ValueError):
            pass
        time.sleep(0.3)
    stop_stack(proc)
    raise SystemExit("the stack did not become ready")


def stop_stack(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def wait_for_workers(root: psutil.Process | None, workers: int, timeout: float = 60) -> None:
    """Wait until every worker process runs (their consumer groups join in the warm-up)."""
    if root is None:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kinds = Counter(component_of(p) for p in root.children())
        if all(kinds[k] >= workers for k in WORKER_KINDS):
            return
        time.sleep(0.3)


# --- setup (over HTTP) ---------------------------------------------------------------------------


@dataclass
class Conversation:
    id: str
    recipient_id: str
    recipient_headers: dict[str, str]


@dataclass
class Setup:
    sender_id: str
    sender_headers: dict[str, str]
    conversations: list[Conversation]


async def _user(client: httpx.AsyncClient, name: str) -> tuple[str, dict[str, str]]:
    r = await client.post("/v1/users", json={"username": name, "password": "benchmark-pw"})
    r.raise_for_status()
    t = await client.post("/auth/token", json={"username": name, "password": "benchmark-pw"})
    t.raise_for_status()
    return str(r.json()["user_id"]), {"Authorization": f"Bearer {t.json()['access_token']}"}


async def setup(client: httpx.AsyncClient, conversations: int) -> Setup:
    run = uuid.uuid4().hex[:6]
    sender_id, sender_headers = await _user(client, f"p{run}s")
    gate = asyncio.Semaphore(8)

    async def one(i: int) -> Conversation:
        async with gate:
            name = f"p{run}r{i}"
            rid, headers = await _user(client, name)
            linked = await client.post(
                "/v1/users/me/identities",
                json={"channel": PLATFORM, "external_id": str(10**9 + uuid.uuid4().int % 10**9)},
                headers=headers,
            )
            linked.raise_for_status()
            conv = await client.post(
                "/v1/conversations", json={"type": "private", "members": [name]}, headers=sender_headers
            )
            conv.raise_for_status()
            return Conversation(str(conv.json()["conversation_id"]), rid, headers)

    convs = await asyncio.gather(*(one(i) for i in range(conversations)))
    return Setup(sender_id, sender_headers, list(convs))


# --- load ----------------------------------------------------------------------------------------


class WallClock:
    """Wall-clock seconds (comparable with PostgreSQL's timestamps) that never go backwards."""

    def __init__(self) -> None:
        self.wall0 = time.time()
        self.perf0 = time.perf_counter()

    def __call__(self) -> float:
        return self.wall0 + (time.perf_counter() - self.perf0)


@dataclass
class Load:
    start: float
    measure_from: float
    stop: float
    sent: list[tuple[str, float, float]] = field(default_factory=list)  # (message_id, due, accepted)
    errors: Counter[str] = field(default_factory=Counter)
    ended: float = 0.0


Send = Callable[[int, Conversation, str, int], Awaitable[None]]


async def drive(
    send: Send, convs: Sequence[Conversation], concurrency: int, rate: float | None, seconds: float, warmup: float
) -> Load:
    clock = WallClock()
    start = clock()
    load = Load(start=start, measure_from=start + warmup, stop=start + warmup + seconds)
    counter = itertools.count()

    async def sender(n: int) -> None:
        k = 0
        while True:
            i = next(counter)
            if rate:
                due = start + i / rate
                if due >= load.stop or clock() >= load.stop:
                    return  # messages still due when the time is up are not sent (counted as not offered)
                delay = due - clock()
                if delay > 0:
                    await asyncio.sleep(delay)
            else:
                due = clock()
                if due >= load.stop:
                    return
            conv = convs[(n + k * concurrency) % len(convs)]
            k += 1
            mid = str(uuid.uuid4())
            try:
                await send(n, conv, mid, i)
            except Exception as exc:
                cause = f" ({type(exc.__cause__).__name__}: {str(exc.__cause__)[:700]})" if exc.__cause__ else ""
                load.errors[type(exc).__name__ + ": " + str(exc)[:80] + cause] += 1
                continue
            load.sent.append((mid, due, clock()))

    await asyncio.gather(*(sender(n) for n in range(concurrency)))
    load.ended = clock()
    return load


def bus_sender(bus: Any, sender_id: str) -> Send:
    from application.commands import SendMessage
    from domain.ids import ConversationId, MessageId, UserId

    sender = UserId(uuid.UUID(sender_id))

    async def send(_n: int, conv: Conversation, mid: str, i: int) -> None:
        await bus.handle(
            SendMessage(
                sender=sender,
                conversation_id=ConversationId(uuid.UUID(conv.id)),
                payload={"type": "text", "text": f"pipeline {i}"},
                message_id=MessageId(uuid.UUID(mid)),
            )
        )

    return send


def http_sender(url: str, headers: dict[str, str], concurrency: int) -> tuple[Send, Callable[[], None]]:
    host, port = url.removeprefix("http://").split(":")
    auth = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    conns = [RawConnection(host, int(port)) for _ in range(concurrency)]

    async def send(n: int, conv: Conversation, mid: str, i: int) -> None:
        body = json.dumps(
            {"conversation_id": conv.id, "message_id": mid, "payload": {"type": "text", "text": f"pipeline {i}"}}
        ).encode()
        try:
            status, reply = await conns[n].post("/v1/messages", body, auth)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            conns[n].close()
            raise
        if status != 202:
            raise RuntimeError(f"HTTP {status}: {reply[:60]!r}")

    def close() -> None:
        for c in conns:
            c.close()

    return send, close


async def fetch_loop(
    fetch: Callable[[Conversation, int], Awaitable[int]],
    convs: Sequence[Conversation],
    interval: float,
    done: asyncio.Event,
) -> None:
    """Each recipient fetches what is new in its conversation every ``interval`` (internal deliveries)."""
    last = dict.fromkeys((c.id for c in convs), 0)

    async def one(conv: Conversation, offset: float) -> None:
        await asyncio.sleep(offset)
        while not done.is_set():
            with contextlib.suppress(Exception):
                last[conv.id] = await fetch(conv, last[conv.id])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), interval)

    await asyncio.gather(*(one(c, interval * i / len(convs)) for i, c in enumerate(convs)))


def bus_fetcher(bus: Any) -> Callable[[Conversation, int], Awaitable[int]]:
    from application.commands import GetHistory
    from domain.ids import ConversationId, UserId

    async def fetch(conv: Conversation, after: int) -> int:
        while True:
            page = await bus.handle(
                GetHistory(UserId(uuid.UUID(conv.recipient_id)), ConversationId(uuid.UUID(conv.id)), 200, after)
            )
            if not page.items:
                return after
            after = page.items[-1].seq
            if page.next_cursor is None:
                return after

    return fetch


def http_fetcher(client: httpx.AsyncClient) -> Callable[[Conversation, int], Awaitable[int]]:
    async def fetch(conv: Conversation, after: int) -> int:
        while True:
            r = await client.get(
                f"/v1/conversations/{conv.id}/messages",
                params={"after_seq": after, "limit": 200},
                headers=conv.recipient_headers,
            )
            items = r.json()["items"]
            if not items:
                return after
            after = items[-1]["seq"]
            if r.json().get("next_cursor") is None:
                return after

    return fetch


# --- when did PostgreSQL record it ---------------------------------------------------------------


def _watch(database_url: str, interval: float, stop: Any, out: Any) -> None:
    samples: list[tuple[float, int]] = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        while not stop.is_set():
            row = conn.execute("select coalesce(max(id), 0) from outbox").fetchone()
            now = time.time()
            if row is not None and (not samples or row[0] > samples[-1][1]):
                samples.append((now, int(row[0])))
            time.sleep(interval)
    out.send(samples)


class CommitWatcher:
    """A process polling ``max(outbox.id)``, noting when each value first became visible (committed).

    Outbox rows are inserted in the round trip that commits their transaction, so a row's id
    becomes visible within a few ms of its allocation; the first poll that sees ``max(id) >= X``
    is when row X's transaction committed, to within the poll interval (another transaction's
    higher id may commit a moment earlier). A process of its own, so that it neither competes for
    the bench's GIL nor counts in the bench's CPU.
    """

    def __init__(self, database_url: str, interval: float) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._stop = ctx.Event()
        self._recv, send = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(target=_watch, args=(database_url, interval, self._stop, send), daemon=True)
        self.samples: list[tuple[float, int]] = []  # (first seen, max committed id), ids increasing
        self._ids: list[int] = []

    def start(self) -> None:
        self._proc.start()

    def cpu(self) -> float:
        """CPU seconds the watcher has used so far."""
        try:
            t = psutil.Process(self._proc.pid).cpu_times()
        except psutil.Error:
            return 0.0
        return float(t.user + t.system)

    def stop(self) -> None:
        self._stop.set()
        self.samples = self._recv.recv()
        self._proc.join(10)
        self._ids = [s[1] for s in self.samples]

    def committed_at(self, outbox_id: int) -> float | None:
        i = bisect.bisect_left(self._ids, outbox_id)
        return self.samples[i][0] if i < len(self.samples) else None


def outbox_high_water(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("select coalesce(max(id), 0) from outbox").fetchone()
    return int(row[0]) if row else 0


def db_stats(database_url: str) -> dict[str, float]:
    """Cumulative server counters: commits, WAL records and bytes, WAL fsyncs (PostgreSQL 16+: pg_stat_io)."""
    out: dict[str, float] = {}
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "select xact_commit, xact_rollback from pg_stat_database where datname = current_database()"
        ).fetchone()
        if row:
            out["commits"], out["rollbacks"] = float(row[0]), float(row[1])
        with contextlib.suppress(psycopg.Error):
            row = conn.execute("select wal_records, wal_bytes from pg_stat_wal").fetchone()
            if row:
                out["wal_records"], out["wal_bytes"] = float(row[0]), float(row[1])
        with contextlib.suppress(psycopg.Error):
            row = conn.execute("select sum(fsyncs) from pg_stat_io where object = 'wal'").fetchone()
            if row and row[0] is not None:
                out["wal_fsyncs"] = float(row[0])
    return out


def delivered_count(database_url: str, conv_ids: list[str]) -> dict[str, int]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "select channel, count(*) from deliveries where conversation_id = any(%s::uuid[])"
            " and status = 'DELIVERED' group by channel",
            (conv_ids,),
        ).fetchall()
    return {str(c): int(n) for c, n in rows}


@dataclass
class Timeline:
    """Per delivery (message id, channel): when each stage happened (epoch seconds)."""

    status: dict[tuple[str, str], str]
    status_tx: dict[tuple[str, str], float]  # status worker's transaction start (outbox.created_at)
    status_id: dict[tuple[str, str], int]  # its outbox row id
    platform: dict[tuple[str, str], float]  # DELIVERED history entry's at (the loopback's clock)
    relayed: dict[str, float]  # message.created outbox row published_at (the relay's clock)
    accepted_id: dict[str, int]  # message.created outbox row id (it commits with the message)
    ledger: dict[str, float]  # channel_sends.sent_at (the channel worker's clock)
    batches: dict[str, list[int]] = field(default_factory=dict)  # events per transaction, by worker


def read_timeline(database_url: str, ids: list[str], outbox_from: int) -> Timeline:
    def ts(v: datetime) -> float:
        return v.timestamp()

    with psycopg.connect(database_url) as conn:
        status = {
            (str(m), str(c)): str(s)
            for m, c, s in conn.execute(
                "select message_id, channel, status from deliveries where message_id = any(%s::uuid[])", (ids,)
            ).fetchall()
        }
        status_tx: dict[tuple[str, str], float] = {}
        status_id: dict[tuple[str, str], int] = {}
        for oid, m, c, at in conn.execute(
            "select id, payload->>'message_id', payload->>'channel', created_at from outbox"
            " where id > %s and topic = 'chat.status' and payload->>'status' = 'DELIVERED' order by id",
            (outbox_from,),
        ).fetchall():
            key = (str(m), str(c))
            if key not in status_tx:
                status_tx[key] = ts(at)
                status_id[key] = int(oid)
        platform = {
            (str(m), str(c)): ts(at)
            for m, c, at in conn.execute(
                "select message_id, channel, min(at) from delivery_events where message_id = any(%s::uuid[])"
                " and status = 'DELIVERED' group by message_id, channel",
                (ids,),
            ).fetchall()
        }
        relayed: dict[str, float] = {}
        accepted_id: dict[str, int] = {}
        for oid, m, pub in conn.execute(
            "select id, payload->>'message_id', published_at from outbox where id > %s and topic = 'chat.messages'",
            (outbox_from,),
        ).fetchall():
            accepted_id[str(m)] = int(oid)
            if pub is not None:
                relayed[str(m)] = ts(pub)
        ledger = {
            str(m): ts(at)
            for m, at in conn.execute(
                "select message_id, sent_at from channel_sends"
                " where message_id = any(%s::uuid[]) and channel = %s and sent_at is not null",
                (ids, PLATFORM),
            ).fetchall()
        }
        # Batch sizes, from timestamps every row of one transaction shares: the relay marks a batch
        # published at once, the channel worker records a batch's hand-overs at once, and the status
        # worker's outbox rows share its transaction's now().
        batches = {
            "relay": [
                int(n)
                for (n,) in conn.execute(
                    "select count(*) from outbox where id > %s and published_at is not null group by published_at",
                    (outbox_from,),
                ).fetchall()
            ],
            "channel": [
                int(n)
                for (n,) in conn.execute(
                    "select count(*) from channel_sends where message_id = any(%s::uuid[]) group by sent_at", (ids,)
                ).fetchall()
            ],
            "status": [
                int(n)
                for (n,) in conn.execute(
                    "select count(*) from outbox where id > %s and topic = 'chat.status'"
                    " and payload->>'channel' <> 'internal' group by created_at",
                    (outbox_from,),
                ).fetchall()
            ],
        }
    return Timeline(status, status_tx, status_id, platform, relayed, accepted_id, ledger, batches)


def loopback_sends(data_dir: Path, ids: set[str]) -> Counter[tuple[str, str, str]]:
    path = data_dir / "loopback-sends.jsonl"
    counts: Counter[tuple[str, str, str]] = Counter()
    if not path.exists():
        return counts
    with path.open() as f:
        for line in f:
            if not line.strip():
                continue
            s = json.loads(line)
            if s["message_id"] in ids:
                counts[(s["message_id"], s["recipient"], s["channel"])] += 1
    return counts


# --- CPU by component ----------------------------------------------------------------------------


def component_of(p: psutil.Process) -> str:
    try:
        name, cmd = p.name(), p.cmdline()
    except psutil.Error:
        return "gone"
    if name.startswith("postgres"):
        return "postgres"
    if "tansu" in name or any("tansu" in c for c in cmd[:1]):
        return "kafka"
    if "entrypoints.workers" in cmd:
        i = cmd.index("entrypoints.workers")
        return cmd[i + 1] if i + 1 < len(cmd) else "workers"
    if "entrypoints.http" in cmd:
        return "http"
    return "other"


def cpu_snapshot(root: psutil.Process | None) -> dict[tuple[int, float], tuple[str, float]]:
    """CPU seconds so far of every process of the stack, by (pid, create time), with its component."""
    out: dict[tuple[int, float], tuple[str, float]] = {}
    if root is None:
        return out
    try:
        top = [(root, "supervisor")] + [(c, component_of(c)) for c in root.children()]
    except psutil.Error:
        return out
    for proc, comp in top:
        try:
            procs = [proc] if comp == "supervisor" else [proc, *proc.children(recursive=True)]
        except psutil.Error:
            continue
        for p in procs:
            try:
                t = p.cpu_times()
                out[(p.pid, p.create_time())] = (comp, t.user + t.system)
            except psutil.Error:
                continue
    return out


def _machine_busy() -> float:
    """CPU seconds the whole machine has been busy (all cores)."""
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


def cpu_delta(
    before: dict[tuple[int, float], tuple[str, float]], after: dict[tuple[int, float], tuple[str, float]]
) -> dict[str, float]:
    totals: dict[str, float] = {}
    for key, (comp, cpu) in after.items():
        totals[comp] = totals.get(comp, 0.0) + cpu - before.get(key, (comp, 0.0))[1]
    return totals


# --- report --------------------------------------------------------------------------------------


def pct(values: Sequence[float], q: float) -> float:
    """The q-th percentile (nearest rank) of ``values`` (sorted)."""
    if not values:
        return float("nan")
    return values[min(len(values) - 1, max(0, math.ceil(q / 100 * len(values)) - 1))]


def dist(values: list[float]) -> str:
    v = sorted(x * 1000 for x in values)
    if not v:
        return "n/a"
    return f"p50 {pct(v, 50):7.1f}  p95 {pct(v, 95):7.1f}  p99 {pct(v, 99):7.1f}  max {v[-1]:7.1f} ms  (n={len(v)})"


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed (uvicorn picks it for the HTTP runtime too), else asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="a running stack's HTTP API (else one is started)")
    p.add_argument("--database-url")
    p.add_argument("--data-dir", type=Path, help="the running stack's data dir (loopback log, stack.json for CPU)")
    p.add_argument("--workers", type=int, default=1, help="processes of each worker kind when starting a stack")
    p.add_argument("--partitions", type=int, help="CHAT4ALL_KAFKA_PARTITIONS when starting a stack")
    p.add_argument("--stack-env", action="append", default=[], metavar="KEY=VALUE", help="extra env for `up`")
    p.add_argument("--via", choices=("bus", "http"), default="bus", help="how messages are accepted")
    p.add_argument("--rate", type=float, help="offered msgs/s, open loop (default: as fast as the senders go)")
    p.add_argument("--concurrency", type=int, default=32, help="concurrent senders")
    p.add_argument("--conversations", type=int, default=64)
    p.add_argument("--seconds", type=float, default=20.0, help="measured window")
    p.add_argument("--warmup", type=float, default=5.0)
    p.add_argument("--drain-timeout", type=float, default=60.0, help="how long to wait for the last deliveries")
    p.add_argument("--fetch-interval", type=float, default=0.0, help="recipients fetch history this often (0: never)")
    p.add_argument("--poll-ms", type=float, default=10.0, help="commit watcher's poll interval")
    p.add_argument("--json", type=Path, help="also write the figures here")
    p.add_argument(
        "--backlog",
        action="store_true",
        help="the pipeline alone: accept with the relay off, then restart the stack and time the drain",
    )
    args = p.parse_args()

    proc = None
    data_dir: Path | None = args.data_dir
    spec: StackSpec | None = None
    result: dict[str, Any] = {}
    if args.url is None:
        spec = StackSpec(
            data=Path(tempfile.mkdtemp(prefix="c4a-pipe-")),
            http_workers=2 if args.via == "http" else 1,
            partitions=args.partitions,
            extra_env=dict(kv.split("=", 1) for kv in args.stack_env),
        )
        data_dir = spec.data
    elif args.backlog:
        raise SystemExit("--backlog restarts the stack: it needs a stack of its own (no --url)")
    try:
        if spec is not None and args.backlog:
            result = run_backlog(args, spec)
        else:
            if spec is not None:
                proc, database_url = start_stack(spec, dict.fromkeys(WORKER_KINDS, args.workers))
                url = spec.url
                stack_root: psutil.Process | None = psutil.Process(proc.pid)
            else:
                url, database_url = args.url, args.database_url
                if database_url is None:
                    raise SystemExit("--database-url is needed with --url")
                stack_root = None
                if data_dir is not None:
                    with contextlib.suppress(OSError, ValueError, KeyError, psutil.Error):
                        state = json.loads((data_dir / "stack.json").read_text())
                        stack_root = psutil.Process(state["supervisor_pid"])
            wait_for_workers(stack_root, args.workers if proc is not None else 1)
            with asyncio.Runner(loop_factory=_loop_factory()) as runner:
                result = runner.run(run(args, url, database_url, data_dir, stack_root))
    finally:
        if proc is not None:
            stop_stack(proc)
        if spec is not None:
            shutil.rmtree(spec.data, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    sys.exit(0 if result.get("ok") else 1)


async def acceptor(
    args: argparse.Namespace, url: str, database_url: str, client: httpx.AsyncClient, s: Setup
) -> tuple[Send, Callable[[Conversation, int], Awaitable[int]], Callable[[], None], Any]:
    """How messages are accepted (``--via``): the send, the history fetch, a closer and the container (bus)."""
    if args.via == "http":
        send, close_http = http_sender(url, s.sender_headers, args.concurrency)
        return send, http_fetcher(client), close_http, None
    from pydantic import SecretStr

    from entrypoints.container import container_for, resolve
    from entrypoints.settings import Settings

    settings = Settings(
        database_url=database_url,
        jwt_secret=SecretStr(secrets.token_urlsafe(48)),  # signs nothing here: the bus only accepts messages
        argon2_profile="test",
        db_pool_min=min(args.concurrency, 10),
        db_pool_max=args.concurrency + 4,
        rate_limiting=False,  # this bus has no Redis: the limits would be this process's, not the stack's
    )
    container = container_for(settings)
    await resolve(container.init_resources)
    bus = await resolve(container.bus)
    return bus_sender(bus, s.sender_id), bus_fetcher(bus), lambda: None, container


async def run(
    args: argparse.Namespace, url: str, database_url: str, data_dir: Path | None, stack_root: psutil.Process | None
) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        s = await setup(client, args.conversations)
        conv_ids = [c.id for c in s.conversations]
        send, fetch, close_http, container = await acceptor(args, url, database_url, client, s)

        outbox_from = outbox_high_water(database_url)
        watcher = CommitWatcher(database_url, args.poll_ms / 1000)
        watcher.start()
        # A few messages first, so the consumer groups have joined and the connections are warm.
        await drive(send, s.conversations, min(args.concurrency, 4), None, 1.0, 0.0)
        fetch_done = asyncio.Event()
        fetchers = (
            asyncio.create_task(fetch_loop(fetch, s.conversations, args.fetch_interval, fetch_done))
            if args.fetch_interval > 0
            else None
        )
        me = psutil.Process()
        db0 = db_stats(database_url)
        cpu0, me0, sys0, w0 = cpu_snapshot(stack_root), sum(me.cpu_times()[:2]), _machine_busy(), watcher.cpu()
        wall0 = time.time()
        load = await drive(send, s.conversations, args.concurrency, args.rate, args.seconds, args.warmup)
        close_http()
        cpu_load, me_load, sys_load = cpu_snapshot(stack_root), sum(me.cpu_times()[:2]), _machine_busy()
        w_load = watcher.cpu()
        wall_load = time.time()

        # Drain: wait for every telegram delivery (and, when fetching, every internal one).
        want_channels = [PLATFORM, "internal"] if fetchers else [PLATFORM]
        drain_deadline = time.monotonic() + args.drain_timeout
        with psycopg.connect(database_url) as conn:  # every accepted message, the warm-up's included
            ids_all = [
                str(r[0])
                for r in conn.execute(
                    "select id from messages where conversation_id = any(%s::uuid[])", (conv_ids,)
                ).fetchall()
            ]
        accepted_total = len(ids_all)
        while time.monotonic() < drain_deadline:
            counts = delivered_count(database_url, conv_ids)
            if all(counts.get(ch, 0) >= accepted_total for ch in want_channels):
                break
            await asyncio.sleep(0.25)
        drained = time.time()
        cpu1, me1 = cpu_snapshot(stack_root), sum(me.cpu_times()[:2])
        await asyncio.sleep(1.0)  # backends flush their statistics when idle, at most once a second
        db1 = db_stats(database_url)
        fetch_done.set()
        if fetchers is not None:
            await fetchers
        if container is not None:
            from entrypoints.container import resolve

            await resolve(container.shutdown_resources)
        await asyncio.sleep(2 * args.poll_ms / 1000)
        watcher_cpu = watcher.cpu()
        watcher.stop()

    # --- figures -------------------------------------------------------------------------------
    tl = read_timeline(database_url, ids_all, outbox_from)
    # accepted: when the accepting transaction committed, as the watcher saw it (its message.created
    # outbox row commits with it); the client's clock when the send returned is later by however long
    # the busy event loop took to resume the sender.
    returned_at = {m: acc for m, _, acc in load.sent}
    accepted_at = {
        m: c if (oid := tl.accepted_id.get(m)) is not None and (c := watcher.committed_at(oid)) is not None else acc
        for m, acc in returned_at.items()
    }
    window = [(m, due, acc) for m, due, acc in load.sent if load.measure_from <= accepted_at[m] < load.stop]
    in_window = {m for m, _, _ in window}
    delivered = {m for m in ids_all if tl.status.get((m, PLATFORM)) == "DELIVERED"}
    missing = [m for m in ids_all if m not in delivered]
    span = load.stop - load.measure_from

    def committed(m: str, ch: str = PLATFORM) -> float | None:
        oid = tl.status_id.get((m, ch))
        return watcher.committed_at(oid) if oid is not None else None

    lat_commit = [c - accepted_at[m] for m in in_window if (c := committed(m)) is not None]
    lat_returned = [c - returned_at[m] for m in in_window if (c := committed(m)) is not None]
    lat_tx = [tl.status_tx[(m, PLATFORM)] - accepted_at[m] for m in in_window if (m, PLATFORM) in tl.status_tx]
    lat_platform = [tl.platform[(m, PLATFORM)] - accepted_at[m] for m in in_window if (m, PLATFORM) in tl.platform]
    st_relay = [tl.relayed[m] - accepted_at[m] for m in in_window if m in tl.relayed]
    st_route_send = [
        tl.platform[(m, PLATFORM)] - tl.relayed[m]
        for m in in_window
        if m in tl.relayed and (m, PLATFORM) in tl.platform
    ]
    st_ledger = [
        tl.ledger[m] - tl.platform[(m, PLATFORM)] for m in in_window if m in tl.ledger and (m, PLATFORM) in tl.platform
    ]
    st_status = [c - tl.ledger[m] for m in in_window if m in tl.ledger and (c := committed(m)) is not None]
    lag = [acc - due for _, due, acc in window] if args.rate else []
    commit_times = [c for m in ids_all if (c := committed(m)) is not None]
    delivered_in_window = sum(1 for c in commit_times if load.measure_from <= c < load.stop)
    last_delivered = max(commit_times, default=float("nan"))
    lat_internal = [c - accepted_at[m] for m in in_window if (c := committed(m, "internal")) is not None]

    sends = loopback_sends(data_dir, set(ids_all)) if data_dir is not None else None
    if sends is not None:
        telegram_sends = {k: n for k, n in sends.items() if k[2] == PLATFORM}
        twice = sum(1 for n in telegram_sends.values() if n > 1)
        unsent = len(ids_all) - len(telegram_sends)
        sends_ok = twice == 0 and unsent == 0
    else:
        twice = unsent = -1
        sends_ok = True

    print(
        f"via={args.via} workers={args.workers if args.url is None else 'of the running stack'} "
        f"rate={'max' if not args.rate else f'{args.rate:,.0f}/s'} concurrency={args.concurrency} "
        f"conversations={args.conversations} measured={span:.0f}s (after {args.warmup:.0f}s warm-up)"
    )
    print(
        f"accepted:  {len(window):,} in the window ({len(window) / span:,.0f} msgs/s); "
        f"{accepted_total:,} in total (incl. warm-up); errors: {sum(load.errors.values())}"
    )
    for err, n in load.errors.most_common(3):
        print(f"  {n} x {err}")
    print(
        f"delivered: {len(delivered):,} of {accepted_total:,} telegram deliveries DELIVERED "
        f"(missing {len(missing)}); {delivered_in_window / span:,.0f} msgs/s committed DELIVERED in the window; "
        f"last one {last_delivered - load.ended:.2f}s after the load stopped"
    )
    if args.rate:
        offered, total_s = int(args.rate * (args.warmup + args.seconds)), args.warmup + args.seconds
        print(f"offered: {offered:,} due in {total_s:.0f}s; {len(load.sent):,} sent before the time was up")
    if lag:
        print(f"offered -> accepted (acceptance lag under --rate):      {dist(lag)}")
    print(f"accepted -> DELIVERED, both commits (primary, watcher): {dist(lat_commit)}")
    print(f"send returned (client) -> DELIVERED committed:         {dist(lat_returned)}")
    print(f"accepted -> status tx start (outbox.created_at, server): {dist(lat_tx)}")
    print(f"accepted -> platform accepted (history entry 'at'):     {dist(lat_platform)}")
    print("stages:")
    print(f"  accepted -> relay published (outbox.published_at):    {dist(st_relay)}")
    print(f"  relay published -> loopback send (channel hop):      {dist(st_route_send)}")
    print(f"  loopback send -> ledger (channel_sends.sent_at):      {dist(st_ledger)}")
    print(f"  ledger -> DELIVERED committed (receipt + status):     {dist(st_status)}")
    if args.fetch_interval > 0:
        print(f"internal: accepted -> DELIVERED committed (fetch every {args.fetch_interval}s): {dist(lat_internal)}")
    if sends is not None:
        print(
            f"loopback log: {sum(telegram_sends.values()):,} telegram sends for {len(ids_all):,} deliveries; "
            f"sent twice: {twice}; never sent: {unsent}"
        )
    cpu: dict[str, float] = {}
    result_extra: dict[str, float] = {}
    if cpu1 and accepted_total:
        load_part = cpu_delta(cpu0, cpu_load)
        whole = cpu_delta(cpu0, cpu1)
        n = len(load.sent)
        cpu = {k: v / n * 1000 for k, v in sorted(whole.items(), key=lambda kv: -kv[1]) if v > 0}
        cpu["bench"] = (me1 - me0) / n * 1000
        total = sum(cpu.values())
        parts = ", ".join(f"{k} {v:.2f}" for k, v in cpu.items())
        print(f"cpu per message, ms (load + drain; bench = load generator + in-process acceptance): {parts}")
        print(f"  (not counted: the commit watcher, {(watcher_cpu - w0) / n * 1000:.2f} ms)")
        print(f"cpu per message, total: {total:.2f} ms")
        cores = psutil.cpu_count() or 1
        ours = (sum(load_part.values()) + (me_load - me0) + (w_load - w0)) / (wall_load - wall0) / cores
        machine = (sys_load - sys0) / (wall_load - wall0) / cores
        print(
            f"busy during the load: stack + bench {ours * 100:.0f} % of {cores} cores, other processes "
            f"{max(0.0, machine - ours) * 100:.0f} %; drain took {drained - wall_load:.1f}s"
        )
        result_extra["busy_ours"], result_extra["busy_others"] = ours, max(0.0, machine - ours)
    n_sent = max(1, len(load.sent))
    per_msg = {k: (db1[k] - db0[k]) / n_sent for k in db1 if k in db0}
    if per_msg:
        print(
            "postgres per message: "
            + ", ".join(f"{k.replace('_', ' ')} {v:,.2f}" for k, v in per_msg.items() if k != "rollbacks")
        )
    for worker, sizes in tl.batches.items():
        if sizes:
            events = sum(sizes)
            print(
                f"{worker} batches: {len(sizes):,} transactions for {events:,} events "
                f"(mean {events / len(sizes):.1f}, an event's batch: mean {sum(b * b for b in sizes) / events:.1f}, "
                f"max {max(sizes)})"
            )
    for m in missing[:5]:
        sent_to_platform = sends is not None and any(k[0] == m and k[2] == PLATFORM for k in sends)
        print(
            f"  missing {m}: status {tl.status.get((m, PLATFORM))}, ledger {'yes' if m in tl.ledger else 'no'}, "
            f"loopback {'sent' if sent_to_platform else 'not sent'}, accepted "
            f"{accepted_at.get(m, float('nan')) - load.ended:+.2f}s from the end of the load"
        )
    ok = not missing and sends_ok and not load.errors
    print("check:", "every message DELIVERED on telegram, sent to the platform exactly once" if ok else "FAILED")

    def summary(values: list[float]) -> dict[str, float]:
        v = sorted(x * 1000 for x in values)
        return {
            "n": len(v),
            **({q: pct(v, int(q[1:])) for q in ("p50", "p95", "p99")} if v else {}),
            "max": v[-1] if v else 0,
        }

    return {
        "ok": ok,
        "args": {k: str(v) for k, v in vars(args).items()},
        "accepted_window": len(window),
        "accepted_per_s": len(window) / span,
        "accepted_total": accepted_total,
        "delivered": len(delivered),
        "missing": len(missing),
        "delivered_per_s_window": delivered_in_window / span,
        "drain_after_stop_s": last_delivered - load.ended,
        "latency_committed_ms": summary(lat_commit),
        "latency_returned_ms": summary(lat_returned),
        "latency_status_tx_ms": summary(lat_tx),
        "latency_platform_ms": summary(lat_platform),
        "acceptance_lag_ms": summary(lag),
        "stages_ms": {
            "relay": summary(st_relay),
            "router_channel": summary(st_route_send),
            "ledger": summary(st_ledger),
            "status": summary(st_status),
        },
        "internal_ms": summary(lat_internal),
        "loopback_twice": twice,
        "loopback_unsent": unsent,
        "cpu_ms_per_msg": cpu,
        "postgres_per_msg": per_msg,
        "batches": {w: {"transactions": len(b), "events": sum(b)} for w, b in tl.batches.items()},
        "sent": len(load.sent),
        "errors": dict(load.errors),
        **result_extra,
    }


def run_backlog(args: argparse.Namespace, spec: StackSpec) -> dict[str, Any]:
    """The pipeline alone, with full batches: accept a backlog while the relay is off, then start the
    stack again with its relays (same database; the in-memory broker starts empty) and time how fast
    the pipeline makes the backlog DELIVERED, with its CPU per message."""
    from entrypoints.container import resolve

    async def accept_backlog(url: str, database_url: str) -> tuple[Setup, Load]:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            s = await setup(client, args.conversations)
            send, _, close, container = await acceptor(args, url, database_url, client, s)
            load = await drive(send, s.conversations, args.concurrency, args.rate, args.seconds, 0.0)
            close()
            if container is not None:
                await resolve(container.shutdown_resources)
        return s, load

    proc, database_url = start_stack(spec, {**dict.fromkeys(WORKER_KINDS, args.workers), "relay": 0})
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            s, load = runner.run(accept_backlog(spec.url, database_url))
    finally:
        stop_stack(proc)
    conv_ids = [c.id for c in s.conversations]
    backlog = len(load.sent)
    print(
        f"backlog: {backlog:,} messages accepted in {load.ended - load.start:.0f}s "
        f"({backlog / (load.ended - load.start):,.0f} msgs/s, the relay off); restarting the stack with its relays"
    )

    def progress(conn: psycopg.Connection[Any]) -> tuple[int, int]:
        """Deliveries not DELIVERED yet, and conversations the router has started on."""
        row = conn.execute(
            "select (select count(*) from deliveries where conversation_id = any(%(c)s::uuid[]) and channel = %(ch)s"
            " and status <> 'DELIVERED'),"
            " (select count(*) from routing_progress where conversation_id = any(%(c)s::uuid[]) and routed_seq > 0)",
            {"c": conv_ids, "ch": PLATFORM},
        ).fetchone()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    proc, database_url = start_stack(spec, dict.fromkeys(WORKER_KINDS, args.workers))
    try:
        root = psutil.Process(proc.pid)
        ready, cpu0 = time.time(), cpu_snapshot(root)
        started: float | None = None  # when the router (its consumer group joined) routed its first batch
        db0 = db_stats(database_url)
        with psycopg.connect(database_url, autocommit=True) as conn:
            left, routed = progress(conn)
            while left and time.time() < ready + args.drain_timeout:
                time.sleep(0.05)
                left, routed = progress(conn)
                if started is None and routed:
                    started = time.time()
            end, cpu1 = time.time(), cpu_snapshot(root)
            ids = [
                str(r[0])
                for r in conn.execute(
                    "select id from messages where conversation_id = any(%s::uuid[])", (conv_ids,)
                ).fetchall()
            ]
        time.sleep(1.0)  # backends flush their statistics when idle, at most once a second
        db1 = db_stats(database_url)
    finally:
        stop_stack(proc)
    sends = loopback_sends(spec.data, set(ids))
    ok = left == 0 and all(n == 1 for n in sends.values()) and len(sends) == backlog
    result: dict[str, Any] = {"ok": ok, "backlog": backlog, "left": left}
    if started is not None:
        drained = backlog - left
        rate = drained / (end - started)
        cpu = {k: v / drained * 1000 for k, v in cpu_delta(cpu0, cpu1).items() if v > 0}
        busy = sum(cpu_delta(cpu0, cpu1).values()) / (end - ready) / (psutil.cpu_count() or 1)
        print(
            f"drain: the router started {started - ready:.1f}s after the stack was ready (consumer groups joining); "
            f"then {drained:,} DELIVERED in {end - started:.1f}s = {rate:,.0f} msgs/s; left undelivered: {left}"
        )
        print(
            "cpu per message, ms (from readiness): "
            + ", ".join(f"{k} {v:.2f}" for k, v in sorted(cpu.items(), key=lambda kv: -kv[1]))
            + f"; total {sum(cpu.values()):.2f}; busy {busy * 100:.0f} % of {psutil.cpu_count()} cores"
        )
        per_msg = {k: (db1[k] - db0[k]) / backlog for k in db1 if k in db0 and k != "rollbacks"}
        print("postgres per message: " + ", ".join(f"{k.replace('_', ' ')} {v:,.2f}" for k, v in per_msg.items()))
        result.update(drain_per_s=rate, cpu_ms_per_msg=cpu, busy=busy, postgres_per_msg=per_msg)
    twice = sum(1 for n in sends.values() if n > 1)
    print(f"loopback log: {sum(sends.values()):,} sends for {backlog:,} deliveries; sent twice: {twice}")
    print("check:", "the backlog DELIVERED, each sent to the platform once" if ok else "FAILED")
    return result


if __name__ == "__main__":
    main()
