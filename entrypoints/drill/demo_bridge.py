"""Scenario ``bridge``: a WhatsApp person and an Instagram person talk through one Chat4All conversation.

How they end up in one conversation: ``POST /v1/conversations`` takes addresses as members, and an address no
user has linked becomes a *contact* reached on its own channel. The caller is always a member, so the
conversation is a group of three: a Chat4All user (the demo's "agent", which watches it on its WebSocket), the
WhatsApp contact and the Instagram contact.

How the people's messages find it: an inbound message goes to the conversation of the message it replies to,
else to the one its sender's address is *bound* to (the last conversation that sent to it, or that it wrote
in), else to a private conversation with the channel's inbox owner (``CHAT4ALL_INBOX_OWNER``), else it is
dropped as ``unrouted``. `chat4all up` sets no inbox owner by default, and creating a conversation binds no
address, so the agent first says hello: once each platform has accepted that welcome, both addresses are bound
to the group, and the WhatsApp person can write in without replying to anything. The Instagram person then
answers with the platform's reply context (``reply_to``), the other routing path. The demo needs no inbox owner.

Statuses: ``GET /v1/messages/{id}/status`` shows every delivery only to the message's sender, and a recipient
only its own; a message a contact wrote has no Chat4All sender to ask, so the platform deliveries of the
people's messages are read from PostgreSQL (``deliveries``, ``delivery_events``), the one check that needs it.
The sandbox sends read receipts only with ``auto_read``: the demo turns it on and restores the sandbox's
settings afterwards.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime
from typing import Any

import attrs
import psycopg

from entrypoints.drill.demo_client import Api, DemoFailure, Sandbox, Socket, User, ms, poll
from entrypoints.drill.demo_report import Narrator

PLATFORM = {"whatsapp": "WhatsApp", "instagram": "Instagram"}


def short(platform_id: str) -> str:
    """Instagram's message ids run to 120 characters: enough of one to recognise it."""
    return platform_id if len(platform_id) <= 28 else f"{platform_id[:24]}..."


@attrs.frozen
class Step:
    """One entry of a delivery's history as PostgreSQL has it."""

    status: str
    at: datetime
    detail: str | None


@attrs.define
class Bridge:
    api: Api
    sandbox: Sandbox
    database_url: str
    n: Narrator
    wait_s: float
    agent: User
    agent_ws: Socket
    conversation_id: str
    number: str
    """The WhatsApp person's number, E.164."""
    igsid: str
    """The Instagram person's Instagram-scoped id."""


async def run(api: Api, sandbox: Sandbox, database_url: str, n: Narrator, wait_s: float) -> None:
    previous = await sandbox.settings()
    await sandbox.settings(auto_deliver=True, auto_read=True)
    n.say(f"sandbox settings were {_settings(previous)}; auto_read on for the demo, so that the people read")
    try:
        await _with_agent(api, sandbox, database_url, n, wait_s)
    except DemoFailure as e:  # told here, so that it reads before the clean-up below
        n.check(e.check, False, e.detail)
    finally:
        restored = await sandbox.settings(**previous)
        n.check("the sandbox's settings are restored", restored == previous, _settings(restored))


def _settings(s: dict[str, Any]) -> str:
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in s.items())


async def _with_agent(api: Api, sandbox: Sandbox, database_url: str, n: Narrator, wait_s: float) -> None:
    agent = await api.register("demo-agent")
    agent_ws, _ = await Socket.open(api, agent, "the agent", wait_s)
    try:
        number = f"+55119{uuid.uuid4().int % 10**8:08d}"
        igsid = f"17841{uuid.uuid4().int % 10**11:011d}"
        members = [f"whatsapp:{number}", f"instagram:{igsid}"]
        created = await api.call(
            "POST", "/v1/conversations", user=agent, json={"type": "group", "members": members}, expect=(201,)
        )
        n.say(
            f"agent {agent.username} created group {created['conversation_id']} with the contacts "
            f"whatsapp:{number} (a WhatsApp person) and instagram:{igsid} (an Instagram person)"
        )
        b = Bridge(api, sandbox, database_url, n, wait_s, agent, agent_ws, created["conversation_id"], number, igsid)
        await _welcome(b)
        ig_copy = await _whatsapp_to_instagram(b)
        await _instagram_to_whatsapp(b, ig_copy)
        await _history(b)
    finally:
        await agent_ws.close()


