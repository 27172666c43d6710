"""Scenario ``upload``: a large file through the resumable chunked upload API, interrupted half way and resumed.

1. A file of pseudo-random bytes is written to a temporary directory (SHAKE-128 of the seed and the block's
   number: deterministic, so the same ``--seed`` gives the same file, and a stack that already stores that
   content keeps one copy of it) and hashed on the way.
2. A client *process* initiates the upload and PUTs the chunks, ``--concurrency`` at a time, each streamed
   from the disk. It reports every chunk it starts and every one the API acknowledges through a pipe; once
   about ``--interrupt-at`` of them are acknowledged the demo SIGKILLs it: its connections break mid-body, as
   when a phone loses its network or an app is killed.
3. A fresh client asks ``GET /v1/files/{id}`` which chunks are missing, sends only those and completes with the
   SHA-256. A chunk is sent twice only if it was in flight at the kill: the demo checks it.
4. The file goes to the other user as a message; their socket announces it, they ask for the expiring download
   link, download the file and compare its SHA-256.

Memory stays flat: the file is written, read and downloaded one block at a time, never held whole.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import attrs
import httpx

from entrypoints.drill.demo_client import Api, DemoFailure, Socket, User, ms
from entrypoints.drill.demo_report import Narrator

MB = 1_000_000
FLAT = 64 * MB
"""How much a client may grow, whatever the file's size: blocks in flight and buffers, never the file."""
BLOCK = 1024 * 1024
"""How much of the file is generated, read, sent or downloaded at a time."""

_UNITS = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "KI": 2**10, "MI": 2**20, "GI": 2**30, "TI": 2**40}


def parse_size(text: str) -> int:
    """``1.8G`` (10^9), ``20M``, ``512K``, ``2GiB`` (2^30) or a plain number of bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?)?B?\s*", text, re.IGNORECASE)
    if m is None:
        raise ValueError(f"not a size: {text!r} (e.g. 1.8G, 20M, 1048576)")
    return round(float(m[1]) * _UNITS[(m[2] or "").upper()])


def megabytes(n: float) -> str:
    return f"{n / MB:,.1f} MB"


def rate(n: float, seconds: float) -> str:
    return f"{n / seconds / MB:,.1f} MB/s" if seconds > 0 else "n/a"


@attrs.frozen
class Plan:
    """The ``upload`` scenario's options."""

    size: int
    chunk_size: int | None
    """None: the server's default."""
    interrupt_at: float
    concurrency: int
    seed: int
    work_dir: Path | None


# --- the file -----------------------------------------------------------------------------------------------------


def write_file(directory: Path, size: int, seed: int) -> tuple[Path, str]:
    """``size`` pseudo-random bytes, one block at a time; the path and the SHA-256."""
    path = directory / f"demo-{size}-{seed}.bin"
    digest = hashlib.sha256()
    key = seed.to_bytes(8, "big", signed=True)
    with path.open("wb", buffering=0) as out:
        written, n = 0, 0
        while written < size:
            block = hashlib.shake_128(key + n.to_bytes(8, "big")).digest(min(BLOCK, size - written))
            digest.update(block)
            out.write(block)
            written += len(block)
            n += 1
        os.fsync(out.fileno())  # otherwise its pages are written back during the upload, slowing it
    return path, digest.hexdigest()


async def file_blocks(path: Path, offset: int, length: int) -> AsyncIterator[bytes]:
    """``length`` bytes of ``path`` from ``offset``, a block at a time: a chunk is never held whole."""
    fd = os.open(path, os.O_RDONLY)
    try:
        end = offset + length
        while offset < end:
            block = os.pread(fd, min(BLOCK, end - offset), offset)
            if not block:
                raise OSError(f"{path} ended at {offset}")
            offset += len(block)
            yield block
    finally:
        os.close(fd)


# --- the client that is killed ------------------------------------------------------------------------------------


@attrs.frozen
class Job:
    """What the client process needs; it reads it as JSON on its stdin (a token has no place on a command line)."""

    base_url: str
    token: str
    path: str
    size: int
    chunk_size: int | None
    concurrency: int
    wait_s: float


