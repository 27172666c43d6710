"""Real time over HTTP: the WebSocket (`GET /v1/ws`), presence and sync.

A socket subscribes to its user's channel. Frames reach it through a queue the channels plugin
fills; a socket that falls ``ws_queue`` frames behind, or cannot take a frame for
``SEND_TIMEOUT`` seconds, is closed with 1013 rather than skipped over: the client resyncs
(``GET /v1/sync``) and nothing is silently lost. Fan-out to other sockets never waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from functools import partial
from socket import gethostname
from typing import Annotated, Any
from uuid import UUID

import msgspec
from litestar import Controller, WebSocket, get, post, websocket
from litestar.datastructures import State
from litestar.exceptions import WebSocketDisconnect
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.status_codes import HTTP_200_OK

from application import commands as c
from application import realtime as rt
from application.bus import MessageBus
from application.errors import ApplicationError, Unavailable
from domain.errors import BusinessRuleViolation, DomainError
from domain.ids import ConversationId, MessageId, UserId
from entrypoints.http import schemas as s
from entrypoints.http.controllers import BEARER, PUBLIC, AuthedRequest, Bus
from entrypoints.http.errors import app_error
from entrypoints.http.metrics import WEBSOCKETS
from entrypoints.realtime import Feed, Realtime

log = logging.getLogger("chat4all.ws")

SEND_TIMEOUT = 5.0
"""Seconds a socket may take to accept one frame before it is closed (1013)."""
TYPING_EVERY = 2.0
"""A connection's typing notices for one conversation go out at most this often."""
POLICY_VIOLATION, MESSAGE_TOO_BIG, INTERNAL_ERROR, TRY_AGAIN_LATER = 1008, 1009, 1011, 1013

_decode = msgspec.json.Decoder().decode


def _presence_out(view: Any) -> s.PresenceOut:
    return s.PresenceOut(user_id=view.user_id, status=view.status, last_seen=view.last_seen)


class PresenceController(Controller):
    path = "/v1/presence"
    tags = ["real time"]
    security = BEARER

    @post("/heartbeat", status_code=HTTP_200_OK, operation_id="presenceHeartbeat")
    async def heartbeat(self, request: AuthedRequest, data: JSONBody[s.HeartbeatIn], state: State) -> s.PresenceOut:
        """The caller is `online` or `away` for the next 60 s (the presence time-to-live)."""
        realtime: Realtime = state.realtime
        return _presence_out(await rt.heartbeat(realtime.deps, request.user, data.status))

    @get("/{who:str}", operation_id="getPresence")
    async def get_one(self, request: AuthedRequest, who: FromPath[str], state: State) -> s.PresenceOut:
        """A user's presence, by id or username: the caller's own, or of someone who shares a conversation."""
        realtime: Realtime = state.realtime
        return _presence_out(await rt.presence_of(realtime.deps, request.user, who))


class SyncController(Controller):
    path = "/v1/sync"
    tags = ["real time"]
    security = BEARER

    @get("/", operation_id="sync")
    async def sync(
        self,
        request: AuthedRequest,
        bus: Bus,
        cursor: Annotated[str | None, QueryParameter(max_length=512)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=200, description="page size")] = 100,
    ) -> s.SyncOut:
        """What a client missed after `cursor`: new messages and status changes, oldest first, as the WebSocket's
        frames. Without a cursor: none, and the cursor to start from. Follow `cursor` while `has_more`.
        """
        page = await bus.handle(c.Sync(request.user, cursor, limit))
        return s.SyncOut(events=[dict(e) for e in page.events], cursor=page.cursor, has_more=page.has_more)


def _token_of(socket: WebSocket[Any, Any, Any]) -> str | None:
    token = socket.query_params.get("token")
    if token:
        return str(token)
    scheme, _, credentials = socket.headers.get("authorization", "").partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" and credentials.strip() else None


