"""A worker process started with CHAT4ALL_METRICS_PORT serves its own /metrics and /health/live there (as in a
container, where no other runtime shares its metrics)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from entrypoints.stack.postgres import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

REPO = Path(__file__).resolve().parents[2]


def test_a_worker_serves_its_metrics_and_liveness_on_the_metrics_port(
    postgres_url: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT4ALL_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(
        CHAT4ALL_DATABASE_URL=postgres_url,
        CHAT4ALL_KAFKA_BOOTSTRAP=kafka_bootstrap,
        CHAT4ALL_METRICS_PORT=str(port),
        CHAT4ALL_DATA_DIR=str(tmp_path),
        CHAT4ALL_LOG_FORMAT="console",
        PYTHONUNBUFFERED="1",
    )
    log = tmp_path / "router.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "entrypoints.workers", "router"], env=env, cwd=REPO, stdout=out, stderr=out
        )
    try:
        lag = 'chat4all_consumer_lag{group="chat4all-router",topic="chat.messages"}'
        text = ""
        deadline = time.monotonic() + 40
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False, timeout=5) as c:
            while lag not in text:  # the router reports its lag once it has joined its group and polled
                assert worker.poll() is None, log.read_text()
                assert time.monotonic() < deadline, f"no {lag} on /metrics:\n{text}\n{log.read_text()}"
                with contextlib.suppress(httpx.TransportError):  # not listening yet
                    text = c.get("/metrics").text
                time.sleep(0.2)
            live = c.get("/health/live")
        assert (live.status_code, live.json()) == (200, {"status": "ok"})
        assert "chat4all_messages_routed_total 0.0" in text
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            code = worker.wait(20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
            raise
    assert code == 0, log.read_text()
