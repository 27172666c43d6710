"""The loopback platform: one receipt per accepted send, a log it can answer lookups from, injectable faults."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from adapters.channels.loopback import LoopbackConnector
from application.ports import ChannelError, Event, OutboundMessage
from domain.channels import Channel, ChannelAddress
from domain.ids import ConversationId, MessageId

pytestmark = pytest.mark.unit


class SlowPublisher:
    def __init__(self) -> None:
        self.published: list[Event] = []

    async def publish(self, events: Sequence[Event]) -> None:
        await asyncio.sleep(0.05)  # a broker round trip
        self.published.extend(events)


def message(seq: int) -> OutboundMessage:
    return OutboundMessage(
        delivery=(MessageId(uuid.uuid4()), f"user:{uuid.uuid4()}", Channel.TELEGRAM),
        conversation_id=ConversationId(uuid.uuid4()),
        seq=seq,
        to=ChannelAddress.parse("telegram:123456"),
        sender="user:x",
        payload={"type": "text", "text": "x"},
    )


async def test_a_send_during_a_flush_still_gets_its_receipt() -> None:
    receipts = SlowPublisher()
    telegram = LoopbackConnector(Channel.TELEGRAM, receipts=receipts, now=lambda: datetime.now(UTC))
    await telegram.send(message(1))  # schedules a flush in 20 ms
    await asyncio.sleep(0.03)  # the flush is publishing now (50 ms)
    await telegram.send(message(2))  # arrives during that publish; nothing is sent after it

    await asyncio.sleep(0.3)

    assert len(receipts.published) == 2
    assert {e.payload["status"] for e in receipts.published} == {"DELIVERED"}
    await telegram.close()


async def test_it_answers_lookups_from_its_log_and_takes_faults_from_a_file(tmp_path: Path) -> None:
    faults = tmp_path / "faults.json"
    telegram = LoopbackConnector(
        Channel.TELEGRAM,
        receipts=None,
        now=lambda: datetime.now(UTC),
        log_path=tmp_path / "sends.jsonl",
        faults_path=faults,
    )
    sent, never = message(1), message(2)
    platform_id = await telegram.send(sent)

    assert telegram.capabilities.lookup
    assert await telegram.find_sent(sent.delivery) == platform_id
    assert await telegram.find_sent(never.delivery) is None
    faults.write_text(json.dumps({"telegram": {"down": True}}))
    with pytest.raises(ChannelError, match="down") as down:
        await telegram.send(never)
    assert not down.value.permanent
    faults.write_text(json.dumps({"whatsapp": {"down": True}}))  # another platform's fault
    assert await telegram.send(never)
    await telegram.close()