async def put_chunks(
    http: httpx.AsyncClient,
    token: str,
    path: Path,
    file_id: str,
    chunks: Iterable[int],
    chunk_size: int,
    size: int,
    concurrency: int,
    report: Callable[[str, int], None] | None = None,
) -> int:
    """PUT ``chunks`` in order, ``concurrency`` at a time, bodies streamed from ``path``; the bytes acknowledged.

    ``report(event, index)`` hears ``"start"`` before each chunk goes and ``"ack"`` once the API answered 200.
    """
    todo = iter(chunks)
    sent = 0

    async def worker() -> None:
        nonlocal sent
        for index in todo:  # shared by the workers: each takes the next chunk
            offset = index * chunk_size
            length = min(chunk_size, size - offset)
            if report is not None:
                report("start", index)
            r = await http.put(
                f"/v1/files/{file_id}/chunks/{index}",
                content=file_blocks(path, offset, length),
                headers={
                    "Authorization": f"Bearer {token}",
                    "Content-Length": str(length),
                    "Content-Type": "application/octet-stream",
                },
            )
            if r.status_code != 200:
                raise DemoFailure(f"PUT chunk {index}", f"answered {r.status_code}: {r.text[:200]}")
            sent += length
            if report is not None:
                report("ack", index)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return sent


def client_process(conn: Connection, job: Job) -> None:
    """Phase 1, in a process of its own: initiate, then PUT every chunk until SIGKILLed.

    Tells the parent ``("initiated", file_id, total_chunks, chunk_size, t)``, then ``("start"|"ack", index, t)``.
    """
    path = Path(job.path)

    async def upload() -> None:
        async with httpx.AsyncClient(base_url=job.base_url, timeout=_timeout(job.wait_s), trust_env=False) as http:
            body: dict[str, Any] = {
                "filename": path.name,
                "size": job.size,
                "content_type": "application/octet-stream",
            }
            if job.chunk_size is not None:
                body["chunk_size"] = job.chunk_size
            t0 = time.monotonic()
            r = await http.post("/v1/files/initiate", json=body, headers={"Authorization": f"Bearer {job.token}"})
            if r.status_code != 201:
                raise DemoFailure("POST /v1/files/initiate", f"answered {r.status_code}: {r.text[:200]}")
            started = r.json()
            file_id, total, chunk_size = started["file_id"], started["total_chunks"], started["chunk_size"]
            conn.send(("initiated", file_id, total, chunk_size, t0))
            await put_chunks(
                http,
                job.token,
                path,
                file_id,
                range(total),
                chunk_size,
                job.size,
                job.concurrency,
                report=lambda event, index: conn.send((event, index, time.monotonic())),
            )
            conn.send(("done", time.monotonic()))

    try:
        asyncio.run(upload())
    except Exception as e:
        conn.send(("error", f"{type(e).__name__}: {e}"))


def _timeout(seconds: float) -> httpx.Timeout:
    """Connect within ``seconds``; a chunk or a completion may take longer to answer on a busy machine."""
    return httpx.Timeout(seconds, read=max(seconds, 600.0), write=max(seconds, 600.0))


@attrs.define
class Interrupted:
    """What phase 1 did before it was killed, as its reports told."""

    size: int
    file_id: str = ""
    total: int = 0
    chunk_size: int = 0
    t_initiate: float = 0.0
    t_killed: float = 0.0
    started: set[int] = attrs.field(factory=set)
    acked: set[int] = attrs.field(factory=set)
    killed: bool = False
    finished: bool = False

    @property
    def in_flight(self) -> set[int]:
        return self.started - self.acked


def start_client(job: Job) -> tuple[subprocess.Popen[bytes], Connection]:
    """``python -m entrypoints.drill.demo_upload`` with ``job`` on its stdin; the process and the end of its pipe.

    A program of its own rather than a ``multiprocessing`` child: that would import this process's main module
    again (the whole CLI), which takes seconds on a busy machine.
    """
    read_fd, write_fd = os.pipe()
    root = str(Path(__file__).resolve().parents[2])  # where `entrypoints` is, wherever the demo was started from
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    try:
        proc = subprocess.Popen(  # noqa: S603 - this interpreter and this module
            [sys.executable, "-m", __name__, str(write_fd)], stdin=subprocess.PIPE, pass_fds=(write_fd,), env=env
        )
    finally:
        os.close(write_fd)
    assert proc.stdin is not None
    with proc.stdin:
        proc.stdin.write(json.dumps(attrs.asdict(job)).encode())
    return proc, Connection(read_fd, writable=False)


