"""Sustained concurrent POST /v1/messages against a running stack.

Prints accepted msgs/s and p50/p99 latency, then checks in PostgreSQL that every accepted
message is stored exactly once and that each conversation's seq is gap-free.

    python benchmarks/accept.py                       # starts its own `chat4all up` on free ports
    python benchmarks/accept.py --url http://127.0.0.1:8000 --database-url postgresql://...
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import psutil
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from entrypoints.stack.postgres import free_port


def start_stack(workers: int) -> tuple[subprocess.Popen[bytes], str, str, Path]:
    data = Path(tempfile.mkdtemp(prefix="c4a-bench-"))
    port = free_port()
    env = {
        **os.environ,
        "CHAT4ALL_DATA_DIR": str(data),
        "CHAT4ALL_HTTP_PORT": str(port),
        "CHAT4ALL_PG_PORT": str(free_port()),
        "CHAT4ALL_HTTP_WORKERS": str(workers),
        "CHAT4ALL_ARGON2_PROFILE": "test",
        # A few senders on one address, far faster than people: the limits stay on (their cost is in the
        # figures) but far away, and the loopback platform is not paced (it is not what is measured).
        "CHAT4ALL_RATE_LIMITS": json.dumps(
            {name: {"per_second": 1e6, "burst": 10**6} for name in ("send", "expensive", "anonymous", "login")}
        ),
        "CHAT4ALL_PACING": "false",
        "CHAT4ALL_DB_POOL_MAX": "20",
        "CHAT4ALL_LOG_LEVEL": "warning",
        "CHAT4ALL_SANDBOX": "false",  # the loopback platform: measure Chat4All, not a stand-in for the platforms
    }
    proc = subprocess.Popen([sys.executable, "-m", "entrypoints.cli", "up"], env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health/ready", timeout=1).status_code == 200:
                stack = json.loads((data / "stack.json").read_text())
                return proc, url, stack["postgres"]["url"], data
        except (httpx.HTTPError, OSError, KeyError, ValueError):
            pass
        time.sleep(0.3)
    proc.terminate()
    raise SystemExit("the stack did not become ready")


async def setup(client: httpx.AsyncClient, pairs: int) -> list[tuple[dict[str, str], str]]:
    run = uuid.uuid4().hex[:6]
    senders: list[tuple[dict[str, str], str]] = []
    for i in range(pairs):
        names = [f"b{run}a{i}", f"b{run}b{i}"]
        tokens = []
        for n in names:
            r = await client.post("/v1/users", json={"username": n, "password": "benchmark-pw"})
            r.raise_for_status()
            t = await client.post("/auth/token", json={"username": n, "password": "benchmark-pw"})
            tokens.append({"Authorization": f"Bearer {t.json()['access_token']}"})
        conv = await client.post(
            "/v1/conversations", json={"type": "private", "members": [names[1]]}, headers=tokens[0]
        )
        conv.raise_for_status()
        senders.append((tokens[0], conv.json()["conversation_id"]))
    return senders


class RawConnection:
    """A lean keep-alive HTTP/1.1 client: the load generator shares the 2 cores with the server,
    so it must cost far less per request than httpx does."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes, headers: str) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{headers}\r\n".encode()
            + body
        )
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


async def load(
    url: str, senders: list[tuple[dict[str, str], str]], concurrency: int, seconds: float, warmup: float
) -> tuple[list[float], list[str], int]:
    host, port = url.removeprefix("http://").split(":")
    latencies: list[float] = []
    accepted: list[str] = []
    errors = 0
    start = time.perf_counter()
    measure_from = start + warmup
    stop = measure_from + seconds

    async def worker(n: int) -> None:
        nonlocal errors
        headers, conv = senders[n % len(senders)]
        auth = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        conn = RawConnection(host, int(port))
        i = 0
        while (now := time.perf_counter()) < stop:
            mid = str(uuid.uuid4())
            body = json.dumps(
                {"conversation_id": conv, "message_id": mid, "payload": {"type": "text", "text": f"load {n}-{i}"}}
            ).encode()
            t0 = time.perf_counter()
            try:
                status, _ = await conn.post("/v1/messages", body, auth)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                conn.close()
                errors += 1
                continue
            t1 = time.perf_counter()
            i += 1
            if status != 202:
                errors += 1
                continue
            accepted.append(mid)
            if now >= measure_from:
                latencies.append(t1 - t0)
        conn.close()

    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    return latencies, accepted, errors


