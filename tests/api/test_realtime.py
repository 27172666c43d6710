"""The WebSocket, presence and sync in process (memory adapters; the push worker's step is run by hand)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from litestar import Litestar
from litestar.exceptions import WebSocketDisconnect
from litestar.testing import TestClient
from litestar.testing.websocket_test_session import WebSocketTestSession

from adapters.memory import InMemoryStore
from application import realtime as rt
from application import topics
from tests.api.conftest import build_app

pytestmark = pytest.mark.unit


class Chat:
    """A user story helper over the sync test client (the app, its sockets and its loop in one portal)."""

    def __init__(self, client: TestClient[Litestar], store: InMemoryStore) -> None:
        self.client = client
        self.store = store
        self.pushed = 0

    def user(self, name: str) -> dict[str, Any]:
        r = self.client.post("/v1/users", json={"username": name, "password": "correct horse"})
        assert r.status_code == 201, r.text
        t = self.client.post("/auth/token", json={"username": name, "password": "correct horse"})
        body = dict(r.json())
        body["token"] = t.json()["access_token"]
        body["headers"] = {"Authorization": f"Bearer {body['token']}"}
        return body

    def conversation(self, owner: dict[str, Any], *members: str) -> str:
        kind = "private" if len(members) == 1 else "group"
        r = self.client.post(
            "/v1/conversations", json={"type": kind, "members": list(members)}, headers=owner["headers"]
        )
        assert r.status_code == 201, r.text
        return str(r.json()["conversation_id"])

    def send(self, who: dict[str, Any], conversation_id: str, text: str) -> str:
        r = self.client.post(
            "/v1/messages",
            json={"conversation_id": conversation_id, "payload": {"type": "text", "text": text}},
            headers=who["headers"],
        )
        assert r.status_code == 202, r.text
        return str(r.json()["message_id"])

    def socket(self, who: dict[str, Any]) -> WebSocketTestSession:
        return self.client.websocket_connect(f"/v1/ws?token={who['token']}")

    def push(self) -> int:
        """What the push worker does with the event log: here, with the outbox written since the last call."""
        events = [e for topic, _, e in self.store.state.outbox if topic in (topics.MESSAGES, topics.STATUS)]
        fresh, self.pushed = events[self.pushed :], len(events)
        realtime = self.client.app.state.realtime
        return int(self.client.blocking_portal.call(rt.push_events, realtime.deps.fanout, fresh))

    def run(self, fn: Any, *args: Any) -> Any:
        return self.client.blocking_portal.call(fn, *args)

    def status(self, who: dict[str, Any], message_id: str) -> dict[str, Any]:
        r = self.client.get(f"/v1/messages/{message_id}/status", headers=who["headers"])
        assert r.status_code == 200, r.text
        return dict(r.json())


def next_of(ws: WebSocketTestSession, kind: str, timeout: float = 5.0) -> dict[str, Any]:
    """The next frame of ``kind`` (others are skipped)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        frame = ws.receive_json(timeout=max(deadline - time.monotonic(), 0.01))
        if frame["type"] == kind:
            return dict(frame)
    raise AssertionError(f"no {kind} frame in {timeout}s")


def eventually(check: Any, timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.02)


@pytest.fixture
def store() -> InMemoryStore:
    return InMemoryStore()


@pytest.fixture
def chat(store: InMemoryStore) -> Iterator[Chat]:
    with TestClient(build_app(store, presence_ttl_s=0.5, ws_max_frame_bytes=2048)) as client:
        yield Chat(client, store)


def test_a_bad_token_closes_the_socket_with_1008(chat: Chat) -> None:
    for url in ("/v1/ws", "/v1/ws?token=not-a-token"):
        with chat.client.websocket_connect(url) as ws, pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json(timeout=5)
        assert closed.value.code == 1008


def test_connected_then_ping_pong_with_the_token_in_the_header(chat: Chat) -> None:
    ana = chat.user("ana")
    with chat.client.websocket_connect("/v1/ws", headers=ana["headers"]) as ws:
        hello = ws.receive_json(timeout=5)
        assert hello["type"] == "connected"
        assert hello["user_id"] == ana["user_id"]
        assert hello["cursor"]
        ws.send_json({"type": "ping", "id": "p1"})
        assert next_of(ws, "pong") == {"type": "pong", "id": "p1"}
        ws.send_json({"type": "dance"})
        assert next_of(ws, "error")["status"] == 400
        ws.send_text("not json")
        assert next_of(ws, "error")["detail"] == "frames are JSON objects"


def test_a_pushed_message_reaches_the_recipient_and_becomes_delivered(chat: Chat) -> None:
    ana, bob = chat.user("ana"), chat.user("bob")
    conv = chat.conversation(ana, "bob")
    with chat.socket(bob) as bob_ws, chat.socket(ana) as ana_ws:
        next_of(bob_ws, "connected")
        next_of(ana_ws, "connected")
        message_id = chat.send(ana, conv, "hello bob")
        assert chat.push() == 1
        frame = next_of(bob_ws, "message.created")
        assert frame["message_id"] == message_id
        assert frame["payload"] == {"type": "text", "text": "hello bob"}
        assert frame["sender"] == {"kind": "user", "user_id": ana["user_id"]}

        def delivered() -> bool:
            return chat.status(ana, message_id)["status"] == "DELIVERED"

        assert eventually(delivered)
        chat.push()  # the status event of that receipt
        status = next_of(ana_ws, "message.status")
        assert (status["message_id"], status["status"], status["channel"]) == (message_id, "DELIVERED", "internal")
        assert "sender" not in status

        bob_ws.send_json({"type": "read", "message_id": message_id, "id": 7})
        ack = next_of(bob_ws, "read.ok")
        assert (ack["id"], ack["message_id"]) == (7, message_id)
        chat.push()
        assert next_of(ana_ws, "message.status")["status"] == "READ"
        assert next_of(bob_ws, "message.status")["status"] == "READ"  # the reader's other clients learn it too


