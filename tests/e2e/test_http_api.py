"""The HTTP API against a real `chat4all up`: PostgreSQL underneath, checked in the database."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
import psycopg
import pytest

pytestmark = pytest.mark.e2e

TABLES = ("users", "identities", "conversations", "messages", "deliveries", "delivery_events", "outbox")


def _counts(database_url: str) -> dict[str, int]:
    with psycopg.connect(database_url) as conn:
        return {t: conn.execute(f"select count(*) from {t}").fetchone()[0] for t in TABLES}  # type: ignore[index]


def _settled_counts(database_url: str, timeout: float = 30.0) -> dict[str, int]:
    """Row counts once the pipeline is idle (earlier messages' receipts still land in the tables)."""
    deadline = time.monotonic() + timeout
    previous = _counts(database_url)
    while time.monotonic() < deadline:
        time.sleep(1.0)
        current = _counts(database_url)
        if current == previous:
            return current
        previous = current
    raise AssertionError(f"the pipeline never went quiet within {timeout:.0f}s")


def _user(c: httpx.Client, prefix: str) -> dict[str, Any]:
    name = f"{prefix}{uuid.uuid4().hex[:8]}"
    created = c.post("/v1/users", json={"username": name, "password": "e2e-password"})
    assert created.status_code == 201, created.text
    token = c.post("/auth/token", data={"username": name, "password": "e2e-password"})
    assert token.status_code == 200, token.text
    return {**created.json(), "headers": {"Authorization": f"Bearer {token.json()['access_token']}"}}


@pytest.fixture
def http(stack: Any) -> httpx.Client:
    with httpx.Client(base_url=stack.base_url, trust_env=False, timeout=10) as c:
        yield c


def test_a_conversation_round_trip_is_stored(stack: Any, http: httpx.Client) -> None:
    ana, bob = _user(http, "ana"), _user(http, "bob")
    linked = http.post(
        "/v1/users/me/identities",
        json={"channel": "telegram", "external_id": str(uuid.uuid4().int % 10**9)},
        headers=bob["headers"],
    )
    assert linked.status_code == 201
    conv = http.post(
        "/v1/conversations", json={"type": "private", "members": [bob["username"]]}, headers=ana["headers"]
    ).json()
    cid = conv["conversation_id"]
    accepted = [
        http.post(
            "/v1/messages",
            json={"conversation_id": cid, "payload": {"type": "text", "text": f"m{i}"}},
            headers=ana["headers"],
        ).json()
        for i in range(3)
    ]
    assert [a["seq"] for a in accepted] == [1, 2, 3]
    history = http.get(f"/v1/conversations/{cid}/messages", headers=bob["headers"]).json()["items"]
    assert [m["payload"]["text"] for m in history] == ["m0", "m1", "m2"]
    read = http.post(f"/v1/messages/{accepted[1]['message_id']}/read", headers=bob["headers"])
    assert read.status_code == 200
    status = http.get(f"/v1/messages/{accepted[0]['message_id']}/status", headers=ana["headers"]).json()
    assert status["status"] == "READ"
    assert sorted(d["channel"] for d in status["deliveries"]) == ["internal", "telegram"]
    with psycopg.connect(stack.database_url) as db:
        rows = db.execute(
            "select m.seq, d.channel, d.status from messages m join deliveries d on d.message_id = m.id"
            " where m.conversation_id = %s and d.channel = 'internal' order by m.seq",
            (cid,),
        ).fetchall()
        events = db.execute(
            "select payload->>'type', count(*) from outbox where key = %s group by 1 order by 1", (cid,)
        ).fetchall()
    # (The telegram copies travel through the pipeline meanwhile: tests/e2e/test_pipeline.py follows them.)
    assert rows == [(1, "internal", "READ"), (2, "internal", "READ"), (3, "internal", "DELIVERED")]
    assert ("message.created", 3) in events


def test_concurrent_retries_store_a_message_once(stack: Any, http: httpx.Client) -> None:
    ana, bob = _user(http, "ana"), _user(http, "bob")
    cid = http.post(
        "/v1/conversations", json={"type": "private", "members": [bob["username"]]}, headers=ana["headers"]
    ).json()["conversation_id"]
    mid = str(uuid.uuid4())
    body = {"message_id": mid, "conversation_id": cid, "payload": {"type": "text", "text": "once"}}

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=stack.base_url, trust_env=False, timeout=30) as c:
            return list(
                await asyncio.gather(*(c.post("/v1/messages", json=body, headers=ana["headers"]) for _ in range(30)))
            )

    answers = asyncio.run(burst())
    assert {r.status_code for r in answers} == {202}
    assert len({r.text for r in answers}) == 1
    with psycopg.connect(stack.database_url) as db:
        assert db.execute("select count(*) from messages where id = %s", (mid,)).fetchone() == (1,)
        assert db.execute("select count(*) from outbox where payload->>'message_id' = %s", (mid,)).fetchone() == (1,)


def test_rejected_requests_change_nothing(stack: Any, http: httpx.Client) -> None:
    ana, bob, eve = _user(http, "ana"), _user(http, "bob"), _user(http, "eve")
    cid = http.post(
        "/v1/conversations", json={"type": "private", "members": [bob["username"]]}, headers=ana["headers"]
    ).json()["conversation_id"]
    before = _settled_counts(stack.database_url)
    bad = [
        http.post("/v1/messages", content=b"{nope", headers={**ana["headers"], "content-type": "application/json"}),
        http.post(
            "/v1/messages",
            json={"conversation_id": cid, "payload": {"type": "text", "text": "x" * 5000}},
            headers=ana["headers"],
        ),
        http.post(
            "/v1/messages",
            json={"conversation_id": cid, "payload": {"type": "text", "text": "a\u0000b"}},
            headers=ana["headers"],
        ),
        http.post(
            "/v1/messages",
            json={"conversation_id": cid, "payload": {"type": "text", "text": "hi"}},
            headers=eve["headers"],
        ),
        http.post(
            "/v1/messages",
            json={"conversation_id": str(uuid.uuid4()), "payload": {"type": "text", "text": "x"}},
            headers=ana["headers"],
        ),
        http.post(
            "/v1/messages",
            json={"conversation_id": cid, "payload": {"type": "text", "text": "x"}, "channels": ["whatsapp"]},
            headers=ana["headers"],
        ),
        http.post("/v1/conversations", json={"type": "group", "members": [bob["username"]]}, headers=ana["headers"]),
        http.post("/v1/users/me/identities", json={"channel": "fax", "external_id": "1"}, headers=ana["headers"]),
        http.post(
            "/v1/messages",
            content=b"{" + b" " * (2 * 1024 * 1024) + b"}",
            headers={**ana["headers"], "content-type": "application/json"},
        ),
        http.post("/v1/messages", json={"conversation_id": cid, "payload": {"type": "text", "text": "x"}}),
    ]
    assert [r.status_code for r in bad] == [400, 422, 422, 403, 404, 422, 422, 422, 413, 401]
    assert all(r.headers["content-type"].startswith("application/problem+json") for r in bad)
    assert _settled_counts(stack.database_url) == before