def _tree_cpu(root: psutil.Process) -> dict[str, float]:
    """CPU seconds used so far by each kind of process under ``root``."""
    totals: dict[str, float] = {"http": 0.0, "postgres": 0.0}
    for p in [root, *root.children(recursive=True)]:
        try:
            t = p.cpu_times()
            name = "postgres" if p.name() == "postgres" else "http" if p.pid != root.pid else ""
        except psutil.Error:
            continue
        if name:
            totals[name] += t.user + t.system
    return totals


def verify(database_url: str, accepted: list[str]) -> tuple[int, int, int]:
    with psycopg.connect(database_url) as conn:
        found = conn.execute(
            "select count(*), count(distinct id) from messages where id = any(%s::uuid[])", (accepted,)
        ).fetchone()
        gaps = conn.execute(
            "select count(*) from (select conversation_id, max(seq) - count(*) as gap from messages"
            " group by conversation_id) g where gap <> 0"
        ).fetchone()
    if found is None or gaps is None:
        raise SystemExit("verification query returned nothing")
    return int(found[0]), int(found[1]), int(gaps[0])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url")
    p.add_argument("--database-url")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--conversations", type=int, default=64)
    p.add_argument("--workers", type=int, default=2, help="HTTP worker processes when starting a stack")
    args = p.parse_args()

    proc = None
    data = None
    if args.url is None:
        proc, url, database_url, data = start_stack(args.workers)
    else:
        url, database_url = args.url, args.database_url
        if database_url is None:
            raise SystemExit("--database-url is needed with --url")
    try:

        async def run() -> tuple[list[float], list[str], int]:
            async with httpx.AsyncClient(base_url=url, timeout=30) as c:
                senders = await setup(c, args.conversations)
            return await load(url, senders, args.concurrency, args.seconds, args.warmup)

        stack_root = psutil.Process(proc.pid) if proc is not None else None
        me = psutil.Process()
        cpu_before = _tree_cpu(stack_root) if stack_root is not None else {}
        client_before = sum(me.cpu_times()[:2])
        latencies, accepted, errors = asyncio.run(run())
        cpu_after = _tree_cpu(stack_root) if stack_root is not None else {}
        client_cpu = sum(me.cpu_times()[:2]) - client_before
        stored, distinct, gappy = verify(database_url, accepted)
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    lat = sorted(latencies)
    rate = len(lat) / args.seconds
    print(
        f"concurrency={args.concurrency} conversations={args.conversations} measured={args.seconds:.0f}s "
        f"(after {args.warmup:.0f}s warm-up)"
    )
    print(f"accepted: {len(lat)} in the window ({rate:,.0f} msgs/s); {len(accepted)} in total; errors: {errors}")
    if lat:
        q = statistics.quantiles(lat, n=100)
        print(f"latency: p50 {q[49] * 1000:.1f} ms  p99 {q[98] * 1000:.1f} ms  max {lat[-1] * 1000:.1f} ms")
    print(
        f"database: {stored} rows for {len(accepted)} accepted ids ({distinct} distinct); "
        f"conversations with seq gaps: {gappy}"
    )
    if cpu_after and accepted:
        per = {k: (cpu_after[k] - cpu_before[k]) / len(accepted) * 1000 for k in cpu_after}
        print(
            f"cpu per accepted message (setup included): http workers {per['http']:.2f} ms, "
            f"postgres {per['postgres']:.2f} ms, load generator {client_cpu / len(accepted) * 1000:.2f} ms"
        )
    ok = stored == distinct == len(accepted) and gappy == 0 and errors == 0
    print("check:", "every accepted message stored exactly once" if ok else "FAILED")
    if data is not None:
        import shutil

        shutil.rmtree(data, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
