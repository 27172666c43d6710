"""WhatsApp and Messenger deliveries through Meta's Graph API, against a stand-in Graph server on this machine."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.e2e.platforms import FakePlatform, a_user, running

pytestmark = pytest.mark.e2e

PHONE_NUMBER_ID = "106540352242922"
WINDOW_CLOSED = "+5511999990002"  # its 24-hour window is closed: WhatsApp refuses free-form text


def _graph(path: str, headers: dict[str, str], body: dict[str, Any], n: int) -> tuple[int, dict[str, Any]]:
    if path == f"/v25.0/{PHONE_NUMBER_ID}/messages" and headers.get("authorization") == "Bearer wa-token":
        if body.get("to") == WINDOW_CLOSED.removeprefix("+"):
            error = {"message": "(#131047) Re-engagement message", "type": "OAuthException", "code": 131047}
            return 400, {"error": error}
        return 200, {"messaging_product": "whatsapp", "contacts": [], "messages": [{"id": f"wamid.{n}"}]}
    if path == "/v25.0/me/messages" and headers.get("authorization") == "Bearer page-token":
        return 200, {"recipient_id": body["recipient"]["id"], "message_id": f"m_{n}"}
    return 401, {"error": {"message": "Invalid OAuth access token", "type": "OAuthException", "code": 190}}


@pytest.fixture
def graph() -> Iterator[FakePlatform]:
    count = iter(range(1, 1_000_000))
    with running(lambda path, headers, body: _graph(path, headers, body, next(count))) as server:
        yield server


def _platform_deliveries(database_url: str, conversation: str) -> list[tuple[int, str, str, str | None, str | None]]:
    with psycopg.connect(database_url) as db:
        rows = db.execute(
            "select d.seq, d.channel, d.status, d.error, s.platform_message_id from deliveries d"
            " left join channel_sends s using (message_id, recipient_key, channel)"
            " where d.conversation_id = %s and d.channel <> 'internal' order by d.seq",
            (conversation,),
        ).fetchall()
    return [(int(seq), str(ch), str(status), error, pid) for seq, ch, status, error, pid in rows]


def test_whatsapp_and_messenger_deliveries_go_out_through_graph(launch_stack: Any, graph: FakePlatform) -> None:
    stack = launch_stack(
        extra_env={
            "CHAT4ALL_WHATSAPP_ACCESS_TOKEN": "wa-token",
            "CHAT4ALL_WHATSAPP_PHONE_NUMBER_ID": PHONE_NUMBER_ID,
            "CHAT4ALL_MESSENGER_PAGE_TOKEN": "page-token",
            "CHAT4ALL_GRAPH_API_BASE": graph.url,
        }
    )
    http = stack.http
    ana = a_user(http, "ana")
    people = {
        "bruno": a_user(http, "bruno", channel="whatsapp", external_id="+5511999990001"),
        "carla": a_user(http, "carla", channel="whatsapp", external_id=WINDOW_CLOSED),
        "dora": a_user(http, "dora", channel="messenger", external_id="2468013579"),
    }
    conversations = {}
    for name, person in people.items():
        r = http.post(
            "/v1/conversations", json={"type": "private", "members": [person["username"]]}, headers=ana["headers"]
        )
        assert r.status_code == 201, r.text
        conversations[name] = str(r.json()["conversation_id"])
    for n in range(2):
        for conv in conversations.values():
            payload = {"type": "text", "text": f"oi {n}"}
            sent = http.post("/v1/messages", json={"conversation_id": conv, "payload": payload}, headers=ana["headers"])
            assert sent.status_code == 202, sent.text

    def settled() -> dict[str, list[tuple[int, str, str, str | None, str | None]]]:
        return {name: _platform_deliveries(stack.database_url, conv) for name, conv in conversations.items()}

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        now = settled()
        if all(
            len(rows) == 2 and all(pid or status == "FAILED" for *_, status, _, pid in rows) for rows in now.values()
        ):
            break
        time.sleep(0.3)

    now = settled()
    assert [(seq, ch, status) for seq, ch, status, _, _ in now["bruno"]] == [
        (1, "whatsapp", "SENT"),
        (2, "whatsapp", "SENT"),
    ]
    assert all(pid and pid.startswith("wamid.") for *_, pid in now["bruno"])
    assert [(ch, status, error) for _, ch, status, error, _ in now["carla"]] == [
        ("whatsapp", "FAILED", "whatsapp: (#131047) Re-engagement message")
    ] * 2
    assert [(ch, status) for _, ch, status, _, _ in now["dora"]] == [("messenger", "SENT")] * 2
    assert all(pid and pid.startswith("m_") for *_, pid in now["dora"])

    to_bruno = [b for b in graph.bodies(f"/v25.0/{PHONE_NUMBER_ID}/messages") if b["to"] == "5511999990001"]
    assert [b["text"]["body"] for b in to_bruno] == ["oi 0", "oi 1"]
    assert all(b["biz_opaque_callback_data"].startswith("c4a:") for b in to_bruno)
    to_dora = graph.bodies("/v25.0/me/messages")
    assert [(b["recipient"], b["message"]["text"]) for b in to_dora] == [
        ({"id": "2468013579"}, "oi 0"),
        ({"id": "2468013579"}, "oi 1"),
    ]
    assert all(b["message"]["metadata"].startswith("c4a:") for b in to_dora)  # the key its echo carries back
