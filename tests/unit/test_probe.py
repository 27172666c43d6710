"""entrypoints/probe.py: a process's own /metrics and /health/live on a port; and the workers' heartbeats."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter, values

from entrypoints.probe import Probe, serving
from entrypoints.settings import Settings
from entrypoints.workers.runner import Worker

PROBE_COUNTER = Counter("chat4all_test_probe_hits", "Counted by tests/unit/test_probe.py.")


@pytest.fixture
async def probe() -> AsyncIterator[Probe]:
    async with serving("127.0.0.1", 0) as running:
        assert running is not None
        yield running


def client(probe: Probe) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{probe.port}", trust_env=False, timeout=5)


async def test_metrics_shows_this_processs_registry(probe: Probe) -> None:
    PROBE_COUNTER.inc(3)
    async with client(probe) as c:
        r = await c.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=")
    (line,) = [line for line in r.text.splitlines() if line.startswith("chat4all_test_probe_hits_total ")]
    assert float(line.split()[1]) >= 3


async def test_live_answers_200_until_something_stalls(probe: Probe) -> None:
    async with client(probe) as c:
        live = await c.get("/health/live")
        probe.stalled = lambda: ["chat4all-router"]
        stalled = await c.get("/health/live")
        probe.stalled = list
        again = await c.get("/health/live")
        missing = await c.get("/nothing")
    assert (live.status_code, live.json()) == (200, {"status": "ok"})
    assert (stalled.status_code, stalled.json()) == (503, {"status": "stalled", "stalled": ["chat4all-router"]})
    assert again.status_code == 200
    assert missing.status_code == 404


async def test_it_closes_cleanly_and_frees_its_port() -> None:
    async with serving("127.0.0.1", 0) as probe:
        assert probe is not None and probe.port
        port = probe.port
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient(trust_env=False, timeout=2) as c:
            await c.get(f"http://127.0.0.1:{port}/health/live")
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))  # free again


async def test_no_port_serves_nothing() -> None:
    async with serving("127.0.0.1", None) as probe:
        assert probe is None


async def test_a_taken_port_fails_at_start() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError):
            async with serving("127.0.0.1", taken.getsockname()[1]):
                pass


async def test_metrics_reads_the_multiprocess_directory_when_there_is_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As under `chat4all up`: what another process wrote to PROMETHEUS_MULTIPROC_DIR is shown."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue(lambda: 4242))
    other = Counter("chat4all_test_other_process", "Counted by another process.", registry=CollectorRegistry())
    other.inc(7)
    assert (tmp_path / "counter_4242.db").exists()
    async with serving("127.0.0.1", 0) as probe:
        assert probe is not None
        async with client(probe) as c:
            text = (await c.get("/metrics")).text
    assert "chat4all_test_other_process_total 7.0" in text


def a_worker(**settings: Any) -> Worker:
    return Worker(settings=Settings(**settings), deps=cast(Any, None), bootstrap="localhost:9092")


async def test_a_worker_loop_that_does_not_come_round_in_time_is_stalled() -> None:
    w = a_worker(worker_stall_s=0.05)
    assert w.stalled() == []  # nothing running yet: live
    w.beat("chat4all-router")
    w.beat("sweeper", next_within=10.0)
    assert w.stalled() == []
    await asyncio.sleep(0.1)
    assert w.stalled() == ["chat4all-router"]  # the sweeper said it would come round within 10 s
    w.beat("chat4all-router")
    assert w.stalled() == []
    w.deadlines["sweeper"] = time.monotonic() - 1
    w.done("chat4all-router")
    assert w.stalled() == ["sweeper"]
    w.done("sweeper")
    assert w.stalled() == []


async def test_a_worker_stall_shows_on_its_probe(probe: Probe) -> None:
    w = a_worker(worker_stall_s=0.01)
    probe.stalled = w.stalled
    w.beat("chat4all-status")
    await asyncio.sleep(0.05)
    async with client(probe) as c:
        r = await c.get("/health/live")
    assert (r.status_code, r.json()["stalled"]) == (503, ["chat4all-status"])