async def _welcome(b: Bridge) -> None:
    """The agent's hello binds both addresses to the group: where the people's messages will go."""
    text = "Welcome! This conversation joins WhatsApp and Instagram."
    t0 = time.monotonic()
    accepted = await b.api.send_text(b.agent, b.conversation_id, text)
    wa = await _arrival(b, "whatsapp", b.number, text, "the WhatsApp person gets the welcome")
    t_wa = time.monotonic()
    ig = await _arrival(b, "instagram", b.igsid, text, "the Instagram person gets the welcome")
    t_ig = time.monotonic()
    b.n.say(
        f"the agent's welcome reached WhatsApp as {short(wa['platform_message_id'])} and Instagram as "
        f"{short(ig['platform_message_id'])}"
    )

    async def handed_over() -> bool | None:
        status = await b.api.call("GET", f"/v1/messages/{accepted['message_id']}/status", user=b.agent)
        details = " ".join(h.get("detail") or "" for h in status["history"])
        return True if all(copy["platform_message_id"] in details for copy in (wa, ig)) else None

    # The hand-over's history entry (with the platform's id) commits with the binding: from then on the people's
    # messages find the group.
    await poll("the welcome's hand-overs are recorded", handed_over, b.wait_s)
    b.n.check(
        "the welcome reaches both people (binds their addresses)",
        True,
        f"WhatsApp {ms(t_wa - t0)}, Instagram {ms(t_ig - t0)}",
    )


async def _whatsapp_to_instagram(b: Bridge) -> dict[str, Any]:
    """The WhatsApp person writes; the Instagram person gets it and reads it. Returns Instagram's copy."""
    text = "Oi! Maria here, writing on WhatsApp. Can you read me on Instagram?"
    message_id, t0 = await _person_writes(b, "whatsapp", b.number, text, name="Maria")
    copy = await _arrival(b, "instagram", b.igsid, text, "the Instagram person gets it")
    t_ig = time.monotonic()
    b.n.say(f"Instagram: {b.igsid} got it as {short(copy['platform_message_id'])}")
    b.n.check("the WhatsApp message reaches the Instagram person", True, f"{ms(t_ig - t0)} after Maria wrote")
    await _api_view(b, message_id)
    created, steps, t_read = await _until_read(b, message_id, "instagram")
    await _receipt_hooks(b, "instagram", copy["platform_message_id"], created)
    path = _path(steps)
    b.n.check(
        "Instagram delivery: SENT, then READ from messaging_seen",
        path[0] == "SENT" and path[-1] == "READ",
        f"{' -> '.join(path)}; READ seen {ms(t_read - t0)} after Maria wrote",
    )
    return copy


async def _instagram_to_whatsapp(b: Bridge, replied: dict[str, Any]) -> None:
    """The Instagram person answers (a reply); the WhatsApp person gets it, with WhatsApp's callbacks applied."""
    text = "Yes! João here, on Instagram. Loud and clear."
    message_id, t0 = await _person_writes(b, "instagram", b.igsid, text, reply_to=replied["platform_message_id"])
    copy = await _arrival(b, "whatsapp", b.number, text, "the WhatsApp person gets the answer")
    t_wa = time.monotonic()
    b.n.say(f"WhatsApp: {b.number} got it as {short(copy['platform_message_id'])}")
    b.n.check("the Instagram answer reaches the WhatsApp person", True, f"{ms(t_wa - t0)} after João wrote")
    created, steps, t_read = await _until_read(b, message_id, "whatsapp")
    await _receipt_hooks(b, "whatsapp", copy["platform_message_id"], created)
    path = _path(steps)
    b.n.check(
        "WhatsApp delivery: SENT, DELIVERED, READ from the callbacks",
        path == ["SENT", "DELIVERED", "READ"],
        f"{' -> '.join(path)}; READ seen {ms(t_read - t0)} after João wrote",
    )


def _path(steps: list[Step]) -> list[str]:
    """The statuses a delivery went through (the hand-over adds a second SENT, with the platform's id)."""
    return list(dict.fromkeys(s.status for s in steps))


async def _person_writes(b: Bridge, channel: str, sender: str, text: str, **extra: Any) -> tuple[str, float]:
    """``sender`` writes on ``channel`` through the sandbox; the message id in Chat4All and when they wrote."""
    t0 = time.monotonic()
    answer = await b.sandbox.write(channel, sender, text, **extra)
    took = time.monotonic() - t0
    via = f" (a reply to {short(extra['reply_to'])})" if "reply_to" in extra else ""
    b.n.say(f"the {PLATFORM[channel]} person {sender} writes {text!r}{via}")
    b.n.say(
        f"  the sandbox POSTs /webhooks/{channel} signed with X-Hub-Signature-256 "
        f"({short(answer['platform_message_id'])}); Chat4All answered {answer.get('webhook_status')}"
    )
    b.n.check(
        f"Chat4All accepts the signed {PLATFORM[channel]} webhook",
        answer.get("webhook_status") == 200,
        f"answered in {ms(took)}",
    )
    address = f"{channel}:{sender}"
    frame = await b.agent_ws.wait(
        f"the {channel} message reaches the group",
        lambda f: f["type"] == "message.created" and f["conversation_id"] == b.conversation_id
        and f["payload"].get("text") == text,
        b.wait_s,
    )  # fmt: skip
    b.n.say(f"the agent's socket: message.created {frame.body['message_id']} in the group, from {address}")
    b.n.check(
        f"stored in the group, from the {PLATFORM[channel]} contact",
        frame.body["sender"] == {"kind": "contact", "address": address},
        f"{ms(frame.at - t0)} after they wrote",
    )
    return str(frame.body["message_id"]), t0


