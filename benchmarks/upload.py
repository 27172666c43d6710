"""A large resumable upload through the files API, on the filesystem store and on S3 (a moto server).

For each store it starts its own `chat4all up` on free ports (and, for S3, a moto server in a
process of its own), registers a user and then:

1. a client *process* initiates the upload (declaring the SHA-256), PUTs the chunks in order
   (``--concurrency`` in flight, bodies streamed from the file) and is SIGKILLed once about half
   of them are acknowledged;
2. this process resumes: ``GET /v1/files/{id}`` for ``missing_chunks``, PUTs only those, then
   ``POST /v1/files/{id}/complete``;
3. it downloads the file through ``GET /v1/files/{id}/download``'s link and checks its SHA-256;
4. on S3, it uploads the same file straight to the same moto server (a multipart upload with the
   same part size and concurrency, no API) to compare.

Meanwhile a thread samples the RSS of the API's processes (``python -m entrypoints.http`` and its
uvicorn workers) every 50 ms. Rates are in MB/s with MB = 10^6 bytes; memory in MB as well.
The upload rate is the file's size over the whole wall time: phase 1 (from the initiate call) +
the resume + the complete call. The exit status is 1 if a download's SHA-256 is wrong (missed
performance targets are reported, not failed).

    python benchmarks/upload.py                              # 2 GiB, both stores
    python benchmarks/upload.py --size 256M --store filesystem
    python benchmarks/upload.py --chunk-size 16M --concurrency 2 --workers 2 --keep
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import multiprocessing
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from entrypoints.drill.demo_upload import put_chunks as demo_put_chunks  # bodies streamed from disk
from entrypoints.stack.postgres import free_port

MB = 1_000_000
MIB = 1024 * 1024
READ_BLOCK = MIB
"""How much of the file a client reads (and sends) at a time."""
S3_KEY = "testing"  # moto checks no signatures
S3_BUCKET = "chat4all"
S3_REGION = "us-east-1"

PIPELINE_WORKERS = ("relay", "router", "channels", "status", "sweeper")

FS_TARGET_MBPS = 250.0
S3_TARGET_RATIO = 0.70
RSS_TARGET_BYTES = 64 * MB


# --- the test file ------------------------------------------------------------------------------------------------


def parse_size(text: str) -> int:
    """``"2G"``, ``"256M"``, ``"512K"`` (binary units) or a number of bytes."""
    m = re.fullmatch(r"\s*(\d+)\s*([KMG]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if m is None:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 2G, 256M, 1048576)")
    return int(m[1]) << (10 * " KMG".index(m[2].upper() or " "))


def make_file(directory: Path, size: int, seed: int) -> tuple[Path, str]:
    """Write ``size`` bytes of deterministic, incompressible content; return the path and its SHA-256.

    Each 8 MiB block is a different rotation of one random block, prefixed with its number, so no
    two blocks are alike; memory holds two blocks whatever the size.
    """
    block = 8 * MIB
    base = random.Random(seed).randbytes(block)
    digest = hashlib.sha256()
    path = directory / f"upload-{size}.bin"
    with path.open("wb", buffering=0) as out:
        written = 0
        n = 0
        while written < size:
            turn = (n * 4099 + 1) % block
            data = (n.to_bytes(8, "big") + base[turn:] + base[:turn])[: min(block, size - written)]
            digest.update(data)
            out.write(data)
            written += len(data)
            n += 1
        os.fsync(out.fileno())  # its dirty pages would otherwise be written back during the upload, slowing it
    return path, digest.hexdigest()


# --- a stack of our own, and moto ---------------------------------------------------------------------------------


@dataclass
class Stack:
    proc: subprocess.Popen[bytes]
    url: str
    data_dir: Path
    state: dict[str, Any]
    family: list[psutil.Process] = field(default_factory=list)
    """Every process `up` had started when it became ready (each runtime runs in a session of its own)."""

    def processes(self, name: str) -> list[psutil.Process]:
        """The runtime ``name``'s process and its children (uvicorn's workers for ``http``)."""
        pid = next(r["pid"] for r in self.state["runtimes"] if r["name"] == name)
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]

    def postgres(self) -> list[psutil.Process]:
        root = psutil.Process(self.state["postgres"]["pid"])
        return [root, *root.children(recursive=True)]


def start_stack(workers: int, max_file_size: int, extra_env: dict[str, str]) -> Stack:
    data = Path(tempfile.mkdtemp(prefix="c4a-upload-bench-"))
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
        "CHAT4ALL_LOG_LEVEL": "warning",
        "CHAT4ALL_SANDBOX": "false",  # the loopback platform: measure Chat4All, not a stand-in for the platforms
        "CHAT4ALL_MAX_FILE_SIZE": str(max_file_size),
        **extra_env,
    }
    proc = subprocess.Popen([sys.executable, "-m", "entrypoints.cli", "up"], env=env, start_new_session=True)
    stack = Stack(proc=proc, url=f"http://127.0.0.1:{port}", data_dir=data, state={})
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"`chat4all up` exited with {proc.returncode}")
            with contextlib.suppress(httpx.HTTPError, OSError, KeyError, ValueError):
                if httpx.get(f"{stack.url}/health/ready", timeout=1).status_code == 200:
                    stack.state = json.loads((data / "stack.json").read_text())
                    if stack.state["postgres"] and any(r["name"] == "http" for r in stack.state["runtimes"]):
                        stack.family = psutil.Process(proc.pid).children(recursive=True)
                        return stack
            time.sleep(0.3)
        raise RuntimeError("the stack did not become ready")
    except BaseException:
        stop_stack(stack)
        raise


def stop_stack(stack: Stack) -> None:
    """SIGTERM `up` (it stops its runtimes, PostgreSQL and the broker), then kill whatever it left."""
    family = stack.family or _descendants(stack.proc.pid)
    if stack.proc.poll() is None:
        stack.proc.send_signal(signal.SIGTERM)
        try:
            stack.proc.wait(60)
        except subprocess.TimeoutExpired:
            stack.proc.kill()
            stack.proc.wait(10)
    _kill_leftovers(family)


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        children: list[psutil.Process] = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []
    return children


def _kill_leftovers(processes: Iterable[psutil.Process]) -> None:
    alive = [p for p in processes if p.is_running()]  # is_running also checks the pid was not reused
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(alive, timeout=10)


def start_moto(log_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A moto S3 server in a process of its own; its spooled part files go to ``log_dir``."""
    port = free_port()
    log = (log_dir / "moto.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "TMPDIR": str(log_dir)},
        start_new_session=True,
    )
    log.close()
    endpoint = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto exited with {proc.returncode}; see {log_dir / 'moto.log'}")
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(f"http://{endpoint}/", timeout=1)
            return proc, endpoint
        time.sleep(0.2)
    stop_process(proc)
    raise RuntimeError("moto did not start")


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


