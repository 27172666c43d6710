"""Real time: what clients are pushed, presence, typing, and the receipts pushes give.

Events reach users through the ``Fanout`` port; which process holds a user's sockets is the
adapter's business. Everything pushed can also be fetched (history, ``sync``), so a push that is
lost costs latency, never data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import attrs

from application.errors import NotFound
from application.events import emit_status
from application.ports import Clock, Fanout, Frame, PresenceStore, UnitOfWork
from application.views import PresenceView
from domain.channels import Channel
from domain.conversations import Participant
from domain.deliveries import DeliveryStatus
from domain.errors import BusinessRuleViolation
from domain.ids import ConversationId, MessageId, UserId
from domain.presence import PresenceStatus

HEARTBEAT = "heartbeat"
"""The presence source of ``POST /v1/presence/heartbeat`` (one per user, whichever client sends it)."""


@attrs.frozen(kw_only=True)
class RealtimeDeps:
    uow: Callable[[], UnitOfWork]
    clock: Clock
    presence: PresenceStore
    fanout: Fanout
    presence_ttl: timedelta = timedelta(seconds=60)


# --- what the event log's events become for clients ------------------------------------


def _user_of(key: object) -> UserId | None:
    prefix, _, rest = str(key).partition(":")
    if prefix != "user":
        return None
    try:
        return UserId(UUID(rest))
    except ValueError:
        return None


def _member(key: str) -> dict[str, str]:
    user = _user_of(key)
    return {"kind": "user", "user_id": str(user)} if user is not None else {"kind": "contact", "address": key}


def message_frame(event: Mapping[str, Any]) -> dict[str, Any]:
    """The ``message.created`` frame of a ``message.created`` event: the message, without its delivery plan."""
    return {
        "type": "message.created",
        "message_id": event["message_id"],
        "conversation_id": event["conversation_id"],
        "seq": event["seq"],
        "sender": _member(str(event["from"])),
        "payload": event["payload"],
        "metadata": event.get("metadata", {}),
        "created_at": event["created_at"],
    }


def frames_for(event: Mapping[str, Any]) -> list[tuple[Frame, list[UserId]]]:
    """Who is pushed what for one event of the log.

    - ``message.created``: the message, to each recipient with an ``internal`` delivery;
    - ``message.status``: the change, to the message's sender; a READ also to the reader's other clients.

    Anything else (or a malformed event) is nobody's business here.
    """
    try:
        match event.get("type"):
            case "message.created":
                users = [
                    u
                    for dl in event["deliveries"]
                    if dl.get("channel") == Channel.INTERNAL.value and (u := _user_of(dl.get("recipient"))) is not None
                ]
                return [(message_frame(event), users)] if users else []
            case "message.status":
                users = [u] if (u := _user_of(event.get("sender"))) is not None else []
                reader = _user_of(event.get("recipient"))
                if event.get("status") == DeliveryStatus.READ.value and reader is not None:
                    users.append(reader)
                frame = {k: v for k, v in event.items() if k != "sender"}
                return [(frame, users)] if users else []
    except (KeyError, TypeError, AttributeError):
        return []
    return []


def _status_key(event: Mapping[str, Any]) -> tuple[object, object, object] | None:
    if event.get("type") != "message.status":
        return None
    return (event.get("message_id"), event.get("recipient"), event.get("channel"))


def latest_only(events: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The events, with only the last status of each delivery among them.

    Statuses only move forward: DELIVERED then READ in one batch is READ to a client.
    """
    last = {key: i for i, e in enumerate(events) if (key := _status_key(e)) is not None}
    return [e for i, e in enumerate(events) if (key := _status_key(e)) is None or last[key] == i]


async def push_events(fanout: Fanout, events: Iterable[Mapping[str, Any]]) -> int:
    """Push what clients should see of these events; return how many frames went out."""
    frames = [f for e in latest_only(list(events)) for f in frames_for(e)]
    if frames:
        await fanout.push(frames)
    return len(frames)


# --- receipts of pushed messages --------------------------------------------------------


@attrs.frozen
class Pushed:
    """A ``message.created`` frame a client of ``user_id`` received."""

    user_id: UserId
    message_id: MessageId

    @classmethod
    def of_frame(cls, user_id: UserId, frame: Mapping[str, Any]) -> Pushed | None:
        """The receipt a frame stands for, if it is a message (None for every other frame)."""
        if frame.get("type") != "message.created":
            return None
        try:
            return cls(user_id, MessageId(UUID(str(frame["message_id"]))))
        except (KeyError, ValueError):
            return None


