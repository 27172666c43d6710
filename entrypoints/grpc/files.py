"""``UploadFile``: a client stream of chunks into the same upload sessions as REST ``/v1/files``.

The first message opens an upload (``start``: REST's ``initiate``) or resumes one (``file_id``:
opened by REST or by an earlier stream). Every message may carry bytes of chunk ``index``; a
chunk is as long as the upload says (``chunk_size``, the last one shorter) and may span several
messages, each at most the message-size cap. Each chunk streams into the object store through
``application.uploads.put_chunk`` as its messages arrive (REST's ``PUT /v1/files/{id}/chunks/{i}``),
so memory holds a message or two whatever the file's size. When the client closes its side the
upload is completed (``application.uploads.complete``) and the file described.

The upload's id and chunk size go out as initial metadata (``chat4all-file-id``,
``chat4all-chunk-size``) as soon as it is open: a client whose stream breaks resumes with that id.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import betterproto2
import grpclib.server

from application import uploads
from application.errors import ApplicationError
from application.uploads import FileDeps, FileView
from domain.errors import BusinessRuleViolation, DomainError
from domain.ids import FileId, UserId
from entrypoints.grpc import convert
from entrypoints.grpc._generated.chat4all import v1 as pb
from entrypoints.grpc.errors import invalid

FILE_ID_KEY = "chat4all-file-id"
CHUNK_SIZE_KEY = "chat4all-chunk-size"


class _Requests:
    """The stream's messages one at a time, remembering the last checksum any of them carried."""

    def __init__(self, stream: grpclib.server.Stream[pb.UploadFileRequest, Any]) -> None:
        self._stream = stream
        self.checksum: str | None = None

    async def next(self) -> pb.UploadFileRequest | None:
        request = await self._stream.recv_message()
        if request is not None and request.checksum:
            self.checksum = request.checksum
        return request


def _opens(request: pb.UploadFileRequest) -> bool:
    return betterproto2.which_one_of(request, "upload")[0] != ""


def chunk_length(f: FileView, index: int) -> int:
    if index == f.total_chunks - 1:
        return f.size - f.chunk_size * index
    return f.chunk_size


class _Chunk:
    """One chunk's bytes, pulled from the stream's messages as the store asks for them.

    A message that would overrun the chunk, one for another chunk before this one is whole, or the
    end of the stream inside it, ends the bytes early: the store then refuses the short chunk
    (nothing of it is kept) and ``error`` says what the client did wrong.
    """

    def __init__(self, index: int, length: int, first: pb.UploadFileRequest, requests: _Requests) -> None:
        self.index = index
        self.length = length
        self._first = first
        self._requests = requests
        self.error: BusinessRuleViolation | None = None

    async def pieces(self) -> AsyncIterator[bytes]:
        request: pb.UploadFileRequest | None = self._first
        got = 0
        while True:
            assert request is not None
            data = request.data
            if got + len(data) > self.length:
                self.error = invalid(
                    f"chunk {self.index} is {self.length} bytes; the stream sent {got + len(data)} or more", "data"
                )
                return
            got += len(data)
            if data:
                yield data
            if got == self.length:
                return
            request = await self._requests.next()
            if request is None:
                self.error = invalid(
                    f"the stream ended inside chunk {self.index} ({got} of {self.length} bytes)", "data"
                )
                return
            if request.index != self.index or _opens(request):
                self.error = invalid(
                    f"chunk {self.index} has {got} of its {self.length} bytes; send the rest before another chunk",
                    "index",
                )
                return


async def _put_chunk(
    files: FileDeps, owner: UserId, f: FileView, first: pb.UploadFileRequest, requests: _Requests
) -> None:
    if first.index >= f.total_chunks:
        raise invalid(f"index is between 0 and {f.total_chunks - 1}", "index")
    chunk = _Chunk(first.index, chunk_length(f, first.index), first, requests)
    try:
        await uploads.put_chunk(files, owner, f.file_id, chunk.index, chunk.pieces(), chunk.length)
    except (ApplicationError, DomainError):
        if chunk.error is not None:
            raise chunk.error from None
        raise
    if chunk.error is not None:  # the store took a short chunk: its contract says it cannot
        raise chunk.error


async def _open(files: FileDeps, owner: UserId, first: pb.UploadFileRequest) -> FileView:
    kind, value = betterproto2.which_one_of(first, "upload")
    if kind == "start" and isinstance(value, pb.NewUpload):
        return await uploads.initiate(
            files,
            owner,
            filename=value.filename,
            size=value.size,
            content_type=value.content_type or "application/octet-stream",
            checksum=value.checksum or None,
            chunk_size=value.chunk_size or None,
        )
    if kind == "file_id" and isinstance(value, str):
        return await uploads.status(files, owner, FileId(convert.uuid_of(value, "file_id")))
    raise invalid("the first message opens an upload (start) or resumes one (file_id)", "upload")


async def upload_file(
    stream: grpclib.server.Stream[pb.UploadFileRequest, pb.File], owner: UserId, files: FileDeps
) -> None:
    requests = _Requests(stream)
    first = await requests.next()
    if first is None:
        raise invalid("the first message opens an upload (start) or resumes one (file_id)", "upload")
    f = await _open(files, owner, first)
    await stream.send_initial_metadata(metadata={FILE_ID_KEY: str(f.file_id), CHUNK_SIZE_KEY: str(f.chunk_size)})
    if first.data:  # the first message may carry bytes too
        await _put_chunk(files, owner, f, first, requests)
    request = await requests.next()
    while request is not None:
        if _opens(request):
            raise invalid("only the first message opens or resumes an upload", "upload")
        if request.data:
            await _put_chunk(files, owner, f, request, requests)
        request = await requests.next()
    done = await uploads.complete(files, owner, f.file_id, requests.checksum)
    await stream.send_message(convert.file(done))