# --- measuring the API's processes --------------------------------------------------------------------------------


def _label(p: psutil.Process) -> str:
    try:
        cmd = " ".join(p.cmdline())
    except psutil.Error:
        return "gone"
    if "entrypoints.http" in cmd:
        return "api main"
    if "multiprocessing.spawn" in cmd or "multiprocessing-fork" in cmd:
        return "api worker"
    if "resource_tracker" in cmd:
        return "resource tracker"
    return str(p.name())


def vm_hwm(pid: int) -> int | None:
    """The process's peak RSS since it started (``VmHWM``), in bytes."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return None


@dataclass
class ProcessMemory:
    pid: int
    label: str
    baseline: int
    peak: int
    hwm: int | None = None

    @property
    def growth(self) -> int:
        return self.peak - self.baseline


class RssSampler:
    """Samples the RSS of ``processes`` every ``interval`` seconds from a thread: baseline, peak, sum's peak."""

    def __init__(self, processes: list[psutil.Process], interval: float = 0.05) -> None:
        self._procs = processes
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        first = self._sample()
        self.memory = {
            p.pid: ProcessMemory(p.pid, _label(p), first.get(p.pid, 0), first.get(p.pid, 0)) for p in processes
        }
        self.baseline_sum = sum(first.values())
        self.peak_sum = self.baseline_sum
        self.samples = 1

    def _sample(self) -> dict[int, int]:
        out = {}
        for p in self._procs:
            with contextlib.suppress(psutil.Error):
                out[p.pid] = p.memory_info().rss
        return out

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            rss = self._sample()
            for pid, value in rss.items():
                m = self.memory[pid]
                m.peak = max(m.peak, value)
            self.peak_sum = max(self.peak_sum, sum(rss.values()))
            self.samples += 1

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        for m in self.memory.values():
            m.hwm = vm_hwm(m.pid)


def machine_cpu_seconds() -> float:
    """CPU seconds the whole machine has been busy (every process, the kernel's own work included)."""
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0))


