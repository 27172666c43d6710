"""A cap on the size of each message a client sends: RESOURCE_EXHAUSTED, decided on the 5-byte prefix.

grpclib 0.4 has no receive limit: ``grpclib.stream.recv_message`` reads a message's length
prefix, then buffers that many bytes whole (a 256 MiB request is accepted by default). Every
handler here reads through :class:`CappedReads`, which looks at each length prefix as it goes by
and refuses a message over the cap before a byte of its body is read. The server then answers
RESOURCE_EXHAUSTED and resets the stream; HTTP/2 flow control has let the client send at most a
window (4 MiB) of the body meanwhile.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpclib.const
import grpclib.server
from grpclib.const import Status
from grpclib.exceptions import GRPCError

PREFIX_BYTES = 5
"""A gRPC message on the wire: a compressed flag (1 byte), its length (4 bytes, big-endian), then its bytes."""

StreamHandler = Callable[[grpclib.server.Stream[Any, Any]], Awaitable[None]]


def too_large(length: int, cap: int) -> GRPCError:
    return GRPCError(Status.RESOURCE_EXHAUSTED, f"a message of {length} bytes is over the {cap}-byte limit")


class CappedReads:
    """A request's HTTP/2 stream as grpclib's message reader sees it: prefixes over the cap are refused.

    grpclib reads a message as ``recv_data(5)`` (the prefix; empty at the end of the stream) and
    then ``recv_data(length)`` (the body); everything else is passed to the wrapped stream.
    """

    __slots__ = ("_body_next", "_cap", "_inner")

    def __init__(self, inner: Any, cap: int) -> None:
        self._inner = inner
        self._cap = cap
        self._body_next = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def recv_data(self, size: int) -> bytes:
        if self._body_next:
            self._body_next = False
            data: bytes = await self._inner.recv_data(size)
            return data
        prefix: bytes = await self._inner.recv_data(size)
        if len(prefix) == PREFIX_BYTES:
            length = int.from_bytes(prefix[1:], "big")
            if length > self._cap:
                raise too_large(length, self._cap)
            self._body_next = True
        return prefix


def cap_reads(stream: grpclib.server.Stream[Any, Any], cap: int) -> None:
    """Make every later ``stream.recv_message()`` refuse a message over ``cap`` bytes (RESOURCE_EXHAUSTED).

    grpclib keeps the HTTP/2 stream in ``Stream._stream`` (0.4.x); ``tests/grpc`` checks this still holds.
    """
    inner: Any = stream._stream
    if not isinstance(inner, CappedReads):
        stream._stream = CappedReads(inner, cap)  # type: ignore[assignment] # it stands in for the HTTP/2 stream


def capped_handler(func: StreamHandler, cap: int) -> StreamHandler:
    async def handler(stream: grpclib.server.Stream[Any, Any]) -> None:
        cap_reads(stream, cap)
        await func(stream)

    return handler


class Capped:
    """Another service (health, reflection) with the same cap on what its clients send."""

    def __init__(self, service: Any, cap: int) -> None:
        self._service = service
        self._cap = cap

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        return {
            path: grpclib.const.Handler(capped_handler(h.func, self._cap), h.cardinality, h.request_type, h.reply_type)
            for path, h in self._service.__mapping__().items()
        }
