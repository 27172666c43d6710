"""Telegram deliveries through the Bot API client, against a stand-in Bot API server on this machine."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.e2e.platforms import FakePlatform, a_user, running

pytestmark = pytest.mark.e2e

TOKEN = "424242:e2e-token"
BLOCKED_CHAT = "5550002"


def _bot_api(
    path: str, headers: dict[str, str], body: dict[str, Any], calls: list[dict[str, Any]]
) -> tuple[int, dict[str, Any]]:
    """Like Telegram: ok with a message_id per chat, or 403 for a chat that blocked the bot."""
    if path != f"/bot{TOKEN}/sendMessage":
        return 404, {"ok": False, "error_code": 404, "description": "Not Found"}
    if body.get("chat_id") == BLOCKED_CHAT:
        return 403, {"ok": False, "error_code": 403, "description": "Forbidden: bot was blocked by the user"}
    sent_to_chat = sum(1 for b in calls if b.get("chat_id") == body.get("chat_id"))
    return 200, {"ok": True, "result": {"message_id": sent_to_chat, "text": body.get("text")}}


@pytest.fixture
def bot_api() -> Iterator[FakePlatform]:
    calls: list[dict[str, Any]] = []

    def answer(path: str, headers: dict[str, str], body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        calls.append(body)
        return _bot_api(path, headers, body, calls)

    with running(answer) as server:
        yield server


def _telegram_deliveries(database_url: str, conversation: str) -> list[tuple[int, str, str | None, str | None]]:
    with psycopg.connect(database_url) as db:
        rows = db.execute(
            "select d.seq, d.status, d.error, s.platform_message_id from deliveries d"
            " left join channel_sends s using (message_id, recipient_key, channel)"
            " where d.conversation_id = %s and d.channel = 'telegram' order by d.seq",
            (conversation,),
        ).fetchall()
    return [(int(seq), str(status), error, platform_id) for seq, status, error, platform_id in rows]


def test_messages_go_out_through_the_bot_api_and_stay_sent(launch_stack: Any, bot_api: FakePlatform) -> None:
    stack = launch_stack(extra_env={"CHAT4ALL_TELEGRAM_BOT_TOKEN": TOKEN, "CHAT4ALL_TELEGRAM_API_BASE": bot_api.url})
    http = stack.http
    ana = a_user(http, "ana")
    bruno = a_user(http, "bruno", channel="telegram", external_id="5550001")
    carla = a_user(http, "carla", channel="telegram", external_id=BLOCKED_CHAT)
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
    to_chat = [body["text"] for body in bot_api.bodies() if body.get("chat_id") == "5550001"]
    assert to_chat == ["olá 0", "olá 1", "olá 2"]
    assert all(path == f"/bot{TOKEN}/sendMessage" for path, _, _ in bot_api.calls)
    # Bots get no receipts: handed over, the deliveries stay SENT.
    assert _telegram_deliveries(stack.database_url, to_bruno) == [
        (seq, "SENT", None, f"5550001:{seq}") for seq in (1, 2, 3)
    ]
    # A chat that blocked the bot: FAILED at once with Telegram's reason, and no retries.
    assert _telegram_deliveries(stack.database_url, to_carla) == [
        (seq, "FAILED", "telegram: Forbidden: bot was blocked by the user", None) for seq in (1, 2, 3)
    ]
    assert sum(1 for body in bot_api.bodies() if body.get("chat_id") == BLOCKED_CHAT) == 3