def cpu_seconds(processes: Iterable[psutil.Process]) -> float:
    total = 0.0
    for p in processes:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


# --- the client ---------------------------------------------------------------------------------------------------


async def put_chunks(
    http: httpx.AsyncClient,
    headers: dict[str, str],
    path: Path,
    file_id: str,
    indices: Iterable[int],
    chunk_size: int,
    size: int,
    concurrency: int,
    on_ack: Callable[[int], None] = lambda _: None,
) -> int:
    """PUT chunks ``indices`` in order, ``concurrency`` at a time, bodies streamed from ``path``; return the bytes.

    The drill's client (``chat4all drill demo``): the benchmark measures the same uploads the demo makes.
    """
    token = headers["Authorization"].removeprefix("Bearer ")

    def report(event: str, index: int) -> None:
        if event == "ack":
            on_ack(index)

    return await demo_put_chunks(http, token, path, file_id, indices, chunk_size, size, concurrency, report)


@dataclass
class ClientJob:
    url: str
    headers: dict[str, str]
    path: Path
    size: int
    sha256: str
    chunk_size: int
    concurrency: int


def client_process(conn: Connection, job: ClientJob) -> None:
    """Phase 1, in a process of its own: initiate, then PUT every chunk in order until killed.

    Tells the parent ``("initiated", file_id, total_chunks, t0)``, then ``("ack", index, t, cpu)`` per chunk.
    """

    async def run() -> None:
        async with httpx.AsyncClient(base_url=job.url, timeout=120) as http:
            t0 = time.monotonic()
            r = await http.post(
                "/v1/files/initiate",
                json={
                    "filename": job.path.name,
                    "size": job.size,
                    "content_type": "application/octet-stream",
                    "checksum": f"sha256:{job.sha256}",
                    "chunk_size": job.chunk_size,
                },
                headers=job.headers,
            )
            if r.status_code != 201:
                raise RuntimeError(f"initiate: {r.status_code} {r.text}")
            body = r.json()
            conn.send(("initiated", body["file_id"], body["total_chunks"], t0))
            await put_chunks(
                http,
                job.headers,
                job.path,
                body["file_id"],
                range(body["total_chunks"]),
                job.chunk_size,
                job.size,
                job.concurrency,
                on_ack=lambda i: conn.send(("ack", i, time.monotonic(), time.process_time())),
            )
            conn.send(("done", time.monotonic(), time.process_time()))

    try:
        asyncio.run(run())
    except Exception as e:
        conn.send(("error", repr(e)))


# --- one store ----------------------------------------------------------------------------------------------------


@dataclass
class Result:
    store: str
    size: int
    total_chunks: int = 0
    phase1_s: float = 0.0
    phase1_acked: int = 0
    resume_chunks: int = 0
    resume_bytes: int = 0
    resume_s: float = 0.0
    status_s: float = 0.0
    complete_s: float = 0.0
    total_s: float = 0.0
    put_bytes: int = 0
    download_s: float = 0.0
    sha_ok: bool = False
    memory: list[ProcessMemory] = field(default_factory=list)
    rss_sum_growth: int = 0
    cpu: dict[str, float] = field(default_factory=dict)
    complete_cpu: dict[str, float] = field(default_factory=dict)
    direct_s: float | None = None
    direct_complete_s: float | None = None
    complete_503s: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def rate(self) -> float:
        return self.size / self.total_s / MB

    @property
    def direct_rate(self) -> float | None:
        return self.size / self.direct_s / MB if self.direct_s else None

    @property
    def max_growth(self) -> int:
        return max((m.growth for m in self.memory), default=0)


async def register(url: str) -> dict[str, str]:
    name = f"up{uuid.uuid4().hex[:10]}"
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        r = await http.post("/v1/users", json={"username": name, "password": "benchmark-pw"})
        r.raise_for_status()
        t = await http.post("/auth/token", json={"username": name, "password": "benchmark-pw"})
        t.raise_for_status()
        return {"Authorization": f"Bearer {t.json()['access_token']}"}


