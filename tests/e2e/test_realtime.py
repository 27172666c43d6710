"""Real time against a real `chat4all up`: two API processes behind one port, Redis pub/sub, the push worker."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

pytestmark = pytest.mark.e2e


def _user(c: httpx.Client, prefix: str) -> dict[str, Any]:
    name = f"{prefix}{uuid.uuid4().hex[:8]}"
    created = c.post("/v1/users", json={"username": name, "password": "e2e-password"})
    assert created.status_code == 201, created.text
    token = c.post("/auth/token", data={"username": name, "password": "e2e-password"})
    assert token.status_code == 200, token.text
    access = token.json()["access_token"]
    return {**created.json(), "token": access, "headers": {"Authorization": f"Bearer {access}"}}


def _ws_url(stack: Any, token: str) -> str:
    return f"{stack.base_url.replace('http', 'ws', 1)}/v1/ws?token={token}"


async def _frame(ws: ClientConnection, kind: str, within: float = 10.0) -> dict[str, Any]:
    """The next frame of ``kind`` (others are skipped)."""
    deadline = time.monotonic() + within
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {kind} frame within {within}s")
        frame = json.loads(await asyncio.wait_for(ws.recv(), left))
        if frame["type"] == kind:
            return dict(frame)


async def _sockets_on_two_processes(stack: Any, token: str, tries: int = 40) -> list[tuple[ClientConnection, str]]:
    """Open sockets for one user until two of them are held by different API processes; close the rest."""
    kept: dict[str, ClientConnection] = {}
    for _ in range(tries):
        ws = await connect(_ws_url(stack, token))
        hello = await _frame(ws, "connected")
        if hello["instance"] in kept:
            await ws.close()
        else:
            kept[hello["instance"]] = ws
        if len(kept) == 2:
            return [(ws, instance) for instance, ws in kept.items()]
    raise AssertionError(f"every socket landed on the same API process: {list(kept)}")


def _private(http: httpx.Client, owner: dict[str, Any], other: dict[str, Any]) -> httpx.Response:
    body = {"type": "private", "members": [other["username"]]}
    return http.post("/v1/conversations", json=body, headers=owner["headers"])


@pytest.fixture
def http(stack: Any) -> Any:
    with httpx.Client(base_url=stack.base_url, trust_env=False, timeout=10) as c:
        yield c


def test_events_reach_sockets_on_both_api_processes(stack: Any, http: httpx.Client) -> None:
    ana, bob = _user(http, "ana"), _user(http, "bob")
    conv = http.post(
        "/v1/conversations", json={"type": "private", "members": [bob["username"]]}, headers=ana["headers"]
    )
    assert conv.status_code == 201, conv.text
    conversation_id = conv.json()["conversation_id"]

    async def scenario() -> None:
        sockets = await _sockets_on_two_processes(stack, bob["token"])
        async with connect(_ws_url(stack, ana["token"])) as ana_ws:
            await _frame(ana_ws, "connected")
            try:
                # typing: from ana's process to bob's sockets on both processes, through Redis
                await ana_ws.send(json.dumps({"type": "typing", "conversation_id": conversation_id}))
                for ws, _ in sockets:
                    assert (await _frame(ws, "typing"))["user_id"] == ana["user_id"]

                started = time.monotonic()
                sent = await asyncio.to_thread(
                    http.post,
                    "/v1/messages",
                    json={"conversation_id": conversation_id, "payload": {"type": "text", "text": "hi bob"}},
                    headers=ana["headers"],
                )
                assert sent.status_code == 202, sent.text
                message_id = sent.json()["message_id"]
                for ws, _ in sockets:
                    frame = await _frame(ws, "message.created")
                    assert (frame["message_id"], frame["payload"]["text"]) == (message_id, "hi bob")
                assert time.monotonic() - started < 5  # pushed, not found by a later sweep

                # pushed means delivered: ana's socket hears of it, and the status says so
                status = await _frame(ana_ws, "message.status")
                assert (status["message_id"], status["channel"]) == (message_id, "internal")
                assert status["status"] == "DELIVERED"
                got = await asyncio.to_thread(http.get, f"/v1/messages/{message_id}/status", headers=ana["headers"])
                assert got.json()["status"] == "DELIVERED"

                # a read over one socket: ana hears READ
                first = sockets[0][0]
                await first.send(json.dumps({"type": "read", "message_id": message_id, "id": 1}))
                assert (await _frame(first, "read.ok"))["id"] == 1
                while (await _frame(ana_ws, "message.status"))["status"] != "READ":
                    pass
            finally:
                for ws, _ in sockets:
                    await ws.close()

    asyncio.run(scenario())


def test_presence_follows_a_socket_across_processes(stack: Any, http: httpx.Client) -> None:
    ana, bob = _user(http, "ana"), _user(http, "bob")
    conv = http.post(
        "/v1/conversations", json={"type": "private", "members": [bob["username"]]}, headers=ana["headers"]
    )
    assert conv.status_code == 201

    async def scenario() -> None:
        async with connect(_ws_url(stack, ana["token"])) as ana_ws:
            await _frame(ana_ws, "connected")
            before = await asyncio.to_thread(http.get, f"/v1/presence/{bob['username']}", headers=ana["headers"])
            assert before.json()["status"] == "offline"
            bob_ws = await connect(_ws_url(stack, bob["token"]))
            await _frame(bob_ws, "connected")
            online = await _frame(ana_ws, "presence")
            assert (online["user_id"], online["status"]) == (bob["user_id"], "online")
            now = await asyncio.to_thread(http.get, f"/v1/presence/{bob['user_id']}", headers=ana["headers"])
            assert now.json()["status"] == "online"
            await bob_ws.close()
            offline = await _frame(ana_ws, "presence")
            assert (offline["user_id"], offline["status"]) == (bob["user_id"], "offline")

    asyncio.run(scenario())


def test_a_bad_token_and_an_oversized_frame_close_the_socket(stack: Any, http: httpx.Client) -> None:
    ana = _user(http, "ana")

    async def scenario() -> None:
        async with connect(_ws_url(stack, "not-a-token")) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 1008
        async with connect(_ws_url(stack, ana["token"]), max_size=None) as ws:
            await _frame(ws, "connected")
            await ws.send(json.dumps({"type": "ping", "id": "x" * (70 * 1024)}))
            with pytest.raises(ConnectionClosed) as closed:
                await _frame(ws, "pong")
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 1009

    asyncio.run(scenario())


def test_sync_catches_a_client_up(stack: Any, http: httpx.Client) -> None:
    ana, bob = _user(http, "ana"), _user(http, "bob")
    conv = http.post(
        "/v1/conversations", json={"type": "private", "members": [bob["username"]]}, headers=ana["headers"]
    )
    conversation_id = conv.json()["conversation_id"]
    cursor = http.get("/v1/sync", headers=bob["headers"]).json()["cursor"]
    sent = []
    for i in range(5):
        r = http.post(
            "/v1/messages",
            json={"conversation_id": conversation_id, "payload": {"type": "text", "text": f"while away {i}"}},
            headers=ana["headers"],
        )
        sent.append(r.json()["message_id"])
    seen: list[str] = []
    while True:
        page = http.get("/v1/sync", params={"cursor": cursor, "limit": 2}, headers=bob["headers"]).json()
        seen += [e["message_id"] for e in page["events"] if e["type"] == "message.created"]
        cursor = page["cursor"]
        if not page["has_more"]:
            break
    assert seen == sent