class _Connection:
    """One authenticated socket: frames out from the user's channel (a ``Feed``), client frames in."""

    def __init__(self, socket: WebSocket[Any, Any, Any], user_id: UserId, realtime: Realtime, bus: MessageBus) -> None:
        self.socket = socket
        self.user_id = user_id
        self.realtime = realtime
        self.bus = bus
        state = socket.app.state
        self.max_frame: int = state.ws_max_frame_bytes
        self.feed = Feed(
            realtime,
            user_id,
            send=self._send,
            cut=partial(self._close, TRY_AGAIN_LATER),
            queue_limit=state.ws_queue,
            send_timeout=SEND_TIMEOUT,
        )
        self.closing = False
        self.typed: dict[str, float] = {}

    async def _send(self, data: bytes) -> None:
        await self.socket.send_text(data.decode())

    async def run(self) -> None:
        try:
            async with self.feed.open(self._hello):
                await self._receive()
        except WebSocketDisconnect:
            pass
        except Unavailable as exc:
            log.warning("ws: %s; closing the socket", exc)
            await self._close(TRY_AGAIN_LATER, "the service is unavailable; reconnect shortly")
        except Exception:
            # Litestar's exception handlers do not see a WebSocket's errors: log them here.
            log.exception("ws: the connection of user %s failed", self.user_id)
            await self._close(INTERNAL_ERROR, "internal error")

    async def _hello(self) -> None:
        start = await self.bus.handle(c.Sync(self.user_id))
        await self.socket.send_json(
            {
                "type": "connected",
                "user_id": str(self.user_id),
                "cursor": start.cursor,
                "instance": f"{gethostname()}:{os.getpid()}",
            }
        )

    async def _close(self, code: int, reason: str) -> None:
        if self.closing:
            return
        self.closing = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.socket.close(code=code, reason=reason), SEND_TIMEOUT)

    async def _receive(self) -> None:
        while not self.closing:
            message = await self.socket.receive()
            if message["type"] == "websocket.disconnect":
                return
            text, data = message.get("text"), message.get("bytes")
            raw = text if isinstance(text, str) else data.decode(errors="replace") if isinstance(data, bytes) else ""
            if len(raw) > self.max_frame:
                await self._close(MESSAGE_TOO_BIG, f"frames are at most {self.max_frame} bytes")
                return
            reply = await self._answer(raw)
            if reply is not None and not self.closing:
                await self.socket.send_json(reply)

    async def _answer(self, raw: str) -> dict[str, Any] | None:
        try:
            frame = _decode(raw)
        except msgspec.DecodeError:
            return {"type": "error", "status": 400, "detail": "frames are JSON objects"}
        if not isinstance(frame, dict):
            return {"type": "error", "status": 400, "detail": "frames are JSON objects"}
        ref = {"id": frame["id"]} if isinstance(frame.get("id"), str | int) else {}
        try:
            match frame.get("type"):
                case "ping":
                    return {"type": "pong", **ref}
                case "typing":
                    await self._typing(frame.get("conversation_id"))
                    return None
                case "read":
                    read = await self.bus.handle(c.MarkRead(self.user_id, MessageId(_uuid(frame, "message_id"))))
                    return {
                        "type": "read.ok",
                        **ref,
                        "message_id": str(read.message_id),
                        "read_at": read.read_at.isoformat(),
                    }
                case _:
                    return {"type": "error", **ref, "status": 400, "detail": "type must be ping, typing or read"}
        except (ApplicationError, DomainError) as exc:
            problem = app_error(exc)
            if isinstance(exc, Unavailable):
                log.warning("ws: %s", exc)
            out: dict[str, Any] = {"type": "error", **ref, "status": problem.status_code, "detail": problem.detail}
            if problem.extra:
                out["errors"] = problem.extra.get("errors") if isinstance(problem.extra, dict) else None
            return out

    async def _typing(self, conversation_id: object) -> None:
        conv = ConversationId(_uuid({"conversation_id": conversation_id}, "conversation_id"))
        now = time.monotonic()
        if now - self.typed.get(str(conv), -TYPING_EVERY) < TYPING_EVERY:
            return
        self.typed[str(conv)] = now
        await rt.typing(self.realtime.deps, self.user_id, conv)


def _uuid(frame: dict[str, Any], name: str) -> UUID:
    try:
        return UUID(str(frame[name]))
    except (KeyError, ValueError):
        raise BusinessRuleViolation(f"{name} must be a UUID", field=name) from None


@websocket("/v1/ws", opt=PUBLIC, name="realtime")
async def realtime_socket(socket: WebSocket[Any, Any, Any], state: State) -> None:
    """Real-time events: `message.created`, `message.status`, `presence`, `typing`; client frames `ping`, `typing`,
    `read`. The token comes as `?token=` or `Authorization: Bearer`."""
    await socket.accept()
    user_id = state.tokens.verify(_token_of(socket) or "")
    if user_id is None:
        await socket.close(code=POLICY_VIOLATION, reason="a valid access token is required")
        return
    WEBSOCKETS.inc()
    try:
        await _Connection(socket, user_id, state.realtime, state.bus).run()
    finally:
        WEBSOCKETS.dec()
