"""What the event log's events become for clients, and the receipts of pushes."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import pytest

from adapters.memory import InMemoryStore
from adapters.memory.presence import InMemoryPresence
from application.ports import Fanout, Frame
from application.realtime import Pushed, RealtimeDeps, confirm_pushed, frames_for, latest_only, push_events
from domain.ids import MessageId, UserId

pytestmark = pytest.mark.unit

ANA, BOB, CYD = (UserId(uuid.uuid4()) for _ in range(3))


class Recorded(Fanout):
    def __init__(self) -> None:
        self.frames: list[tuple[Frame, Sequence[UserId]]] = []

    async def push(self, frames: Sequence[tuple[Frame, Sequence[UserId]]]) -> None:
        self.frames.extend(frames)


def created(**extra: Any) -> dict[str, Any]:
    return {
        "type": "message.created",
        "message_id": str(uuid.uuid4()),
        "conversation_id": str(uuid.uuid4()),
        "seq": 3,
        "from": f"user:{ANA}",
        "payload": {"type": "text", "text": "hi"},
        "metadata": {},
        "created_at": "2026-11-22T10:00:00+00:00",
        "deliveries": [
            {"recipient": f"user:{BOB}", "channel": "internal"},
            {"recipient": f"user:{BOB}", "channel": "whatsapp"},
            {"recipient": f"user:{CYD}", "channel": "telegram"},
            {"recipient": "whatsapp:+5511999998888", "channel": "whatsapp"},
        ],
        **extra,
    }


def status(value: str, recipient: str = f"user:{BOB}", message_id: str = "m1") -> dict[str, Any]:
    return {
        "type": "message.status",
        "message_id": message_id,
        "conversation_id": "c1",
        "sender": f"user:{ANA}",
        "recipient": recipient,
        "channel": "internal",
        "status": value,
        "at": "2026-11-22T10:00:01+00:00",
    }


def test_a_message_goes_to_its_chat4all_recipients_only_without_its_delivery_plan() -> None:
    event = created()
    ((frame, users),) = frames_for(event)
    assert users == [BOB]  # cyd is reached on telegram only; the contact is not a user
    assert frame["sender"] == {"kind": "user", "user_id": str(ANA)}
    assert "deliveries" not in frame
    assert frame["message_id"] == event["message_id"]
    assert frames_for(created(deliveries=[{"recipient": f"user:{CYD}", "channel": "telegram"}])) == []
    inbound = created(**{"from": "telegram:42"})
    assert frames_for(inbound)[0][0]["sender"] == {"kind": "contact", "address": "telegram:42"}


def test_a_status_goes_to_the_sender_and_a_read_to_the_reader_too() -> None:
    ((frame, users),) = frames_for(status("DELIVERED"))
    assert users == [ANA]
    assert "sender" not in frame
    assert frames_for(status("READ"))[0][1] == [ANA, BOB]
    assert frames_for(status("READ", recipient="whatsapp:+1555"))[0][1] == [ANA]


@pytest.mark.parametrize(
    "event",
    [{"type": "message.created"}, {"type": "message.created", "deliveries": "x"}, {"type": "other"}, {}],
)
def test_malformed_or_foreign_events_push_nothing(event: dict[str, Any]) -> None:
    assert frames_for(event) == []


def test_only_the_last_status_of_a_delivery_in_a_batch_is_pushed() -> None:
    first, second = created(), created()
    events = [status("DELIVERED"), first, status("READ"), status("DELIVERED", message_id="m2"), second]
    assert latest_only(events) == [first, status("READ"), status("DELIVERED", message_id="m2"), second]


async def test_push_events_sends_every_frame_in_one_call() -> None:
    fanout = Recorded()
    assert await push_events(fanout, [created(), status("READ"), {"type": "noise"}]) == 2
    assert [f["type"] for f, _ in fanout.frames] == ["message.created", "message.status"]


def test_a_receipt_stands_for_a_message_frame_only() -> None:
    mid = uuid.uuid4()
    assert Pushed.of_frame(BOB, {"type": "message.created", "message_id": str(mid)}) == Pushed(BOB, MessageId(mid))
    assert Pushed.of_frame(BOB, {"type": "message.created", "message_id": "nope"}) is None
    assert Pushed.of_frame(BOB, {"type": "typing"}) is None


async def test_confirming_nothing_or_unknown_deliveries_changes_nothing() -> None:
    store = InMemoryStore()

    class Clock:
        def now(self) -> Any:
            from datetime import UTC, datetime

            return datetime.now(UTC)

    deps = RealtimeDeps(uow=store.uow, clock=Clock(), presence=InMemoryPresence(), fanout=Recorded())
    assert await confirm_pushed(deps, []) == 0
    assert await confirm_pushed(deps, [Pushed(BOB, MessageId(uuid.uuid4()))]) == 0
    assert store.state.outbox == []