async def _arrival(b: Bridge, channel: str, to: str, text: str, check: str) -> dict[str, Any]:
    """The platform's copy of ``text`` for ``to``, once the sandbox has accepted it from Chat4All."""

    async def found() -> dict[str, Any] | None:
        return next((m for m in await b.sandbox.received(channel, to) if m.get("text") == text), None)

    return await poll(check, found, b.wait_s)


async def _api_view(b: Bridge, message_id: str) -> None:
    """What the API shows the agent: its own delivery only (see the module docstring)."""
    status = await b.api.call("GET", f"/v1/messages/{message_id}/status", user=b.agent)
    own = ", ".join(f"{d['channel']} {d['status']}" for d in status["deliveries"])
    b.n.say(
        f"GET /v1/messages/{message_id}/status as the agent: {own} (a recipient sees its own deliveries; the sender "
        "is a contact, so the platform deliveries are read from PostgreSQL)"
    )


async def _until_read(b: Bridge, message_id: str, channel: str) -> tuple[datetime, list[Step], float]:
    """When Chat4All accepted the message, its delivery's history once it is READ, and when that was seen
    (``time.monotonic()``).

    Each step is printed with its time after Chat4All accepted the message; a receipt's time is the platform's
    (WhatsApp's are whole seconds, and no step is stamped before the one it follows).
    """
    async with await psycopg.AsyncConnection.connect(b.database_url, autocommit=True) as db:

        async def read() -> tuple[datetime, list[Step]] | None:
            created, steps = await _history_of(db, message_id, channel)
            return (created, steps) if steps and steps[-1].status == "READ" else None

        created, steps = await poll(f"the {PLATFORM[channel]} delivery becomes READ", read, b.wait_s, interval=0.1)
        seen = time.monotonic()
    b.n.say(f"  the {PLATFORM[channel]} delivery's history (PostgreSQL), after Chat4All accepted the message:")
    for s in steps:
        detail = "  " + " ".join(short(word) for word in s.detail.split()) if s.detail else ""
        b.n.say(f"    {s.status:<9} +{ms((s.at - created).total_seconds())}{detail}")
    return created, steps, seen


async def _history_of(db: psycopg.AsyncConnection[Any], message_id: str, channel: str) -> tuple[datetime, list[Step]]:
    rows = await (
        await db.execute(
            "SELECT m.created_at, e.status, e.at, e.detail FROM messages m"
            " JOIN delivery_events e ON e.message_id = m.id"
            " WHERE m.id = %s AND e.channel = %s ORDER BY e.position",
            (message_id, channel),
        )
    ).fetchall()
    if not rows:
        return datetime.now().astimezone(), []
    return rows[0][0], [Step(status, at, detail) for _, status, at, detail in rows]


async def _receipt_hooks(b: Bridge, channel: str, platform_id: str, created: datetime) -> None:
    """The platform's receipts for ``platform_id`` as the sandbox sent them, with Chat4All's answers."""
    hooks = [h for h in await b.sandbox.webhooks(channel) if h["kind"] != "inbound" and platform_id in json.dumps(h)]
    told = ", ".join(f"{h['kind']} at +{_since(created, h['at'])}: {h['status'] or h['error']}" for h in hooks)
    b.n.say(
        f"  {PLATFORM[channel]}'s receipt webhooks for {short(platform_id)}, and Chat4All's answers: {told or 'none'}"
    )
    if not hooks or any(h["status"] != 200 for h in hooks):
        raise DemoFailure(
            f"{PLATFORM[channel]}'s receipts are accepted", f"the sandbox's webhook log: {told or 'none'}"
        )


def _since(start: datetime, iso: str) -> str:
    return ms((datetime.fromisoformat(iso) - start).total_seconds())


async def _history(b: Bridge) -> None:
    """The conversation as the agent's history shows it: the three messages in order, each from its channel."""
    page = await b.api.call("GET", f"/v1/conversations/{b.conversation_id}/messages", user=b.agent)
    lines = [f"{m['seq']}. {_who(m['from'])}: {m['payload'].get('text')!r}" for m in page["items"]]
    for line in lines:
        b.n.say(f"  history {line}")
    senders = [m["from"].get("address") or "agent" for m in page["items"]]
    expected = ["agent", f"whatsapp:{b.number}", f"instagram:{b.igsid}"]
    b.n.check("the group's history holds the three messages in order", senders == expected, f"{len(lines)} messages")


def _who(member: dict[str, Any]) -> str:
    return str(member.get("address") or member.get("username") or member.get("user_id"))