def phase1(job: ClientJob) -> tuple[str, int, float, float, int, float]:
    """Run the client process until about half the chunks are acknowledged, then SIGKILL it.

    Returns the file id, the chunk count, when the client started (monotonic), when it was killed,
    how many chunks it had acknowledged and the client's CPU seconds.
    """
    ctx = multiprocessing.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=client_process, args=(sender, job), daemon=True)
    proc.start()
    sender.close()
    file_id, total, t0, acked, cpu = "", 0, 0.0, set[int](), 0.0
    try:
        while True:
            if not receiver.poll(300):
                raise RuntimeError("the client went quiet for 5 minutes")
            try:
                msg = receiver.recv()
            except EOFError:
                raise RuntimeError("the client exited before half the chunks were acknowledged") from None
            if msg[0] == "error":
                raise RuntimeError(f"the client failed: {msg[1]}")
            if msg[0] == "initiated":
                _, file_id, total, t0 = msg
                if total < 2:
                    raise RuntimeError(
                        "the file has one chunk: nothing to resume (a larger --size or smaller --chunk-size)"
                    )
            elif msg[0] == "ack":
                acked.add(msg[1])
                cpu = msg[3]
                if len(acked) >= total // 2:
                    proc.kill()
                    return file_id, total, t0, time.monotonic(), len(acked), cpu
            elif msg[0] == "done":
                raise RuntimeError("the client finished before it could be killed")
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join(10)
        receiver.close()


async def resume(job: ClientJob, file_id: str, result: Result) -> None:
    async with httpx.AsyncClient(base_url=job.url, timeout=httpx.Timeout(120, read=1800)) as http:
        t = time.monotonic()
        r = await http.get(f"/v1/files/{file_id}", headers=job.headers)
        r.raise_for_status()
        missing: list[int] = r.json()["missing_chunks"]
        result.status_s = time.monotonic() - t
        t = time.monotonic()
        result.resume_chunks = len(missing)
        result.resume_bytes = await put_chunks(
            http, job.headers, job.path, file_id, missing, job.chunk_size, job.size, job.concurrency
        )
        result.resume_s = time.monotonic() - t


async def complete(job: ClientJob, file_id: str, attempts: int = 5) -> tuple[dict[str, Any], list[str]]:
    """``POST /v1/files/{id}/complete``, again after a 503 as a client would; the answer and the 503s' details."""
    unavailable: list[str] = []
    async with httpx.AsyncClient(base_url=job.url, timeout=httpx.Timeout(120, read=1800)) as http:
        for attempt in range(attempts):
            r = await http.post(f"/v1/files/{file_id}/complete", json={}, headers=job.headers)
            if r.status_code == 503 and attempt + 1 < attempts:
                unavailable.append(r.json().get("detail", r.text))
                await asyncio.sleep(2.0 * (attempt + 1))
                continue
            if r.status_code != 200:
                raise RuntimeError(f"complete: {r.status_code} {r.text}")
            body: dict[str, Any] = r.json()
            return body, unavailable
    raise AssertionError("unreachable")


def download(url: str, headers: dict[str, str], file_id: str) -> tuple[str, int, float]:
    """Fetch the file through its download link; return its SHA-256, its length and the seconds it took."""
    with httpx.Client(base_url=url, timeout=httpx.Timeout(120, read=600)) as http:
        link = http.get(f"/v1/files/{file_id}/download", headers=headers)
        link.raise_for_status()
        digest = hashlib.sha256()
        n = 0
        t = time.monotonic()
        with http.stream("GET", link.json()["download_url"]) as r:
            r.raise_for_status()
            for block in r.iter_raw(READ_BLOCK):
                digest.update(block)
                n += len(block)
        return digest.hexdigest(), n, time.monotonic() - t


