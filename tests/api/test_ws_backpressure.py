"""A client that falls behind is cut off (a socket closes with 1013), never skipped over."""

from __future__ import annotations

import asyncio
import json
import uuid
from types import SimpleNamespace
from typing import Any

import pytest

from application.realtime import Pushed
from domain.ids import MessageId, UserId
from entrypoints.realtime import Feed

pytestmark = pytest.mark.unit

USER = UserId(uuid.uuid4())


class Socket:
    def __init__(self, *, hang: bool = False) -> None:
        self.hang = hang
        self.sent: list[str] = []
        self.closed: tuple[int, str] | None = None
        self.app = SimpleNamespace(state=SimpleNamespace(ws_max_frame_bytes=1024, ws_queue=8))

    async def send_text(self, text: str) -> None:
        if self.hang:
            await asyncio.sleep(3600)
        self.sent.append(text)

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


class Receipts:
    def __init__(self) -> None:
        self.added: list[Pushed] = []

    def add(self, pushed: Pushed) -> None:
        self.added.append(pushed)


def connection(socket: Socket, backlog: int = 0) -> tuple[Feed, Receipts]:
    receipts = Receipts()

    async def cut(reason: str) -> None:
        await socket.close(1013, reason)

    feed = Feed(
        SimpleNamespace(receipts=receipts),  # type: ignore[arg-type]
        USER,
        send=lambda data: socket.send_text(data.decode()),
        cut=cut,
        queue_limit=8,
        send_timeout=0.05,
    )
    feed.subscriber = SimpleNamespace(qsize=backlog)  # type: ignore[assignment]
    return feed, receipts


def frame(**fields: Any) -> bytes:
    return json.dumps(fields, separators=(",", ":")).encode()


async def test_a_frame_goes_out_and_a_pushed_message_is_receipted() -> None:
    socket = Socket()
    conn, receipts = connection(socket)
    message_id = uuid.uuid4()
    await conn.deliver(frame(type="message.created", message_id=str(message_id)))
    await conn.deliver(frame(type="typing", conversation_id=str(uuid.uuid4())))
    assert [json.loads(t)["type"] for t in socket.sent] == ["message.created", "typing"]
    assert receipts.added == [Pushed(USER, MessageId(message_id))]
    assert socket.closed is None


async def test_a_socket_that_falls_behind_is_closed_with_1013_and_gets_nothing_more() -> None:
    socket = Socket()
    conn, receipts = connection(socket, backlog=7)  # the queue holds 8: one more and the plugin would drop a frame
    await conn.deliver(frame(type="message.created", message_id=str(uuid.uuid4())))
    assert socket.closed is not None
    assert socket.closed[0] == 1013
    conn.subscriber.qsize = 0
    await conn.deliver(frame(type="typing"))
    assert socket.sent == []
    assert receipts.added == []  # what was not sent is not receipted: it stays SENT until a sync


async def test_a_socket_that_will_not_take_a_frame_is_closed_after_the_send_timeout() -> None:
    socket = Socket(hang=True)
    conn, receipts = connection(socket)
    await asyncio.wait_for(conn.deliver(frame(type="message.created", message_id=str(uuid.uuid4()))), 1)
    assert socket.closed is not None
    assert socket.closed[0] == 1013
    assert receipts.added == []
