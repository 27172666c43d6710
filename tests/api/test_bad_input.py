"""Bad input is a clear 4xx problem+json and changes nothing."""

from __future__ import annotations

import copy
import uuid

import pytest

from adapters.memory import InMemoryStore
from tests.api.conftest import Api

PROBLEM = "application/problem+json"


def _snapshot(store: InMemoryStore) -> object:
    return copy.deepcopy(store.state)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"{not json", "application/json"),
        (b'{"conversation_id": "x"', "application/json"),
        (b"\xff\xfe\x00garbage", "application/json"),
        (b'{"conversation_id": 5, "payload": {}}', "application/json"),
        (b'{"conversation_id": "not-a-uuid", "payload": {"type": "text", "text": "x"}}', "application/json"),
        (b'{"payload": {"type": "text", "text": "x"}}', "application/json"),
        (b"[]", "application/json"),
        (b'{"conversation_id": "00000000-0000-0000-0000-000000000000", "payload": []}', "application/json"),
    ],
)
async def test_malformed_send_is_400_and_stores_nothing(
    api: Api, store: InMemoryStore, body: bytes, content_type: str
) -> None:
    ana = await api.user("ana")
    before = _snapshot(store)
    r = await api.client.post("/v1/messages", content=body, headers={**ana["headers"], "Content-Type": content_type})
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    problem = r.json()
    assert {"type", "title", "status"} <= problem.keys() and problem["status"] == 400
    assert _snapshot(store) == before


@pytest.mark.parametrize(
    "payload",
    [
        {"type": "text", "text": ""},
        {"type": "text", "text": "x" * 4097},
        {"type": "text", "text": "   "},
        {"type": "video", "url": "x"},
        {"type": "file", "file_id": "nope"},
        {"type": "file", "file_id": str(uuid.uuid4())},
    ],
)
async def test_invalid_payload_is_422_and_stores_nothing(api: Api, store: InMemoryStore, payload: dict) -> None:
    ana, _ = await api.user("ana"), await api.user("bob")
    conv = await api.conversation(ana, "bob")
    before = _snapshot(store)
    r = await api.client.post(
        "/v1/messages", json={"conversation_id": conv["conversation_id"], "payload": payload}, headers=ana["headers"]
    )
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    assert r.json()["errors"][0]["field"].startswith("payload")
    assert _snapshot(store) == before


async def test_oversized_body_is_413(api: Api, store: InMemoryStore) -> None:
    ana = await api.user("ana")
    before = _snapshot(store)
    huge = b'{"conversation_id": "' + b"a" * (2 * 1024 * 1024) + b'"}'
    r = await api.client.post(
        "/v1/messages", content=huge, headers={**ana["headers"], "Content-Type": "application/json"}
    )
    assert r.status_code == 413 and r.headers["content-type"].startswith(PROBLEM)
    assert _snapshot(store) == before


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=201", "limit=abc", "after_seq=-1", "since=yesterday", "cursor=%%%", "cursor=Zm9vOjE"]
)
async def test_bad_history_queries_are_4xx(api: Api, query: str) -> None:
    ana, _ = await api.user("ana"), await api.user("bob")
    conv = await api.conversation(ana, "bob")
    r = await api.client.get(f"/v1/conversations/{conv['conversation_id']}/messages?{query}", headers=ana["headers"])
    assert 400 <= r.status_code < 500, r.text
    assert r.headers["content-type"].startswith(PROBLEM)


async def test_mass_assignment_is_ignored(api: Api) -> None:
    ana, bob = await api.user("ana"), await api.user("bob")
    conv = await api.conversation(ana, "bob")
    r = await api.send(ana, conv["conversation_id"], "hi", status="READ", seq=99, created_at="2000-01-01T00:00:00Z")
    assert r.status_code == 202 and r.json()["seq"] == 1
    status = await api.client.get(f"/v1/messages/{r.json()['message_id']}/status", headers=bob["headers"])
    assert status.json()["status"] == "SENT"


async def test_from_must_be_the_caller(api: Api) -> None:
    ana, _ = await api.user("ana"), await api.user("bob")
    conv = await api.conversation(ana, "bob")
    assert (await api.send(ana, conv["conversation_id"], "hi", **{"from": "ana"})).status_code == 202
    r = await api.send(ana, conv["conversation_id"], "hi", **{"from": "bob"})
    assert r.status_code == 403 and r.headers["content-type"].startswith(PROBLEM)


async def test_unknown_route_and_method_are_problems(api: Api) -> None:
    r = await api.client.get("/v1/nothing-here")
    assert r.status_code in {401, 404} and r.headers["content-type"].startswith(PROBLEM)
    r = await api.client.put("/health/live")
    assert r.status_code == 405 and r.headers["content-type"].startswith(PROBLEM)