def interrupted_upload(job: Job, interrupt_at: float, wait_s: float) -> Interrupted:
    """Run the client process and SIGKILL it once ``interrupt_at`` of the chunks are acknowledged."""
    proc, receiver = start_client(job)
    seen = Interrupted(job.size)
    threshold = 0
    try:
        while proc.poll() is None or receiver.poll(0):
            if not receiver.poll(wait_s):
                raise DemoFailure("the first client uploads", f"it reported nothing for {wait_s:.0f} s")
            try:
                msg = receiver.recv()
            except EOFError:
                break
            if msg[0] == "error":
                raise DemoFailure("the first client uploads", msg[1])
            if msg[0] == "initiated":
                _, seen.file_id, seen.total, seen.chunk_size, seen.t_initiate = msg
                threshold = min(seen.total - 1, max(1, round(interrupt_at * seen.total)))
            elif msg[0] == "start":
                seen.started.add(msg[1])
            elif msg[0] == "ack":
                seen.acked.add(msg[1])
                if len(seen.acked) >= threshold and not seen.killed:
                    proc.kill()  # SIGKILL: no goodbye, its sockets just break
                    seen.killed, seen.t_killed = True, time.monotonic()
            elif msg[0] == "done":
                seen.finished = True
                seen.t_killed = seen.t_killed or msg[1]
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        receiver.close()
    if not (seen.killed or seen.finished):
        raise DemoFailure("the first client uploads", f"it exited on its own (exit code {proc.returncode})")
    return seen


# --- the scenario -------------------------------------------------------------------------------------------------


@attrs.define
class Figures:
    """The upload's measured phases, in seconds and bytes."""

    phase1_s: float = 0.0
    phase1_bytes: int = 0
    resume_s: float = 0.0
    """From the fresh client's first call to its last chunk's answer."""
    resume_bytes: int = 0
    complete_s: float = 0.0
    gap_s: float = 0.0
    """Between the kill and the fresh client's first call."""

    @property
    def total_s(self) -> float:
        return self.phase1_s + self.gap_s + self.resume_s + self.complete_s


@attrs.define
class Upload:
    api: Api
    n: Narrator
    wait_s: float
    plan: Plan
    sender: User
    receiver: User
    path: Path = Path()
    sha256: str = ""
    figures: Figures = attrs.field(factory=Figures)


