"""The event pipeline in a real `chat4all up`: outbox relay -> Kafka -> router -> channel workers -> receipts.

The channel workers serve the platforms with the loopback connector, which appends every send it
accepts to ``<data dir>/loopback-sends.jsonl``: that log is the platform side effect these tests count.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

pytestmark = pytest.mark.e2e


def _user(http: httpx.Client, prefix: str, **identity: str) -> dict[str, Any]:
    name = f"{prefix}{uuid.uuid4().hex[:8]}"
    assert http.post("/v1/users", json={"username": name, "password": "pipeline-pw"}).status_code == 201
    token = http.post("/auth/token", json={"username": name, "password": "pipeline-pw"}).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    if identity:
        linked = http.post("/v1/users/me/identities", json=identity, headers=headers)
        assert linked.status_code == 201, linked.text
    return {"username": name, "headers": headers}


def _conversation(http: httpx.Client, owner: dict[str, Any], *members: dict[str, Any]) -> str:
    kind = "private" if len(members) == 1 else "group"
    r = http.post(
        "/v1/conversations", json={"type": kind, "members": [m["username"] for m in members]}, headers=owner["headers"]
    )
    assert r.status_code == 201, r.text
    return str(r.json()["conversation_id"])


def _sends(data_dir: Path, conversations: set[str]) -> list[dict[str, Any]]:
    path = data_dir / "loopback-sends.jsonl"
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [line for line in lines if line["conversation_id"] in conversations]


def _platform_deliveries(database_url: str, conversations: list[str]) -> dict[str, int]:
    with psycopg.connect(database_url) as db:
        rows = db.execute(
            "select d.status, count(*) from deliveries d"
            " where d.conversation_id = any(%s::uuid[]) and d.channel <> 'internal' group by d.status",
            (conversations,),
        ).fetchall()
    return {str(status): int(n) for status, n in rows}


def _handed_over(database_url: str, conversations: list[str]) -> int:
    with psycopg.connect(database_url) as db:
        row = db.execute(
            "select count(*) from channel_sends s join deliveries d using (message_id, recipient_key, channel)"
            " where d.conversation_id = any(%s::uuid[]) and s.platform_message_id is not null",
            (conversations,),
        ).fetchone()
    assert row is not None
    return int(row[0])


def _assert_in_seq_order(sends: list[dict[str, Any]]) -> None:
    by_thread: dict[tuple[str, str, str], list[int]] = defaultdict(list)
    for s in sends:
        by_thread[(s["conversation_id"], s["recipient"], s["channel"])].append(s["seq"])
    for thread, seqs in by_thread.items():
        firsts = list(dict.fromkeys(seqs))  # a re-send may repeat a seq; the first sends must be in order
        assert firsts == sorted(firsts), f"{thread} was sent out of order: {seqs}"


def test_messages_reach_each_platform_once_in_order_and_end_delivered(stack: Any) -> None:
    http = stack.http
    ana = _user(http, "ana")
    bob = _user(http, "bob", channel="telegram", external_id=str(uuid.uuid4().int % 10**9))
    carla = _user(http, "carla", channel="whatsapp", external_id=f"+55119{uuid.uuid4().int % 10**8:08d}")
    group = _conversation(http, ana, bob, carla)
    pair = _conversation(http, ana, bob)
    sent = []
    for i in range(30):
        conv = group if i % 2 else pair
        r = http.post(
            "/v1/messages",
            json={"conversation_id": conv, "payload": {"type": "text", "text": f"m{i}"}},
            headers=ana["headers"],
        )
        assert r.status_code == 202, r.text
        sent.append(r.json()["message_id"])
    expected = 15 * 2 + 15  # group: telegram + whatsapp; private: telegram

    stack.wait_until(
        lambda: _platform_deliveries(stack.database_url, [group, pair]) == {"DELIVERED": expected},
        60,
        f"{expected} platform deliveries DELIVERED",
    )

    sends = _sends(stack.data_dir, {group, pair})
    counts = Counter((s["message_id"], s["recipient"], s["channel"]) for s in sends)
    assert len(counts) == expected
    assert max(counts.values()) == 1, "a delivery reached its platform twice"
    assert {s["channel"] for s in sends} == {"telegram", "whatsapp"}
    _assert_in_seq_order(sends)
    status = http.get(f"/v1/messages/{sent[1]}/status", headers=ana["headers"])
    telegram = [h for h in status.json()["history"] if h["channel"] == "telegram"]
    assert [h["status"] for h in telegram if h.get("detail") is None] == ["SENT", "DELIVERED"]
    assert any((h.get("detail") or "").startswith("telegram accepted it as telegram-") for h in telegram)


def test_killed_workers_lose_nothing_and_duplicate_nothing(stack: Any) -> None:
    """kill -9 the router, the channel workers and the relay while 2,000 messages flow."""
    http = stack.http
    ana = _user(http, "ana")
    people = [_user(http, "rcp", channel="telegram", external_id=str(uuid.uuid4().int % 10**9)) for _ in range(8)]
    conversations = [_conversation(http, ana, p) for p in people]
    total = 2000
    errors: list[str] = []

    def send_all(conv: str) -> None:
        with httpx.Client(base_url=stack.base_url, trust_env=False, timeout=10) as c:
            for i in range(total // len(conversations)):
                r = c.post(
                    "/v1/messages",
                    json={"conversation_id": conv, "payload": {"type": "text", "text": f"k{i}"}},
                    headers=ana["headers"],
                )
                if r.status_code != 202:
                    errors.append(r.text)

    senders = [threading.Thread(target=send_all, args=(c,)) for c in conversations]
    for t in senders:
        t.start()
    killed = []
    for name in ("router", "channels", "relay", "channels", "router"):
        time.sleep(0.8)
        pid = stack.runtime(name)["pid"]
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)
        stack.wait_until(lambda n=name, p=pid: stack.runtime(n)["pid"] not in (p, None), 30, f"{name} restarted")
    for t in senders:
        t.join()
    assert errors == []

    stack.wait_until(
        lambda: _handed_over(stack.database_url, conversations) == total, 120, f"all {total} deliveries handed over"
    )
    sends = _sends(stack.data_dir, set(conversations))
    counts = Counter((s["message_id"], s["recipient"]) for s in sends)
    assert len(counts) == total
    assert max(counts.values()) == 1, "a delivery reached its platform twice"
    _assert_in_seq_order(sends)
    assert len(killed) == 5


def _metric(stack: Any, line_start: str) -> float | None:
    for line in stack.http.get("/metrics").text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_a_platform_that_is_down_gets_its_messages_later_in_order(stack: Any) -> None:
    """Store and forward: the circuit opens, the deliveries wait (nothing fails), then all go out in order."""
    http = stack.http
    ana = _user(http, "ana")
    bob = _user(http, "bob", channel="telegram", external_id=str(uuid.uuid4().int % 10**9))
    conv = _conversation(http, ana, bob)
    faults = stack.data_dir / "loopback-faults.json"
    faults.write_text(json.dumps({"telegram": {"down": True}}))
    try:
        for i in range(20):
            r = http.post(
                "/v1/messages",
                json={"conversation_id": conv, "payload": {"type": "text", "text": f"w{i}"}},
                headers=ana["headers"],
            )
            assert r.status_code == 202
        stack.wait_until(
            lambda: _metric(stack, 'chat4all_circuit_open{channel="telegram"}') == 1.0, 30, "the circuit opens"
        )
        time.sleep(1.0)
        assert _handed_over(stack.database_url, [conv]) == 0
        assert _platform_deliveries(stack.database_url, [conv]) == {"SENT": 20}  # waiting, not failed
    finally:
        faults.unlink()

    stack.wait_until(lambda: _handed_over(stack.database_url, [conv]) == 20, 60, "all 20 handed over after recovery")
    sends = _sends(stack.data_dir, {conv})
    assert [s["seq"] for s in sends] == list(range(1, 21))
    stack.wait_until(
        lambda: _metric(stack, 'chat4all_circuit_open{channel="telegram"}') == 0.0, 30, "the circuit closes"
    )