async def direct_s3(endpoint: str, path: Path, size: int, chunk_size: int, concurrency: int) -> tuple[float, float]:
    """A multipart upload of ``path`` straight to S3 (no API), as the S3 store makes them; the seconds it took
    in all and for the completion."""
    from miniopy_async.api import Minio
    from miniopy_async.datatypes import Part

    from adapters.storage.s3 import close_client

    client = Minio(endpoint, access_key=S3_KEY, secret_key=S3_KEY, secure=False, region=S3_REGION)
    key = f"benchmark/direct-{uuid.uuid4().hex}"
    total = -(-size // chunk_size)
    etags: dict[int, str] = {}
    todo = iter(range(total))

    async def worker() -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            for i in todo:
                body = os.pread(fd, min(chunk_size, size - i * chunk_size), i * chunk_size)
                etags[i] = await client._upload_part(S3_BUCKET, key, body, None, upload_id, i + 1)
        finally:
            os.close(fd)

    try:
        t0 = time.monotonic()
        upload_id = await client._create_multipart_upload(S3_BUCKET, key, {})
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        t1 = time.monotonic()
        await client._complete_multipart_upload(
            S3_BUCKET, key, upload_id, [Part(i + 1, etags[i]) for i in range(total)]
        )
        t2 = time.monotonic()
        stat = await client.stat_object(S3_BUCKET, key)
        if stat.size != size:
            raise RuntimeError(f"the direct upload stored {stat.size} bytes, not {size}")
        await client.remove_object(S3_BUCKET, key)
        return t2 - t0, t2 - t1
    finally:
        await close_client(client)


def run_store(store: str, args: argparse.Namespace, path: Path, sha256: str, work: Path) -> Result:
    result = Result(store=store, size=args.size)
    moto: subprocess.Popen[bytes] | None = None
    endpoint = ""
    extra: dict[str, str] = {}
    stack: Stack | None = None
    try:
        if store == "s3":
            moto_dir = work / "moto"
            moto_dir.mkdir()
            moto, endpoint = start_moto(moto_dir)
            extra = {
                "CHAT4ALL_STORAGE": "s3",
                "CHAT4ALL_S3_ENDPOINT": endpoint,
                "CHAT4ALL_S3_ACCESS_KEY": S3_KEY,
                "CHAT4ALL_S3_SECRET_KEY": S3_KEY,
                "CHAT4ALL_S3_BUCKET": S3_BUCKET,
                "CHAT4ALL_S3_REGION": S3_REGION,
                "CHAT4ALL_S3_SECURE": "false",
                # moto assembles a multipart upload in Python (2 GiB: 30-45 s here); real S3 takes seconds.
                "CHAT4ALL_S3_TIMEOUT_S": str(args.s3_timeout),
            }
        if args.api_only:
            extra["CHAT4ALL_WORKER_PROCESSES"] = json.dumps(dict.fromkeys(PIPELINE_WORKERS, 0))
        stack = start_stack(args.workers, max(args.size, 2 * 1024**3), extra)
        headers = asyncio.run(register(stack.url))
        api = stack.processes("http")
        groups = {
            "api": api,
            "postgres": stack.postgres(),
            "moto": [psutil.Process(moto.pid)] if moto is not None else [],
        }
        listed = {p.pid for g in groups.values() for p in g}
        groups["rest of stack"] = [p for p in _descendants(stack.proc.pid) if p.pid not in listed]
        job = ClientJob(stack.url, headers, path, args.size, sha256, args.chunk_size, args.concurrency)
        print(f"[{store}] stack ready at {stack.url} ({len(api)} API processes); uploading...", flush=True)

        time.sleep(1.0)  # let start-up settle before the baseline
        cpu0 = {k: cpu_seconds(v) for k, v in groups.items()}
        machine0 = machine_cpu_seconds()
        me0 = time.process_time()
        with RssSampler(api) as rss:
            file_id, total, t0, t_kill, acked, client_cpu = phase1(job)
            result.total_chunks, result.phase1_acked, result.phase1_s = total, acked, t_kill - t0
            asyncio.run(resume(job, file_id, result))
            cpu1 = {k: cpu_seconds(v) for k, v in groups.items()}
            t = time.monotonic()
            done, result.complete_503s = asyncio.run(complete(job, file_id))
            t_end = time.monotonic()
        cpu2 = {k: cpu_seconds(v) for k, v in groups.items()}
        machine = machine_cpu_seconds() - machine0
        result.complete_s = t_end - t
        result.total_s = t_end - t0
        result.put_bytes = acked * args.chunk_size + result.resume_bytes  # about: the last chunk may be shorter
        result.memory = list(rss.memory.values())
        result.rss_sum_growth = rss.peak_sum - rss.baseline_sum
        result.cpu = {k: cpu2[k] - cpu0[k] for k in cpu0}
        result.cpu["client"] = client_cpu + (time.process_time() - me0)
        result.cpu["everything else"] = max(0.0, machine - sum(result.cpu.values()))
        result.complete_cpu = {k: cpu2[k] - cpu1[k] for k in cpu0}
        if done.get("checksum") != f"sha256:{sha256}" or done.get("status") != "completed":
            print(f"[{store}] complete answered {done}", flush=True)

        got, n, result.download_s = download(stack.url, headers, file_id)
        result.sha_ok = got == sha256 and n == args.size
        print(f"[{store}] downloaded {n} bytes, SHA-256 {'ok' if result.sha_ok else 'MISMATCH ' + got}", flush=True)

        if store == "s3":
            print(f"[{store}] direct multipart upload to moto...", flush=True)
            result.direct_s, result.direct_complete_s = asyncio.run(
                direct_s3(endpoint, path, args.size, args.chunk_size, args.concurrency)
            )
        report(result, args)
        return result
    except Exception as e:  # one store failing still leaves the other's figures and the summary
        result.error = f"{type(e).__name__}: {e}"
        print(f"[{store}] FAILED: {result.error}", flush=True)
        return result
    finally:
        if stack is not None:
            stop_stack(stack)
            if not args.keep:
                shutil.rmtree(stack.data_dir, ignore_errors=True)
        if moto is not None:
            stop_process(moto)


# --- reporting ----------------------------------------------------------------------------------------------------


def mb(n: float) -> str:
    return f"{n / MB:,.1f}"


def report(r: Result, args: argparse.Namespace) -> None:
    chunk = args.chunk_size
    put_s = r.phase1_s + r.status_s + r.resume_s
    print(
        f"\n== {r.store}: {mb(r.size)} MB in {r.total_chunks} chunks of {chunk // MIB} MiB, "
        f"concurrency {args.concurrency}, {args.workers} HTTP workers, "
        f"{'API only' if args.api_only else 'whole stack'} (MB = 10^6 bytes)"
    )
    print(
        f"  phase 1   {r.phase1_acked}/{r.total_chunks} chunks acknowledged in {r.phase1_s:.2f} s "
        f"({r.phase1_acked * chunk / r.phase1_s / MB:,.0f} MB/s), then the client was SIGKILLed"
    )
    print(
        f"  resume    status {r.status_s * 1000:.0f} ms; {r.resume_chunks} missing chunks ({mb(r.resume_bytes)} MB) "
        f"in {r.resume_s:.2f} s = {r.resume_bytes / r.resume_s / MB:,.0f} MB/s"
    )
    print(
        f"  chunks    {mb(r.put_bytes)} MB acknowledged in {put_s:.2f} s = {r.put_bytes / put_s / MB:,.0f} MB/s "
        "(phase 1 + resume, without completion)"
    )
    retried = f" (after {len(r.complete_503s)} x 503: {r.complete_503s[0]})" if r.complete_503s else ""
    print(f"  complete  {r.complete_s:.2f} s{retried}")
    print(f"  upload    {r.total_s:.2f} s in all = {r.rate:,.0f} MB/s through the API")
    print(
        f"  download  {r.download_s:.2f} s = {r.size / r.download_s / MB:,.0f} MB/s, "
        f"SHA-256 {'ok' if r.sha_ok else 'MISMATCH'}"
    )
    if r.direct_s is not None and r.direct_rate is not None:
        print(
            f"  direct    {r.direct_s:.2f} s = {r.direct_rate:,.0f} MB/s straight to moto "
            f"(its completion {r.direct_complete_s or 0:.2f} s); the API makes {r.rate / r.direct_rate:.0%} of it"
        )
        parts_s = r.direct_s - (r.direct_complete_s or 0.0)
        print(
            f"  parts     without the completions: direct {r.size / parts_s / MB:,.0f} MB/s, through the API "
            f"{r.put_bytes / put_s / MB:,.0f} MB/s ({r.put_bytes / put_s / (r.size / parts_s):.0%})"
        )
    for m in r.memory:
        hwm = f", VmHWM {mb(m.hwm)}" if m.hwm is not None else ""
        print(
            f"  RSS       pid {m.pid} ({m.label}): baseline {mb(m.baseline)} MB, peak {mb(m.peak)} MB, "
            f"growth {mb(m.growth)} MB{hwm}"
        )
    print(f"  RSS       all API processes: growth of the sum {mb(r.rss_sum_growth)} MB")
    cores = psutil.cpu_count() or 1
    cpu = ", ".join(f"{k} {v:.1f}" for k, v in r.cpu.items())
    print(f"  CPU s     during the upload ({r.total_s:.1f} s wall x {cores} cores = {r.total_s * cores:.1f}): {cpu}")
    if r.cpu.get("everything else", 0.0) > 0.15 * r.total_s * cores:
        print("  WARNING   other work kept the machine busy during the upload: these figures are low")
    cpu = ", ".join(f"{k} {v:.1f}" for k, v in r.complete_cpu.items())
    print(f"  CPU s     during complete ({r.complete_s:.1f} s): {cpu}\n", flush=True)


def summary(results: list[Result]) -> None:
    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    rows = [("store", "figure", "value", "target", "")]
    for r in results:
        if r.error is not None:
            rows.append((r.store, "run", "FAILED", "", r.error[:60]))
            continue
        if r.store == "filesystem":
            rows.append((r.store, "upload through the API", f"{r.rate:,.0f} MB/s", f">= {FS_TARGET_MBPS:.0f} MB/s",
                         verdict(r.rate >= FS_TARGET_MBPS)))  # fmt: skip
        else:
            rows.append((r.store, "upload through the API", f"{r.rate:,.0f} MB/s", "", ""))
        if r.direct_rate is not None:
            ratio = r.rate / r.direct_rate
            rows.append((r.store, "direct multipart to moto", f"{r.direct_rate:,.0f} MB/s", "", ""))
            rows.append((r.store, "API / direct", f"{ratio:.0%}", f">= {S3_TARGET_RATIO:.0%}",
                         verdict(ratio >= S3_TARGET_RATIO)))  # fmt: skip
        rows.append((r.store, "resumed chunks alone", f"{r.resume_bytes / r.resume_s / MB:,.0f} MB/s", "", ""))
        rows.append(
            (
                r.store,
                "complete call",
                f"{r.complete_s:.2f} s",
                "",
                f"{len(r.complete_503s)} x 503 first" if r.complete_503s else "",
            )
        )
        rows.append((r.store, "download", f"{r.size / r.download_s / MB:,.0f} MB/s", "", ""))
        rows.append((r.store, "download SHA-256", "ok" if r.sha_ok else "MISMATCH", "equal", verdict(r.sha_ok)))
        rows.append((r.store, "API RSS growth (max process)", f"{mb(r.max_growth)} MB",
                     f"< {RSS_TARGET_BYTES // MB} MB", verdict(r.max_growth < RSS_TARGET_BYTES)))  # fmt: skip
        rows.append((r.store, "API RSS growth (all processes)", f"{mb(r.rss_sum_growth)} MB", "", ""))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    print("summary (MB = 10^6 bytes)")
    for n, row in enumerate(rows):
        print("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            print("  " + "  ".join("-" * w for w in widths))


def _commit() -> str:
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, check=False)
        dirty = subprocess.run(["git", "status", "--porcelain", "-uno"], cwd=root, capture_output=True, check=False)
    except OSError:
        return "an unknown commit"
    return f"commit {head.stdout.decode().strip()}" + (" with uncommitted changes" if dirty.stdout.strip() else "")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", choices=["filesystem", "s3", "both"], default="both")
    p.add_argument("--size", type=parse_size, default=parse_size("2G"), help="the file's size (2G, 256M...)")
    p.add_argument("--chunk-size", type=parse_size, default=parse_size("8M"), help="bytes per chunk (8M)")
    p.add_argument("--concurrency", type=int, default=4, help="chunk PUTs in flight")
    p.add_argument("--workers", type=int, default=2, help="HTTP worker processes (CHAT4ALL_HTTP_WORKERS)")
    p.add_argument(
        "--api-only",
        action="store_true",
        help="run no pipeline workers (relay, router, channels, status, sweeper): the API, PostgreSQL and the broker",
    )
    p.add_argument(
        "--s3-timeout",
        type=float,
        default=300.0,
        help="CHAT4ALL_S3_TIMEOUT_S for the S3 stack (the stack's default, 30 s, is shorter than moto takes to "
        "complete a 2 GiB upload)",
    )
    p.add_argument("--seed", type=int, default=2026, help="seeds the file's content")
    p.add_argument("--keep", action="store_true", help="keep the test file and the stacks' data dirs")
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="c4a-upload-"))
    results: list[Result] = []
    try:
        t = time.monotonic()
        print(f"Chat4All at {_commit()}; {psutil.cpu_count()} CPUs")
        path, sha256 = make_file(work, args.size, args.seed)
        print(f"test file: {path} ({mb(args.size)} MB, written in {time.monotonic() - t:.1f} s), sha256 {sha256}")
        for store in ("filesystem", "s3") if args.store == "both" else (args.store,):
            results.append(run_store(store, args, path, sha256, work))
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    summary(results)
    sys.exit(0 if results and all(r.sha_ok and r.error is None for r in results) else 1)


if __name__ == "__main__":
    main()