async def confirm_pushed(d: RealtimeDeps, pushed: Sequence[Pushed]) -> int:
    """The recipients' Chat4All clients have these messages: their ``internal`` deliveries become DELIVERED.

    One transaction for the lot; deliveries already further on (or unknown) are left alone. Returns
    how many changed.
    """
    keys = list(dict.fromkeys((p.message_id, Participant.user(p.user_id).key, Channel.INTERNAL) for p in pushed))
    if not keys:
        return 0
    async with d.uow() as uow:
        at = d.clock.now()
        changed = [dl for dl in await uow.messages.lock_deliveries(keys) if dl.advance(DeliveryStatus.DELIVERED, at=at)]
        if not changed:
            return 0
        await uow.messages.save_progress(changed)
        origins = await uow.messages.origins_of(list({dl.message_id for dl in changed}))
        for dl in changed:
            origin = origins[dl.message_id]
            await emit_status(uow.outbox, origin.conversation_id, origin.sender.key, [dl])
        await uow.commit()
    return len(changed)


# --- presence ---------------------------------------------------------------------------


def presence_frame(user_id: UserId, status: PresenceStatus, last_seen: datetime | None) -> dict[str, Any]:
    return {
        "type": "presence",
        "user_id": str(user_id),
        "status": status.value,
        "last_seen": last_seen.isoformat() if last_seen is not None else None,
    }


async def _announce(d: RealtimeDeps, user_id: UserId, status: PresenceStatus, last_seen: datetime | None) -> None:
    async with d.uow() as uow:
        peers = await uow.conversations.peers_of(user_id)
    if peers:
        await d.fanout.push([(presence_frame(user_id, status, last_seen), peers)])


async def client_seen(
    d: RealtimeDeps, user_id: UserId, source: str, status: PresenceStatus = PresenceStatus.ONLINE
) -> PresenceStatus:
    """A client of the user is alive (a socket opened or is still open, a heartbeat came).

    The user's peers hear of it when their status changes. Returns the status.
    """
    at = d.clock.now()
    change = await d.presence.seen(user_id, source, status, at=at, ttl=d.presence_ttl)
    if change.changed:
        await _announce(d, user_id, change.after, at)
    return change.after


async def client_gone(d: RealtimeDeps, user_id: UserId, source: str) -> PresenceStatus:
    """A client of the user went away (its socket closed); the peers hear of it when the status changes."""
    at = d.clock.now()
    change = await d.presence.gone(user_id, source, at=at)
    if change.changed:
        await _announce(d, user_id, change.after, at)
    return change.after


async def expire_presence(d: RealtimeDeps, *, limit: int = 500) -> int:
    """Users silent past the time-to-live are offline now: tell their peers. Returns how many."""
    lapsed = await d.presence.lapsed(at=d.clock.now(), limit=limit)
    for user_id, last_seen in lapsed:
        await _announce(d, user_id, PresenceStatus.OFFLINE, last_seen)
    return len(lapsed)


async def heartbeat(d: RealtimeDeps, user_id: UserId, status: str) -> PresenceView:
    """``POST /v1/presence/heartbeat``: the user is ``online`` or ``away`` for one time-to-live."""
    if status not in {PresenceStatus.ONLINE, PresenceStatus.AWAY}:
        raise BusinessRuleViolation("status must be 'online' or 'away'", field="status")
    await client_seen(d, user_id, HEARTBEAT, PresenceStatus(status))
    now_status, last_seen = await d.presence.state(user_id, at=d.clock.now())
    return PresenceView(user_id=user_id, status=now_status.value, last_seen=last_seen)


async def presence_of(d: RealtimeDeps, viewer: UserId, who: str) -> PresenceView:
    """A user's presence, by id or username, for themselves and those who share a conversation with them.

    Anyone else gets NotFound, as for a user that does not exist.
    """
    async with d.uow() as uow:
        user_id: UserId | None = None
        try:
            user_id = UserId(UUID(who))
        except ValueError:
            found = await uow.users.get_by_username(who)
            user_id = found.id if found is not None else None
        if user_id is not None and user_id != viewer and user_id not in await uow.conversations.peers_of(viewer):
            user_id = None
        if user_id is None or await uow.users.get(user_id) is None:
            raise NotFound("no such user among the people you talk to")
    status, last_seen = await d.presence.state(user_id, at=d.clock.now())
    return PresenceView(user_id=user_id, status=status.value, last_seen=last_seen)


# --- typing -----------------------------------------------------------------------------


async def typing(d: RealtimeDeps, user_id: UserId, conversation_id: ConversationId) -> int:
    """The user is typing in the conversation: tell its other members who are users. Returns how many."""
    async with d.uow() as uow:
        conv = await uow.conversations.get(conversation_id)
    me = Participant.user(user_id)
    if conv is None or me not in conv.members:
        raise NotFound("no such conversation")
    others = [m.user_id for m in conv.members if m.user_id is not None and m != me]
    if others:
        frame = {"type": "typing", "conversation_id": str(conversation_id), "user_id": str(user_id)}
        await d.fanout.push([(frame, others)])
    return len(others)
