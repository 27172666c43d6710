"""UploadFile: a client stream of chunks into the same upload sessions as REST, completed and downloadable."""

from __future__ import annotations

import hashlib
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import pytest
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError

from adapters.storage.filesystem import FilesystemObjectStore
from application import uploads
from application.ports import ObjectStore
from domain.ids import FileId, UserId
from domain.uploads import UploadSession
from entrypoints.grpc._generated.chat4all import v1 as pb
from tests.grpc.support import CAP, Grpc

pytestmark = pytest.mark.unit

CHUNK = UploadSession.MIN_CHUNK  # 256 KiB: a chunk spans several 64 KiB messages
PIECE = 64 * 1024


def content(size: int) -> bytes:
    block = hashlib.sha256(b"chat4all").digest()
    return (block * (size // len(block) + 1))[:size]


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def pieces(
    data: bytes, indexes: Iterable[int], *, chunk: int = CHUNK, piece: int = PIECE
) -> list[pb.UploadFileRequest]:
    out = []
    for i in indexes:
        part = data[i * chunk : (i + 1) * chunk]
        out += [pb.UploadFileRequest(index=i, data=part[o : o + piece]) for o in range(0, len(part), piece)]
    return out


async def stream_of(*requests: pb.UploadFileRequest) -> AsyncIterator[pb.UploadFileRequest]:
    for r in requests:
        yield r


def start(data: bytes, **extra: Any) -> pb.UploadFileRequest:
    fields = {"filename": "photo.jpg", "size": len(data), "content_type": "image/jpeg", "chunk_size": CHUNK} | extra
    return pb.UploadFileRequest(start=pb.NewUpload(**fields))


def user_id(who: dict[str, Any]) -> UserId:
    return UserId(uuid.UUID(who["user_id"]))


async def test_an_upload_in_one_stream_is_completed_and_downloadable_over_rest(grpc: Grpc) -> None:
    ana, bob, conv = await grpc.pair()
    data = content(CHUNK * 2 + 1000)
    done = await grpc.stub(ana).upload_file(stream_of(start(data, checksum=sha(data)), *pieces(data, range(3))))
    assert done.status == "completed"
    assert (done.filename, done.size, done.content_type) == ("photo.jpg", len(data), "image/jpeg")
    assert (done.chunk_size, done.total_chunks, done.received_chunks, done.missing_chunks) == (CHUNK, 3, 3, [])
    assert done.checksum == sha(data)

    # The REST API sees the same file; the use case REST's download calls gives its bytes' link.
    r = await grpc.api.client.get(f"/v1/files/{done.file_id}", headers=ana["headers"])
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "completed"
    link = await grpc.api.client.get(f"/v1/files/{done.file_id}/download", headers=ana["headers"])
    assert link.status_code == 200, link.text
    assert link.json()["checksum"] == sha(data)
    link_of = await uploads.download(grpc.files, user_id(ana), FileId(uuid.UUID(done.file_id)))
    assert (link_of.size, link_of.checksum, link_of.filename) == (len(data), sha(data), "photo.jpg")

    # ... and a message can carry it, over gRPC, to bob, who may then download it too.
    sent = await grpc.stub(ana).send_message(
        pb.SendMessageRequest(
            conversation_id=conv, payload=pb.Payload(file=pb.FilePayload(file_id=done.file_id, caption="look"))
        )
    )
    m = await grpc.stub(bob).get_message(pb.GetMessageRequest(message_id=sent.message_id))
    assert m.payload is not None and m.payload.file is not None
    assert (m.payload.file.file_id, m.payload.file.caption, m.payload.file.filename, m.payload.file.size) == (
        done.file_id,
        "look",
        "photo.jpg",
        len(data),
    )
    assert (await grpc.api.client.get(f"/v1/files/{done.file_id}/download", headers=bob["headers"])).status_code == 200


async def test_the_stored_bytes_are_the_uploaded_ones(grpc: Grpc, object_store: ObjectStore) -> None:
    ana = await grpc.api.user("ana")
    data = content(CHUNK + 12345)
    # Out of order, a chunk sent twice, the last message with the checksum and no data.
    requests = [start(data), *pieces(data, [1, 0, 1]), pb.UploadFileRequest(checksum=sha(data))]
    done = await grpc.stub(ana).upload_file(stream_of(*requests))
    assert done.checksum == sha(data)
    key = f"files/{done.file_id}"
    assert b"".join([b async for b in object_store.read(key)]) == data


async def test_an_upload_opened_over_rest_is_resumed_over_grpc(grpc: Grpc) -> None:
    ana = await grpc.api.user("ana")
    data = content(CHUNK * 3)
    opened = await grpc.api.client.post(
        "/v1/files/initiate",
        json={"filename": "a.bin", "size": len(data), "chunk_size": CHUNK, "checksum": sha(data)},
        headers=ana["headers"],
    )
    assert opened.status_code == 201, opened.text
    file_id = opened.json()["file_id"]
    put = await grpc.api.client.put(f"/v1/files/{file_id}/chunks/0", content=data[:CHUNK], headers=ana["headers"])
    assert put.status_code == 200, put.text

    # The stream resumes with the id and sends only what is missing.
    done = await grpc.stub(ana).upload_file(stream_of(pb.UploadFileRequest(file_id=file_id), *pieces(data, [1, 2])))
    assert (done.file_id, done.status, done.received_chunks) == (file_id, "completed", 3)
    assert (await grpc.api.client.get(f"/v1/files/{file_id}", headers=ana["headers"])).json()["status"] == "completed"


async def test_a_broken_stream_is_resumed_with_the_id_from_the_initial_metadata(grpc: Grpc) -> None:
    ana = await grpc.api.user("ana")
    data = content(CHUNK * 2)
    stub = grpc.stub(ana)
    async with stub.channel.request(
        "/chat4all.v1.Chat4All/UploadFile",
        Cardinality.STREAM_UNARY,
        pb.UploadFileRequest,
        pb.File,
        metadata=stub.metadata,
    ) as call:
        await call.send_message(start(data))
        await call.recv_initial_metadata()
        assert call.initial_metadata is not None
        file_id = call.initial_metadata["chat4all-file-id"]
        assert call.initial_metadata["chat4all-chunk-size"] == str(CHUNK)
        for r in pieces(data, [0]):
            await call.send_message(r)
        await call.end()  # chunk 1 never sent: completion is refused, naming it
        assert await call.recv_message() is None
        with pytest.raises(GRPCError) as caught:
            await call.recv_trailing_metadata()
        assert caught.value.status is Status.FAILED_PRECONDITION
        assert "1 chunk(s) missing: 1" in (caught.value.message or "")
        assert call.trailing_metadata is not None
        assert call.trailing_metadata["chat4all-problem"] == "missing-chunks"

    done = await stub.upload_file(stream_of(pb.UploadFileRequest(file_id=file_id), *pieces(data, [1])))
    assert (done.file_id, done.status) == (file_id, "completed")


async def test_a_checksum_mismatch_fails_the_file(grpc: Grpc) -> None:
    ana = await grpc.api.user("ana")
    data = content(1000)
    with pytest.raises(GRPCError) as caught:
        await grpc.stub(ana).upload_file(stream_of(start(data, checksum=sha(b"other")), *pieces(data, [0])))
    assert caught.value.status is Status.INVALID_ARGUMENT
    assert "sha256 mismatch" in (caught.value.message or "")


@pytest.mark.parametrize(
    ("requests", "status", "words"),
    [
        ([], Status.INVALID_ARGUMENT, "opens an upload"),
        ([pb.UploadFileRequest(index=0, data=b"x")], Status.INVALID_ARGUMENT, "opens an upload"),
        ([pb.UploadFileRequest(file_id="nope")], Status.INVALID_ARGUMENT, "file_id is a UUID"),
        ([pb.UploadFileRequest(file_id=str(uuid.uuid4()))], Status.NOT_FOUND, "no such file"),
        ("overrun", Status.INVALID_ARGUMENT, "the stream sent"),
        ("short", Status.INVALID_ARGUMENT, "ended inside chunk 0"),
        ("interleaved", Status.INVALID_ARGUMENT, "send the rest"),
        ("index", Status.INVALID_ARGUMENT, "index is between 0 and 1"),
        ("reopen", Status.INVALID_ARGUMENT, "only the first message"),
        ("huge", Status.RESOURCE_EXHAUSTED, "size"),
        ("tiny chunks", Status.INVALID_ARGUMENT, "chunk_size"),
    ],
)
async def test_refusals(grpc: Grpc, requests: Any, status: Status, words: str) -> None:
    ana = await grpc.api.user("ana")
    data = content(CHUNK + 10)
    chunk0 = data[:CHUNK]
    shapes: dict[str, list[pb.UploadFileRequest]] = {
        "overrun": [start(data), pb.UploadFileRequest(index=1, data=data[CHUNK:] + b"!")],
        "short": [start(data), pb.UploadFileRequest(index=0, data=chunk0[:1000])],
        "interleaved": [
            start(data),
            pb.UploadFileRequest(index=0, data=chunk0[:1000]),
            pb.UploadFileRequest(index=1, data=data[CHUNK:]),
        ],
        "index": [start(data), pb.UploadFileRequest(index=2, data=b"x")],
        "reopen": [start(data), start(data)],
        "huge": [start(data, size=3 * 1024**3)],
        "tiny chunks": [start(data, chunk_size=1024)],
    }
    sequence = shapes[requests] if isinstance(requests, str) else requests
    with pytest.raises(GRPCError) as caught:
        await grpc.stub(ana).upload_file(stream_of(*sequence))
    assert caught.value.status is status
    assert words in (caught.value.message or "")


async def test_someone_elses_upload_does_not_exist(grpc: Grpc) -> None:
    ana, bob, _ = await grpc.pair()
    data = content(100)
    opened = await grpc.api.client.post(
        "/v1/files/initiate", json={"filename": "a.bin", "size": len(data)}, headers=ana["headers"]
    )
    with pytest.raises(GRPCError) as caught:
        await grpc.stub(bob).upload_file(
            stream_of(pb.UploadFileRequest(file_id=opened.json()["file_id"]), pb.UploadFileRequest(data=data))
        )
    assert caught.value.status is Status.NOT_FOUND


@pytest.fixture
def object_store(tmp_path: Path) -> ObjectStore:  # the store that writes to disk: memory is what is measured
    return FilesystemObjectStore(tmp_path / "files", secret=b"k" * 32, public_base_url="http://127.0.0.1:8000")


async def test_memory_does_not_grow_with_the_file(grpc: Grpc) -> None:
    ana = await grpc.api.user("ana")
    chunk = 4 * 1024 * 1024
    piece = CAP - 64  # each message just under the cap
    size = 48 * 1024 * 1024 + 7
    block = content(piece)

    async def requests() -> AsyncIterator[pb.UploadFileRequest]:
        yield start(b"", size=size, chunk_size=chunk, filename="big.bin")
        for index in range(-(-size // chunk)):
            left = min(chunk, size - index * chunk)
            while left:
                n = min(piece, left)
                yield pb.UploadFileRequest(index=index, data=block[:n])
                left -= n

    tracemalloc.start()
    try:
        done = await grpc.stub(ana).upload_file(requests())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (done.status, done.size) == ("completed", size)
    # Client and server share this process: a few messages, the HTTP/2 windows and the store's block.
    assert peak < 16 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB for a {size / 2**20:.0f} MiB file"
