"""gRPC SendMessage rate and latency, beside a bare grpclib echo measured in the same run.

Starts its own `chat4all up` (embedded PostgreSQL, the gRPC runtime on a free port) and, in a
process of its own, a bare echo server: the same generated ``chat4all.v1.Chat4All`` messages on
grpclib and uvloop, whose ``SendMessage`` answers an acceptance made up from the request and
whose ``SendMessages`` does the same per message, with no use case, token check or database.
Both are driven with the same channels, concurrency and requests (``authorization`` metadata
included), one after the other, in ``--rounds`` interleaved rounds (medians compared):

- unary: ``--concurrency`` calls in flight over ``--channels`` connections;
- stream: ``SendMessages`` (the batching stream), one per connection, ``--window`` sends in flight each.

It prints each rate (msgs/s) with p50/p99 latency (a stream's: from a request's send to its
result), SendMessage against the echo (the target: at least half the echo rate), and checks in
PostgreSQL that every accepted message is stored exactly once.

    python benchmarks/grpc_send.py                     # starts everything it needs on free ports
    python benchmarks/grpc_send.py --rounds 3 --seconds 10 --concurrency 64 --channels 4 --window 64
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psutil
import psycopg
from grpclib.client import Channel
from grpclib.exceptions import GRPCError
from grpclib.health.v1.health_grpc import HealthStub
from grpclib.health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from entrypoints.grpc._generated.chat4all import v1 as pb
from entrypoints.stack.postgres import free_port

# --- the echo server ---------------------------------------------------------------------------


class Echo(pb.Chat4AllBase):
    """The bare cost of a call: grpclib, HTTP/2 and the generated messages, both ways."""

    async def send_message(self, message: pb.SendMessageRequest) -> pb.SendMessageResponse:
        return _echoed(message)

    async def send_messages(
        self, messages: AsyncIterator[pb.SendMessageRequest]
    ) -> AsyncIterator[pb.SendMessageResult]:
        index = 0
        async for message in messages:
            yield pb.SendMessageResult(index=index, accepted=_echoed(message))
            index += 1


def _echoed(r: pb.SendMessageRequest) -> pb.SendMessageResponse:
    return pb.SendMessageResponse(
        status="accepted",
        message_id=r.message_id,
        conversation_id=r.conversation_id,
        seq=1,
        created_at=datetime.now(UTC),
    )


def serve_echo(port: int) -> None:
    import uvloop
    from grpclib.server import Server

    async def main() -> None:
        server = Server([Echo()])
        await server.start("127.0.0.1", port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        server.close()
        await server.wait_closed()

    uvloop.run(main())


# --- the stack ---------------------------------------------------------------------------------


@dataclass
class Stack:
    proc: subprocess.Popen[bytes]
    url: str
    grpc_port: int
    database_url: str
    data: Path


async def _serving(port: int) -> bool:
    channel = Channel("127.0.0.1", port)
    try:
        reply = await HealthStub(channel).Check(HealthCheckRequest(service=""), timeout=2)
        return reply is not None and reply.status == HealthCheckResponse.SERVING
    except (OSError, GRPCError, TimeoutError):
        return False
    finally:
        channel.close()


def start_stack() -> Stack:
    data = Path(tempfile.mkdtemp(prefix="c4a-bench-grpc-"))
    port, grpc_port = free_port(), free_port()
    env = {
        **os.environ,
        "CHAT4ALL_DATA_DIR": str(data),
        "CHAT4ALL_HTTP_PORT": str(port),
        "CHAT4ALL_GRPC_PORT": str(grpc_port),
        "CHAT4ALL_PG_PORT": str(free_port()),
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
            if httpx.get(f"{url}/health/ready", timeout=1).status_code == 200 and asyncio.run(_serving(grpc_port)):
                stack = json.loads((data / "stack.json").read_text())
                return Stack(proc, url, grpc_port, stack["postgres"]["url"], data)
        except (httpx.HTTPError, OSError, KeyError, ValueError):
            pass
        time.sleep(0.3)
    proc.terminate()
    raise SystemExit("the stack did not become ready")


async def setup(url: str, pairs: int) -> list[tuple[str, str]]:
    """``pairs`` private conversations: (the sender's token, the conversation id) for each."""
    run = uuid.uuid4().hex[:6]
    senders = []
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        for i in range(pairs):
            names = [f"g{run}a{i}", f"g{run}b{i}"]
            tokens = []
            for n in names:
                (await client.post("/v1/users", json={"username": n, "password": "benchmark-pw"})).raise_for_status()
                t = await client.post("/auth/token", json={"username": n, "password": "benchmark-pw"})
                tokens.append(t.json()["access_token"])
            conv = await client.post(
                "/v1/conversations",
                json={"type": "private", "members": [names[1]]},
                headers={"Authorization": f"Bearer {tokens[0]}"},
            )
            conv.raise_for_status()
            senders.append((tokens[0], conv.json()["conversation_id"]))
    return senders


# --- the load ----------------------------------------------------------------------------------


@dataclass
class Run:
    name: str
    seconds: float
    latencies: list[float] = field(default_factory=list)
    accepted: list[str] = field(default_factory=list)
    errors: int = 0
    cpu: dict[str, float] = field(default_factory=dict)
    """CPU seconds each kind of process used during the run (warm-up included)."""

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds

    def line(self) -> str:
        lat = sorted(self.latencies)
        if len(lat) < 2:
            return f"{self.name:<28} {len(lat)} answers; errors {self.errors}"
        q = statistics.quantiles(lat, n=100)
        return (
            f"{self.name:<28} {self.rate:>8,.0f} msgs/s   p50 {q[49] * 1000:6.1f} ms   p99 {q[98] * 1000:6.1f} ms"
            f"   errors {self.errors}"
        )


def request(conversation_id: str, n: int) -> pb.SendMessageRequest:
    return pb.SendMessageRequest(
        message_id=str(uuid.uuid4()),
        conversation_id=conversation_id,
        payload=pb.Payload(text=pb.TextPayload(text=f"load {n}")),
    )


async def unary(
    port: int, senders: list[tuple[str, str]], *, channels: int, concurrency: int, seconds: float, warmup: float
) -> Run:
    run = Run("unary", seconds)
    chans = [Channel("127.0.0.1", port) for _ in range(channels)]
    start = time.perf_counter()
    measure_from, stop = start + warmup, start + warmup + seconds

    async def worker(n: int) -> None:
        token, conv = senders[n % len(senders)]
        stub = pb.Chat4AllStub(chans[n % channels], metadata={"authorization": f"Bearer {token}"})
        i = 0
        while (now := time.perf_counter()) < stop:
            r = request(conv, i)
            i += 1
            t0 = time.perf_counter()
            try:
                answer = await stub.send_message(r)
            except (GRPCError, OSError):
                run.errors += 1
                continue
            t1 = time.perf_counter()
            run.accepted.append(answer.message_id)
            if now >= measure_from and t1 <= stop:
                run.latencies.append(t1 - t0)

    try:
        await asyncio.gather(*(worker(n) for n in range(concurrency)))
    finally:
        for ch in chans:
            ch.close()
    return run


async def streamed(
    port: int, senders: list[tuple[str, str]], *, channels: int, window: int, seconds: float, warmup: float
) -> Run:
    run = Run("stream", seconds)
    chans = [Channel("127.0.0.1", port) for _ in range(channels)]
    start = time.perf_counter()
    measure_from, stop = start + warmup, start + warmup + seconds

    async def one(n: int) -> None:
        token, conv = senders[n % len(senders)]
        stub = pb.Chat4AllStub(chans[n], metadata={"authorization": f"Bearer {token}"})
        room = asyncio.Semaphore(window)
        sent: list[float] = []

        async def requests() -> AsyncIterator[pb.SendMessageRequest]:
            i = 0
            while time.perf_counter() < stop:
                await room.acquire()
                sent.append(time.perf_counter())
                yield request(conv, i)
                i += 1

        async for result in stub.send_messages(requests()):
            room.release()
            t1 = time.perf_counter()
            if result.accepted is None:
                run.errors += 1
                continue
            run.accepted.append(result.accepted.message_id)
            t0 = sent[result.index]
            if t0 >= measure_from and t1 <= stop:
                run.latencies.append(t1 - t0)

    try:
        await asyncio.gather(*(one(n) for n in range(channels)))
    finally:
        for ch in chans:
            ch.close()
    return run


def cpu_by_kind(roots: list[psutil.Process]) -> dict[str, float]:
    """CPU seconds used so far by the gRPC runtime, PostgreSQL, the rest of the stack, and the echo server."""
    totals = {"grpc": 0.0, "postgres": 0.0, "rest of the stack": 0.0, "echo": 0.0}
    for root in roots:
        for proc in [root, *root.children(recursive=True)]:
            try:
                t = proc.cpu_times()
                line = " ".join(proc.cmdline())
                name = proc.name()
            except psutil.Error:
                continue
            if "--echo-server" in line:
                kind = "echo"
            elif "entrypoints.grpc" in line:
                kind = "grpc"
            elif name == "postgres":
                kind = "postgres"
            else:
                kind = "rest of the stack"
            totals[kind] += t.user + t.system
    return totals


def settle(roots: list[psutil.Process], *, most: float = 30.0, idle: float = 0.3) -> None:
    """Wait (up to ``most`` seconds) until the stack uses less than ``idle`` of a core: start-up work is over."""
    deadline = time.monotonic() + most
    before = sum(cpu_by_kind(roots).values())
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = sum(cpu_by_kind(roots).values())
        if now - before < idle:
            return
        before = now


def verify(database_url: str, accepted: list[str]) -> tuple[int, int]:
    with psycopg.connect(database_url) as conn:
        found = conn.execute(
            "select count(*), count(distinct id) from messages where id = any(%s::uuid[])", (accepted,)
        ).fetchone()
    if found is None:
        raise SystemExit("verification query returned nothing")
    return int(found[0]), int(found[1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds of each run")
    p.add_argument("--rounds", type=int, default=3, help="times the four runs are repeated, interleaved")
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--concurrency", type=int, default=64, help="unary calls in flight")
    p.add_argument("--channels", type=int, default=4, help="HTTP/2 connections (and streams)")
    p.add_argument("--window", type=int, default=64, help="sends in flight on each stream")
    p.add_argument("--conversations", type=int, default=16)
    p.add_argument("--echo-server", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.echo_server is not None:
        serve_echo(args.echo_server)
        return

    stack = start_stack()
    echo_port = free_port()
    echo = subprocess.Popen([sys.executable, __file__, "--echo-server", str(echo_port)], start_new_session=True)
    try:
        senders = asyncio.run(setup(stack.url, args.conversations))
        deadline = time.monotonic() + 30
        while not asyncio.run(_serving_any(echo_port)):
            if time.monotonic() > deadline:
                raise SystemExit("the echo server did not start")
            time.sleep(0.1)

        roots = [psutil.Process(stack.proc.pid), psutil.Process(echo.pid)]
        me = psutil.Process()
        settle(roots)

        def measure(kind: Callable[..., Awaitable[Run]], port: int, name: str, **extra: int) -> Run:
            before, client = cpu_by_kind(roots), sum(me.cpu_times()[:2])
            run = asyncio.run(
                kind(port, senders, channels=args.channels, seconds=args.seconds, warmup=args.warmup, **extra)
            )
            after = cpu_by_kind(roots)
            run.name = name
            run.cpu = {k: after[k] - before[k] for k in after if after[k] - before[k] > 0.05}
            run.cpu["load generator"] = sum(me.cpu_times()[:2]) - client
            return run

        rounds = [
            [
                measure(unary, echo_port, "echo, unary", concurrency=args.concurrency),
                measure(unary, stack.grpc_port, "SendMessage, unary", concurrency=args.concurrency),
                measure(streamed, echo_port, "echo, stream", window=args.window),
                measure(streamed, stack.grpc_port, "SendMessages, stream", window=args.window),
            ]
            for _ in range(args.rounds)
        ]
        accepted = [mid for runs in rounds for run in runs[1::2] for mid in run.accepted]
        stored, distinct = verify(stack.database_url, accepted)
    finally:
        echo.send_signal(signal.SIGTERM)
        stack.proc.send_signal(signal.SIGTERM)
        echo.wait(30)
        stack.proc.wait(60)
        shutil.rmtree(stack.data, ignore_errors=True)

    print(
        f"{args.rounds} rounds of four interleaved runs, each {args.seconds:.0f}s measured after {args.warmup:.0f}s "
        f"warm-up; {args.channels} connections; unary: {args.concurrency} calls in flight; "
        f"streams: {args.window} sends in flight each"
    )
    for i, runs in enumerate(rounds, 1):
        print(f"round {i}:")
        for run in runs:
            print("  " + run.line())
    print("CPU per answered call (ms, warm-up included; all rounds):")
    for k in range(4):
        runs = [r[k] for r in rounds]
        n = sum(len(r.accepted) for r in runs)
        kinds = sorted({kind for r in runs for kind in r.cpu}, key=list(runs[0].cpu).index)
        if n:
            spent = {kind: sum(r.cpu.get(kind, 0.0) for r in runs) for kind in kinds}
            print(f"  {runs[0].name:<26} " + ", ".join(f"{kind} {v / n * 1000:.2f}" for kind, v in spent.items()))
    echo_unary, send_unary, echo_stream, send_stream = (statistics.median(r[k].rate for r in rounds) for k in range(4))
    print(
        f"medians (msgs/s): echo unary {echo_unary:,.0f}, SendMessage unary {send_unary:,.0f}, "
        f"echo stream {echo_stream:,.0f}, SendMessages stream {send_stream:,.0f}"
    )
    print(
        f"SendMessage / echo unary calls: {send_unary / echo_unary:.2f} unary, {send_stream / echo_unary:.2f} "
        f"through the SendMessages stream; SendMessages / echo stream: {send_stream / echo_stream:.2f}"
    )
    target = max(send_unary, send_stream) >= echo_unary / 2
    print(f"target (SendMessage at least half the echo call rate): {'met' if target else 'NOT met'}")
    print(f"database: {stored} rows for {len(accepted)} accepted ids ({distinct} distinct)")
    errors = sum(run.errors for runs in rounds for run in runs[1::2])
    ok = stored == distinct == len(accepted) and not errors
    print("check:", "every accepted message stored exactly once" if ok else "FAILED")
    sys.exit(0 if ok else 1)


async def _serving_any(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    await writer.wait_closed()
    return True


if __name__ == "__main__":
    main()