def test_reading_a_message_one_cannot_see_is_an_error_frame(chat: Chat) -> None:
    ana = chat.user("ana")
    with chat.socket(ana) as ws:
        next_of(ws, "connected")
        ws.send_json({"type": "read", "message_id": str(uuid.uuid4()), "id": "r"})
        error = next_of(ws, "error")
        assert (error["id"], error["status"]) == ("r", 404)
        ws.send_json({"type": "read", "message_id": "nope"})
        assert next_of(ws, "error")["status"] == 422


def test_typing_reaches_the_other_members_only(chat: Chat) -> None:
    ana, bob, cy = chat.user("ana"), chat.user("bob"), chat.user("cyd")
    conv = chat.conversation(ana, "bob")
    with chat.socket(bob) as bob_ws, chat.socket(cy) as cy_ws, chat.socket(ana) as ana_ws:
        for ws in (bob_ws, cy_ws, ana_ws):
            next_of(ws, "connected")
        ana_ws.send_json({"type": "typing", "conversation_id": conv})
        assert next_of(bob_ws, "typing") == {"type": "typing", "conversation_id": conv, "user_id": ana["user_id"]}
        cy_ws.send_json({"type": "typing", "conversation_id": conv, "id": 1})
        assert next_of(cy_ws, "error")["status"] == 404
        cy_ws.send_json({"type": "ping"})
        assert next_of(cy_ws, "pong") == {"type": "pong"}  # cy saw no typing frame before its pong


def test_presence_follows_sockets_and_heartbeats(chat: Chat) -> None:
    ana, bob, stranger = chat.user("ana"), chat.user("bob"), chat.user("zed")
    chat.conversation(ana, "bob")
    with chat.socket(ana) as ana_ws:
        next_of(ana_ws, "connected")
        with chat.socket(bob) as bob_ws:
            next_of(bob_ws, "connected")
            online = next_of(ana_ws, "presence")
            assert (online["user_id"], online["status"]) == (bob["user_id"], "online")
            r = chat.client.get("/v1/presence/bob", headers=ana["headers"])
            assert r.status_code == 200
            assert r.json()["status"] == "online"
        offline = next_of(ana_ws, "presence")
        assert (offline["user_id"], offline["status"]) == (bob["user_id"], "offline")
        assert offline["last_seen"]

        r = chat.client.post("/v1/presence/heartbeat", json={"status": "away"}, headers=bob["headers"])
        assert r.status_code == 200
        assert r.json()["status"] == "away"
        assert next_of(ana_ws, "presence")["status"] == "away"
        # silence past the time-to-live (0.5 s here): the API process notices by itself
        assert next_of(ana_ws, "presence")["status"] == "offline"
        assert chat.run(rt.expire_presence, chat.client.app.state.realtime.deps) == 0  # reported once
        assert chat.client.get(f"/v1/presence/{bob['user_id']}", headers=ana["headers"]).json()["status"] == "offline"

    assert chat.client.get("/v1/presence/bob", headers=stranger["headers"]).status_code == 404
    assert chat.client.get("/v1/presence/nobody", headers=ana["headers"]).status_code == 404
    bad = chat.client.post("/v1/presence/heartbeat", json={"status": "offline"}, headers=bob["headers"])
    assert bad.status_code == 422
    assert bad.headers["content-type"].startswith("application/problem+json")


def test_a_frame_over_the_limit_closes_with_1009(chat: Chat) -> None:
    ana = chat.user("ana")
    with chat.socket(ana) as ws:
        next_of(ws, "connected")
        ws.send_json({"type": "ping", "id": "x" * 4096})
        with pytest.raises(WebSocketDisconnect) as closed:
            next_of(ws, "never")
        assert closed.value.code == 1009


def test_sync_returns_what_was_missed_in_pages(chat: Chat) -> None:
    ana, bob = chat.user("ana"), chat.user("bob")
    conv = chat.conversation(ana, "bob")
    start = chat.client.get("/v1/sync", headers=bob["headers"]).json()
    assert (start["events"], start["has_more"]) == ([], False)
    sent = [chat.send(ana, conv, f"m{i}") for i in range(3)]

    first = chat.client.get("/v1/sync", params={"cursor": start["cursor"], "limit": 2}, headers=bob["headers"]).json()
    assert [e["message_id"] for e in first["events"]] == sent[:2]
    assert first["has_more"] is True
    rest = chat.client.get("/v1/sync", params={"cursor": first["cursor"], "limit": 2}, headers=bob["headers"]).json()
    assert [e["message_id"] for e in rest["events"]] == sent[2:]
    assert rest["has_more"] is False
    # Fetched by sync: bob's Chat4All deliveries are DELIVERED, and ana's sync shows those changes.
    assert all(chat.status(ana, m)["status"] == "DELIVERED" for m in sent)
    mine = chat.client.get("/v1/sync", params={"cursor": start["cursor"]}, headers=ana["headers"]).json()
    created = [e["message_id"] for e in mine["events"] if e["type"] == "message.created"]
    delivered = {
        e["message_id"] for e in mine["events"] if e["type"] == "message.status" and e["status"] == "DELIVERED"
    }
    assert created == sent
    assert delivered == set(sent)

    bad = chat.client.get("/v1/sync", params={"cursor": "garbage"}, headers=bob["headers"])
    assert bad.status_code == 422
