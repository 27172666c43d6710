"""Accepted data is never lost: kill -9 the HTTP runtime, and PostgreSQL itself, under load."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from typing import Any

import httpx
import psutil
import psycopg
import pytest

pytestmark = pytest.mark.e2e


def _setup(base_url: str) -> tuple[dict[str, str], str]:
    with httpx.Client(base_url=base_url, trust_env=False, timeout=10) as c:
        names = [f"dur{uuid.uuid4().hex[:8]}" for _ in range(2)]
        for n in names:
            assert c.post("/v1/users", json={"username": n, "password": "durable-pw"}).status_code == 201
        token = c.post("/auth/token", json={"username": names[0], "password": "durable-pw"}).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        conv = c.post("/v1/conversations", json={"type": "private", "members": [names[1]]}, headers=headers)
        return headers, conv.json()["conversation_id"]


async def _load(base_url: str, headers: dict[str, str], cid: str, seconds: float, kill: Any) -> tuple[list[str], int]:
    """Send for ``seconds``; call ``kill`` halfway. Returns the ids answered 202 and the count of failures."""
    accepted: list[str] = []
    failed = 0
    stop = time.monotonic() + seconds

    async def sender(c: httpx.AsyncClient) -> None:
        nonlocal failed
        while time.monotonic() < stop:
            mid = str(uuid.uuid4())
            try:
                r = await c.post(
                    "/v1/messages",
                    headers=headers,
                    json={"message_id": mid, "conversation_id": cid, "payload": {"type": "text", "text": "durable"}},
                )
            except httpx.HTTPError:
                failed += 1
                await asyncio.sleep(0.05)
                continue
            if r.status_code == 202:
                accepted.append(r.json()["message_id"])
            else:
                failed += 1
                await asyncio.sleep(0.05)

    async def killer() -> None:
        await asyncio.sleep(seconds / 3)
        kill()

    async with httpx.AsyncClient(base_url=base_url, trust_env=False, timeout=5) as c:
        await asyncio.gather(*(sender(c) for _ in range(8)), killer())
    return accepted, failed


def _stored(database_url: str, ids: list[str]) -> int:
    with psycopg.connect(database_url) as db:
        row = db.execute("select count(*) from messages where id = any(%s::uuid[])", (ids,)).fetchone()
    assert row is not None
    return int(row[0])


def test_killing_the_http_runtime_loses_no_accepted_message(launch_stack: Any) -> None:
    stack = launch_stack()
    headers, cid = _setup(stack.base_url)
    # Every API process (`up` runs CHAT4ALL_HTTP_WORKERS of them on the port): with one left, it would serve on.
    victims = {rt["name"]: rt["pid"] for rt in stack.state()["runtimes"] if rt["name"].startswith("http")}
    assert len(victims) == 2

    def kill() -> None:
        for victim in victims.values():
            for child in psutil.Process(victim).children(recursive=True):
                child.kill()
            os.kill(victim, signal.SIGKILL)

    def restarted() -> bool:
        return all(stack.runtime(name)["pid"] != pid for name, pid in victims.items()) and stack.ok("/health/ready")

    accepted, failed = asyncio.run(_load(stack.base_url, headers, cid, 9.0, kill))
    stack.wait_until(restarted, 30, "http restart")
    assert failed > 0, "the kill should have interrupted some requests"
    assert len(accepted) > 10
    assert _stored(stack.database_url, accepted) == len(accepted)
    stack.stop()


def test_killing_postgres_loses_no_accepted_message(launch_stack: Any) -> None:
    stack = launch_stack()
    headers, cid = _setup(stack.base_url)
    postgres = stack.state()["postgres"]["pid"]

    accepted, failed = asyncio.run(_load(stack.base_url, headers, cid, 6.0, lambda: os.kill(postgres, signal.SIGKILL)))
    assert failed > 0, "requests after the kill must fail, not be accepted"
    assert len(accepted) > 5
    data_dir = stack.data_dir
    stack.process.send_signal(signal.SIGTERM)
    stack.process.wait(60)
    restarted = launch_stack(data_dir)
    assert _stored(restarted.database_url, accepted) == len(accepted)
    restarted.stop()
