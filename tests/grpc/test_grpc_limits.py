"""The message-size cap: a client message over it is RESOURCE_EXHAUSTED, decided before its body is read."""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.reflection.v1.reflection_grpc import ServerReflectionStub
from grpclib.reflection.v1.reflection_pb2 import ServerReflectionRequest

from entrypoints.grpc._generated.chat4all import v1 as pb
from entrypoints.grpc._generated.google.protobuf import Struct
from entrypoints.grpc.limits import CappedReads
from tests.grpc.support import CAP, Grpc, text

pytestmark = pytest.mark.unit


def prefix(length: int) -> bytes:
    return struct.pack(">?I", False, length)


class Http2Stream:
    """What grpclib's message reader reads from: canned data, and a record of each read."""

    def __init__(self, *data: bytes) -> None:
        self.data = list(data)
        self.reads: list[int] = []
        self.closable = True

    async def recv_data(self, size: int) -> bytes:
        self.reads.append(size)
        return self.data.pop(0) if self.data else b""


async def test_a_prefix_over_the_cap_is_refused_before_the_body_is_read() -> None:
    inner = Http2Stream(prefix(256 * 1024 * 1024), b"never read")
    capped = CappedReads(inner, 1024)
    with pytest.raises(GRPCError) as caught:
        await capped.recv_data(5)
    assert caught.value.status is Status.RESOURCE_EXHAUSTED
    assert caught.value.message == "a message of 268435456 bytes is over the 1024-byte limit"
    assert inner.reads == [5]


async def test_messages_up_to_the_cap_pass_through() -> None:
    inner = Http2Stream(prefix(1024), b"a" * 1024, prefix(0), b"", prefix(3), b"abc")
    capped = CappedReads(inner, 1024)
    for size in (5, 1024, 5, 0, 5, 3):
        await capped.recv_data(size)
    assert await capped.recv_data(5) == b""  # the end of the stream
    assert inner.reads == [5, 1024, 5, 0, 5, 3, 5]
    assert capped.closable  # everything else is the wrapped stream's


def padded(conversation_id: str, size: int) -> pb.SendMessageRequest:
    """A send whose encoding is exactly ``size`` bytes (its metadata padded)."""
    request = text(conversation_id, "hi", metadata=Struct.from_dict({"pad": ""}))
    pad = size - len(bytes(request))
    while True:
        request = text(conversation_id, "hi", metadata=Struct.from_dict({"pad": "x" * pad}))
        if (n := len(bytes(request))) == size:
            return request
        pad -= n - size


async def test_a_send_of_exactly_the_cap_is_accepted_and_one_byte_more_is_refused(grpc: Grpc) -> None:
    ana, _, conv = await grpc.pair()
    stub = grpc.stub(ana)
    assert (await stub.send_message(padded(conv, CAP))).status == "accepted"
    with pytest.raises(GRPCError) as caught:
        await stub.send_message(padded(conv, CAP + 1))
    assert caught.value.status is Status.RESOURCE_EXHAUSTED
    assert caught.value.message == f"a message of {CAP + 1} bytes is over the {CAP}-byte limit"
    page = await stub.list_messages(pb.ListMessagesRequest(conversation_id=conv))
    assert len(page.items) == 1


async def test_a_message_larger_than_the_flow_control_window_is_refused_too(grpc: Grpc) -> None:
    ana, _, conv = await grpc.pair()
    huge = padded(conv, 12 * 1024 * 1024)  # 3 HTTP/2 windows: the server never lets it all in
    with pytest.raises(GRPCError) as caught:
        await grpc.stub(ana).send_message(huge)
    assert caught.value.status is Status.RESOURCE_EXHAUSTED
    assert (await grpc.stub(ana).send_message(text(conv, "still fine"))).status == "accepted"  # the channel lives on


async def test_a_stream_fails_at_its_first_oversize_message(grpc: Grpc) -> None:
    ana, _, conv = await grpc.pair()

    async def requests() -> AsyncIterator[pb.SendMessageRequest]:
        yield text(conv, "one")
        yield padded(conv, CAP * 2)
        yield text(conv, "never")

    seen: list[pb.SendMessageResult] = []

    async def collect() -> None:
        async for result in grpc.stub(ana).send_messages(requests()):
            seen.append(result)

    with pytest.raises(GRPCError) as caught:
        await collect()
    assert caught.value.status is Status.RESOURCE_EXHAUSTED
    assert [r.index for r in seen] == [0]

    async def upload() -> AsyncIterator[pb.UploadFileRequest]:
        yield pb.UploadFileRequest(start=pb.NewUpload(filename="a.bin", size=CAP * 2, chunk_size=CAP * 2))
        yield pb.UploadFileRequest(index=0, data=b"x" * (CAP * 2))

    with pytest.raises(GRPCError) as caught:
        await grpc.stub(ana).upload_file(upload())
    assert caught.value.status is Status.RESOURCE_EXHAUSTED


async def test_the_public_services_are_capped_too(grpc: Grpc) -> None:
    stub = ServerReflectionStub(grpc.channel)
    async with stub.ServerReflectionInfo.open() as call:
        await call.send_message(ServerReflectionRequest(file_by_filename="x" * CAP), end=True)
        with pytest.raises(GRPCError) as caught:
            await call.recv_message()
    assert caught.value.status is Status.RESOURCE_EXHAUSTED
