"""Scenario ``internal``: two Chat4All users in a private conversation, in real time over their WebSockets.

A sends a text over REST; B's socket gets ``message.created`` (pushing it makes B's ``internal`` delivery
DELIVERED), A's socket gets that ``message.status``; B reads it with a ``read`` frame and A's socket gets READ.
Every latency is measured at the frame's arrival, from the moment the causing call or frame left.
"""

from __future__ import annotations

import time
from typing import Any

from entrypoints.drill.demo_client import Api, DemoFailure, Socket, User, ms
from entrypoints.drill.demo_report import Narrator


async def run(api: Api, n: Narrator, wait_s: float) -> None:
    a = await api.register("demo-a")
    b = await api.register("demo-b")
    n.say(f"registered A = {a.username} and B = {b.username}")
    a_ws, a_hello = await Socket.open(api, a, "A", wait_s)
    b_ws, b_hello = await Socket.open(api, b, "B", wait_s)
    try:
        n.say(f"both sockets connected (A on API process {a_hello['instance']}, B on {b_hello['instance']})")
        await _exchange(api, n, wait_s, a, b, a_ws, b_ws)
    finally:
        await a_ws.close()
        await b_ws.close()


async def _exchange(api: Api, n: Narrator, wait_s: float, a: User, b: User, a_ws: Socket, b_ws: Socket) -> None:
    conversation = await api.call(
        "POST", "/v1/conversations", user=a, json={"type": "private", "members": [b.username]}, expect=(201,)
    )
    conversation_id = conversation["conversation_id"]
    n.say(f"A created the private conversation {conversation_id}")

    text = "Olá B! This is A, over Chat4All."
    t0 = time.monotonic()
    accepted = await api.send_text(a, conversation_id, text)
    message_id = accepted["message_id"]
    n.say(
        f"A POST /v1/messages {text!r}: 202 in {ms(time.monotonic() - t0)}, message {message_id}, seq {accepted['seq']}"
    )

    created = await b_ws.wait(
        "B's socket gets message.created",
        lambda f: f["type"] == "message.created" and f["message_id"] == message_id,
        wait_s,
    )
    got = created.body["payload"].get("text")
    n.say(f"B's socket: message.created {got!r} from user {created.body['sender'].get('user_id')}")
    n.check("B's socket gets message.created", got == text, f"{ms(created.at - t0)} after the POST")

    delivered = await a_ws.wait(
        "A's socket gets DELIVERED for B",
        lambda f: _status(f, message_id, "DELIVERED") and f["recipient"] == f"user:{b.user_id}",
        wait_s,
    )
    n.say(f"A's socket: message.status DELIVERED, channel {delivered.body['channel']}, recipient B")
    n.check(
        "A's socket gets DELIVERED for B (internal)",
        delivered.body["channel"] == "internal",
        f"{ms(delivered.at - t0)} after the POST",
    )

    t_read = await b_ws.send({"type": "read", "message_id": message_id, "id": "demo-read"})
    n.say("B sends a read frame for it")
    ok = await b_ws.wait("B's read is acknowledged", lambda f: f.get("id") == "demo-read", wait_s)
    if ok.body["type"] != "read.ok":
        raise DemoFailure("B's read is acknowledged", f"the socket answered {ok.body}")
    n.say(f"B's socket: read.ok at {ok.body['read_at']}")
    read = await a_ws.wait("A's socket gets READ", lambda f: _status(f, message_id, "READ"), wait_s)
    n.say(f"A's socket: message.status READ, channel {read.body['channel']}, recipient B")
    n.check("A's socket gets READ", True, f"{ms(read.at - t_read)} after B's read frame")

    status = await api.call("GET", f"/v1/messages/{message_id}/status", user=a)
    steps = " -> ".join(h["status"] for h in status["history"])
    n.say(f"A GET /v1/messages/{message_id}/status: {status['status']} ({steps})")
    n.check("the status API says READ", status["status"] == "READ", steps)


def _status(frame: dict[str, Any], message_id: str, status: str) -> bool:
    return bool(frame["type"] == "message.status" and frame["message_id"] == message_id and frame["status"] == status)
