"""Telegram deliveries through the Bot API client, against a stand-in Bot API server on this machine."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
import pytest

pytestmark = pytest.mark.e2e

TOKEN = "424242:e2e-token"
BLOCKED_CHAT = "5550002"


class BotApi(ThreadingHTTPServer):
    """Answers sendMessage like Telegram: ok with a message_id per chat, or 403 for a chat that blocked the bot."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: BotApi

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.calls.append((self.path, body))
            sent_to_chat = sum(1 for _, b in self.server.calls if b.get("chat_id") == body.get("chat_id"))
        if self.path != f"/bot{TOKEN}/sendMessage":
            self._answer(404, {"ok": False, "error_code": 404, "description": "Not Found"})
        elif body.get("chat_id") == BLOCKED_CHAT:
            self._answer(403, {"ok": False, "error_code": 403, "description": "Forbidden: bot was blocked by the user"})
        else:
            self._answer(200, {"ok": True, "result": {"message_id": sent_to_chat, "text": body.get("text")}})

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def bot_api() -> Iterator[BotApi]:
    server = BotApi()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _user(http: Any, prefix: str, **identity: str) -> dict[str, Any]:
    name = f"{prefix}{uuid.uuid4().hex[:8]}"
    assert http.post("/v1/users", json={"username": name, "password": "telegram-pw"}).status_code == 201
    token = http.post("/auth/token", json={"username": name, "password": "telegram-pw"}).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    if identity:
        assert http.post("/v1/users/me/identities", json=identity, headers=headers).status_code == 201
    return {"username": name, "headers": headers}


def _telegram_deliveries(database_url: str, conversation: str) -> list[tuple[int, str, str | None, str | None]]:
    with psycopg.connect(database_url) as db:
        rows = db.execute(
            "select d.seq, d.status, d.error, s.platform_message_id from deliveries d"
            " left join channel_sends s using (message_id, recipient_key, channel)"
            " where d.conversation_id = %s and d.channel = 'telegram' order by d.seq",
            (conversation,),
        ).fetchall()
    return [(int(seq), str(status), error, platform_id) for seq, status, error, platform_id in rows]


def test_messages_go_out_through_the_bot_api_and_stay_sent(launch_stack: Any, bot_api: BotApi) -> None:
    stack = launch_stack(extra_env={"CHAT4ALL_TELEGRAM_BOT_TOKEN": TOKEN, "CHAT4ALL_TELEGRAM_API_BASE": bot_api.url})
    http = stack.http
    ana = _user(http, "ana")
    bruno = _user(http, "bruno", channel="telegram", external_id="5550001")
    carla = _user(http, "carla", channel="telegram", external_id=BLOCKED_CHAT)
    conversations = {}
    for other in (bruno, carla):
        r = http.post(
            "/v1/conversations", json={"type": "private", "members": [other["username"]]}, headers=ana["headers"]
        )
        assert r.status_code == 201, r.text
        conversations[other["username"]] = str(r.json()["conversation_id"])

    for n in range(3):
        for conv in conversations.values():
            payload = {"type": "text", "text": f"olá {n}"}
            sent = http.post("/v1/messages", json={"conversation_id": conv, "payload": payload}, headers=ana["headers"])
            assert sent.status_code == 202, sent.text

    to_bruno, to_carla = conversations[bruno["username"]], conversations[carla["username"]]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done = _telegram_deliveries(stack.database_url, to_bruno), _telegram_deliveries(stack.database_url, to_carla)
        if all(platform_id for *_, platform_id in done[0]) and all(status == "FAILED" for _, status, *_ in done[1]):
            break
        time.sleep(0.3)

    # Each text once, in order, to bruno's chat; Telegram numbers them 1, 2, 3 in that chat.
    to_chat = [body["text"] for path, body in bot_api.calls if body.get("chat_id") == "5550001"]
    assert to_chat == ["olá 0", "olá 1", "olá 2"]
    assert all(path == f"/bot{TOKEN}/sendMessage" for path, _ in bot_api.calls)
    # Bots get no receipts: handed over, the deliveries stay SENT.
    assert _telegram_deliveries(stack.database_url, to_bruno) == [
        (seq, "SENT", None, f"5550001:{seq}") for seq in (1, 2, 3)
    ]
    # A chat that blocked the bot: FAILED at once with Telegram's reason, and no retries.
    assert _telegram_deliveries(stack.database_url, to_carla) == [
        (seq, "FAILED", "telegram: Forbidden: bot was blocked by the user", None) for seq in (1, 2, 3)
    ]
    assert sum(1 for _, body in bot_api.calls if body.get("chat_id") == BLOCKED_CHAT) == 3