async def run(api: Api, n: Narrator, wait_s: float, plan: Plan) -> None:
    limits = await api.call("GET", "/config.json")
    if plan.size > limits["max_file_size"]:
        raise DemoFailure("the file fits", f"{plan.size} bytes is over the stack's limit, {limits['max_file_size']}")
    chunk_size = plan.chunk_size or int(limits["chunk_size"])
    if plan.size <= chunk_size:
        raise DemoFailure(
            "the file has chunks to interrupt",
            f"{plan.size} bytes is one chunk of {chunk_size}: use a larger --size or a smaller --chunk-size",
        )
    work = Path(tempfile.mkdtemp(prefix="chat4all-demo-", dir=plan.work_dir))
    try:
        free = shutil.disk_usage(work).free
        if free < plan.size + 64 * MB:
            raise DemoFailure("room for the file", f"{work} has {megabytes(free)} free, the file needs {plan.size}")
        u = Upload(api, n, wait_s, plan, await api.register("demo-sender"), await api.register("demo-receiver"))
        n.say(f"registered the sender {u.sender.username} and the receiver {u.receiver.username}")
        await _scenario(u, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        n.say(f"deleted {work}")


async def _scenario(u: Upload, work: Path) -> None:
    rss0 = _peak_rss()
    t = time.monotonic()
    u.path, u.sha256 = await asyncio.to_thread(write_file, work, u.plan.size, u.plan.seed)
    u.n.say(
        f"wrote {u.path} ({u.plan.size:,} bytes = {megabytes(u.plan.size)}) in {time.monotonic() - t:.1f} s, "
        f"SHA-256 {u.sha256}"
    )
    phase1 = await _phase1(u)
    resent = await _resume(u, phase1)
    await _complete(u, phase1, resent)
    await _share_and_download(u, phase1.file_id)
    growth, child = _peak_rss() - rss0, _peak_rss(resource.RUSAGE_CHILDREN)
    u.n.say(f"peak RSS: the killed client process {megabytes(child)}; this process grew {megabytes(growth)}")
    u.n.check(
        "the clients' memory stays flat",
        growth < FLAT and child < FLAT * 4,
        f"killed client {megabytes(child)} peak, resuming client +{megabytes(growth)}, "
        f"for a {megabytes(u.plan.size)} file",
    )


async def _phase1(u: Upload) -> Interrupted:
    job = Job(u.api.base_url, u.sender.token, str(u.path), u.plan.size, u.plan.chunk_size, u.plan.concurrency, u.wait_s)
    u.n.say(
        f"phase 1: a client process uploads, {u.plan.concurrency} chunks in flight; the demo SIGKILLs it once "
        f"{u.plan.interrupt_at:.0%} of the chunks are acknowledged"
    )
    seen = await asyncio.to_thread(interrupted_upload, job, u.plan.interrupt_at, u.wait_s)
    u.n.say(f"  initiated {seen.file_id}: {seen.total} chunks of {seen.chunk_size:,} bytes")
    f = u.figures
    f.phase1_bytes, f.phase1_s = _bytes(seen.acked, seen), seen.t_killed - seen.t_initiate
    u.n.say(
        f"  SIGKILLed the client {f.phase1_s:.2f} s after its initiate: {chunks(seen.acked)} acknowledged "
        f"({megabytes(f.phase1_bytes)}, {rate(f.phase1_bytes, f.phase1_s)}), {chunks(seen.in_flight)} in flight "
        f"{sorted(seen.in_flight)}, {seen.total - len(seen.started)} never started"
    )
    u.n.check(
        "the first client is killed mid-upload",
        seen.killed and not seen.finished and 0 < len(seen.acked) < seen.total,
        f"{len(seen.acked)}/{seen.total} chunks acknowledged, {rate(f.phase1_bytes, f.phase1_s)}",
    )
    return seen


async def _resume(u: Upload, seen: Interrupted) -> list[int]:
    """A fresh client: asks what is missing, sends only that. The chunks it sent."""
    f = u.figures
    async with httpx.AsyncClient(base_url=u.api.base_url, timeout=_timeout(u.wait_s), trust_env=False) as http:
        t0 = time.monotonic()
        f.gap_s = t0 - seen.t_killed
        r = await http.get(f"/v1/files/{seen.file_id}", headers=u.sender.headers)
        if r.status_code != 200:
            raise DemoFailure(f"GET /v1/files/{seen.file_id}", f"answered {r.status_code}: {r.text[:200]}")
        state = r.json()
        missing: list[int] = state["missing_chunks"]
        received = set(range(seen.total)) - set(missing)
        u.n.say(
            f"phase 2: a fresh client asks GET /v1/files/{{id}} ({ms(time.monotonic() - t0)}): status "
            f"{state['status']}, {chunks(received)} received, {len(missing)} missing"
        )
        lost = sorted(seen.acked - received)
        u.n.check("the server kept every chunk it acknowledged", not lost, f"lost: {lost}" if lost else "none lost")
        t1 = time.monotonic()
        f.resume_bytes = await put_chunks(
            http, u.sender.token, u.path, seen.file_id, missing, seen.chunk_size, u.plan.size, u.plan.concurrency
        )
        took, f.resume_s = time.monotonic() - t1, time.monotonic() - t0
    again = sorted(set(missing) & seen.started)
    u.n.say(
        f"  sent the {chunks(missing, 'missing chunk')} ({megabytes(f.resume_bytes)}) in {took:.2f} s = "
        f"{rate(f.resume_bytes, took)}; {chunks(again)} of them had been sent before, in flight at the kill: {again}"
    )
    u.n.check(
        "the resume re-sent only missing chunks",
        set(again) <= seen.in_flight,
        f"re-sent {chunks(again)} = {megabytes(_bytes(again, seen))}, "
        f"at most the {len(seen.in_flight)} in flight = {megabytes(_bytes(seen.in_flight, seen))}",
    )
    return missing


async def _complete(u: Upload, seen: Interrupted, resent: list[int]) -> None:
    body = {"checksum": f"sha256:{u.sha256}"}
    t0 = time.monotonic()
    # Completing hashes the whole file when its chunks came out of order: seconds per GB on a busy machine.
    done = await u.api.call(
        "POST", f"/v1/files/{seen.file_id}/complete", user=u.sender, json=body, timeout=_timeout(u.wait_s)
    )
    f = u.figures
    f.complete_s = time.monotonic() - t0
    u.n.say(
        f"  POST /v1/files/{{id}}/complete with sha256:{u.sha256[:16]}...: {done['status']} in {f.complete_s:.2f} s"
    )
    u.n.say(
        f"  chunks sent: {len(seen.acked)} acknowledged (+{len(seen.in_flight)} in flight) before the kill, "
        f"{len(resent)} after; phase 1 {rate(f.phase1_bytes, f.phase1_s)}, resume {rate(f.resume_bytes, f.resume_s)}, "
        f"{f.total_s:.2f} s from initiate to completed = {rate(u.plan.size, f.total_s)} overall"
    )
    u.n.check(
        "completed with the SHA-256 checksum",
        done["status"] == "completed" and done.get("checksum") == body["checksum"],
        f"complete {f.complete_s:.2f} s; initiate to completed {f.total_s:.1f} s",
    )


async def _share_and_download(u: Upload, file_id: str) -> None:
    conversation = await u.api.call(
        "POST", "/v1/conversations", user=u.sender, json={"type": "private", "members": [u.receiver.username]},
        expect=(201,),
    )  # fmt: skip
    ws, _ = await Socket.open(u.api, u.receiver, "the receiver", u.wait_s)
    try:
        t0 = time.monotonic()
        payload = {"type": "file", "file_id": file_id, "caption": "the demo's file"}
        await u.api.call(
            "POST", "/v1/messages", user=u.sender, expect=(202,),
            json={"conversation_id": conversation["conversation_id"], "payload": payload},
        )  # fmt: skip
        frame = await ws.wait(
            "the receiver's socket announces the file",
            lambda f: f["type"] == "message.created" and f["payload"].get("file_id") == file_id,
            u.wait_s,
        )
    finally:
        await ws.close()
    shown = frame.body["payload"]
    u.n.say(f"the receiver's socket: message.created, file {shown['filename']!r}, {shown['size']:,} bytes")
    u.n.check("the receiver is told of the file", shown["size"] == u.plan.size, f"{ms(frame.at - t0)} after the POST")
    link = await u.api.call("GET", f"/v1/files/{file_id}/download", user=u.receiver)
    left = datetime.fromisoformat(link["expires_at"]) - datetime.now().astimezone()
    u.n.say(f"the receiver's download link expires at {link['expires_at']} (in {left.total_seconds() / 60:.0f} min)")
    got, n, took = await _download(link["download_url"], u.wait_s)
    u.n.say(f"downloaded {n:,} bytes in {took:.2f} s = {rate(n, took)}, SHA-256 {got}")
    u.n.check(
        "the download's SHA-256 matches",
        got == u.sha256 and n == u.plan.size and link.get("checksum") == f"sha256:{u.sha256}",
        f"{rate(n, took)}",
    )


async def _download(url: str, wait_s: float) -> tuple[str, int, float]:
    """Stream the link (it is the permission: no bearer token) into a SHA-256; digest, length, seconds."""
    digest = hashlib.sha256()
    n = 0
    t0 = time.monotonic()
    async with httpx.AsyncClient(timeout=_timeout(wait_s), trust_env=False) as http, http.stream("GET", url) as r:
        if r.status_code != 200:
            raise DemoFailure("the download link works", f"answered {r.status_code}")
        async for block in r.aiter_raw(BLOCK):
            digest.update(block)
            n += len(block)
    return digest.hexdigest(), n, time.monotonic() - t0


def _bytes(chunks: Iterable[int], seen: Interrupted) -> int:
    """The bytes of ``chunks`` (the last chunk is the rest of the file)."""
    return sum(min(seen.chunk_size, seen.size - i * seen.chunk_size) for i in chunks)


def chunks(indexes: Iterable[int], noun: str = "chunk") -> str:
    count = len(list(indexes))
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _peak_rss(who: int = resource.RUSAGE_SELF) -> int:
    """The peak RSS so far of this process (or of its largest child waited for), in bytes: Linux counts KiB."""
    return resource.getrusage(who).ru_maxrss * 1024


def _client_main() -> None:
    """The client process: the job on stdin, reports to the pipe whose descriptor is the first argument."""
    job = Job(**json.loads(sys.stdin.read()))
    client_process(Connection(int(sys.argv[1]), readable=False), job)


if __name__ == "__main__":
    _client_main()
