"""Files over HTTP: ``/v1/files`` (api.md, Files). Chunk bodies are streamed to the object store."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import msgspec
from litestar import Controller, Request, delete, get, post, put
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery, JSONBody
from litestar.response import File
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_204_NO_CONTENT

from adapters.storage.filesystem import FilesystemObjectStore, blob_key
from application import uploads
from application.uploads import FileDeps, FileView
from domain.ids import FileId
from domain.uploads import UploadSession
from entrypoints.http.controllers import BEARER, PUBLIC, AuthedRequest
from entrypoints.http.errors import problem
from entrypoints.http.metrics import UPLOAD_BYTES


class InitiateIn(msgspec.Struct, forbid_unknown_fields=True):
    filename: str
    size: int
    content_type: str = "application/octet-stream"
    checksum: str | None = None
    chunk_size: int | None = None
    conversation_id: UUID | None = None
    direct: bool = False
    """Send the chunks to the object store directly, through presigned part URLs (stores that allow it)."""


class PartTagIn(msgspec.Struct, forbid_unknown_fields=True):
    index: int
    etag: str
    """The ETag the store answered the part's PUT with (quoted or not)."""


class CompleteIn(msgspec.Struct, forbid_unknown_fields=True):
    file_id: UUID | None = None
    checksum: str | None = None
    parts: list[PartTagIn] | None = None
    """A direct upload's parts: every chunk's index and ETag."""


class PartUrlOut(msgspec.Struct):
    index: int
    url: str


class FileOut(msgspec.Struct):
    file_id: UUID
    filename: str
    size: int
    content_type: str
    checksum: str | None
    status: str
    chunk_size: int
    total_chunks: int
    received_chunks: int
    missing_chunks: list[int]
    expires_at: datetime


class InitiatedOut(msgspec.Struct, omit_defaults=True):
    file_id: UUID
    chunk_size: int
    total_chunks: int
    upload_url: str
    expires_at: datetime
    parts: list[PartUrlOut] | None = None
    """A direct upload's part URLs, one per chunk: PUT the chunk's bytes there."""
    parts_expires_at: datetime | None = None


class PartUrlsOut(msgspec.Struct):
    file_id: UUID
    parts: list[PartUrlOut]
    parts_expires_at: datetime


class ChunkOut(msgspec.Struct):
    index: int
    received: int
    total_chunks: int


class DownloadOut(msgspec.Struct):
    download_url: str
    expires_at: datetime
    filename: str
    size: int
    content_type: str
    checksum: str


def _out(v: FileView) -> FileOut:
    return FileOut(**{f: getattr(v, f) for f in FileOut.__struct_fields__})


def _part_urls(urls: uploads.PartUrls) -> list[PartUrlOut]:
    return [PartUrlOut(index=p.index, url=p.url) for p in urls.parts]


def _tags(data: CompleteIn) -> list[tuple[int, str]] | None:
    return None if data.parts is None else [(p.index, p.etag) for p in data.parts]


def _files(state: State) -> FileDeps:
    deps: FileDeps = state.files
    return deps


class FilesController(Controller):
    path = "/v1/files"
    tags = ["files"]
    security = BEARER

    @post("/initiate", status_code=HTTP_201_CREATED, operation_id="initiateUpload")
    async def initiate(self, request: AuthedRequest, data: JSONBody[InitiateIn], state: State) -> InitiatedOut:
        """Open a resumable upload; chunks then go to ``upload_url`` (``{index}`` from 0).

        With ``direct`` (object storage that allows it; else 422), chunks go to the presigned ``parts``
        URLs instead, and completion names every part's ETag.
        """
        open_upload = uploads.initiate_direct if data.direct else uploads.initiate
        opened = await open_upload(
            _files(state),
            request.user,
            filename=data.filename,
            size=data.size,
            content_type=data.content_type,
            checksum=data.checksum,
            chunk_size=data.chunk_size,
        )
        v = opened.file if isinstance(opened, uploads.DirectUpload) else opened
        out = InitiatedOut(
            file_id=v.file_id,
            chunk_size=v.chunk_size,
            total_chunks=v.total_chunks,
            upload_url=f"/v1/files/{v.file_id}/chunks/{{index}}",
            expires_at=v.expires_at,
        )
        if isinstance(opened, uploads.DirectUpload):
            out.parts, out.parts_expires_at = _part_urls(opened.parts), opened.parts.expires_at
        return out

    @put(
        "/{file_id:uuid}/chunks/{index:int}",
        status_code=HTTP_200_OK,
        operation_id="putChunk",
        request_max_body_size=UploadSession.MAX_CHUNK,
    )
    async def put_chunk(
        self, request: AuthedRequest, file_id: FromPath[UUID], index: FromPath[int], state: State
    ) -> ChunkOut:
        """One chunk's raw bytes (exactly the chunk's length); resending a chunk is harmless."""
        length = _content_length(request)
        r = await uploads.put_chunk(_files(state), request.user, FileId(file_id), index, request.stream(), length)
        UPLOAD_BYTES.inc(length)  # stored: exactly the chunk's length, or put_chunk refused it
        return ChunkOut(index=r.index, received=r.received, total_chunks=r.total_chunks)

    @get("/{file_id:uuid}", operation_id="getUpload")
    async def status(self, request: AuthedRequest, file_id: FromPath[UUID], state: State) -> FileOut:
        """The upload's state: the chunks received and those still missing."""
        return _out(await uploads.status(_files(state), request.user, FileId(file_id)))

    @get("/{file_id:uuid}/parts", operation_id="getPartUrls")
    async def part_urls(
        self,
        request: AuthedRequest,
        file_id: FromPath[UUID],
        state: State,
        indexes: FromQuery[list[int] | None] = None,
    ) -> PartUrlsOut:
        """Fresh part URLs for a direct upload (``?indexes=0&indexes=3``; without: the chunks still missing)."""
        urls = await uploads.part_urls(_files(state), request.user, FileId(file_id), indexes)
        return PartUrlsOut(file_id=urls.file_id, parts=_part_urls(urls), parts_expires_at=urls.expires_at)

    @post("/{file_id:uuid}/complete", status_code=HTTP_200_OK, operation_id="completeUpload")
    async def complete(
        self, request: AuthedRequest, file_id: FromPath[UUID], state: State, data: JSONBody[CompleteIn | None] = None
    ) -> FileOut:
        """Finish: every chunk present and the SHA-256 matching, or 409 naming the missing chunks / 422.

        The body is optional: without one, the checksum declared at initiate (if any) is checked.
        """
        body = data or CompleteIn()
        return _out(await uploads.complete(_files(state), request.user, FileId(file_id), body.checksum, _tags(body)))

    @post("/complete", status_code=HTTP_200_OK, operation_id="completeUploadById")
    async def complete_by_body(self, request: AuthedRequest, data: JSONBody[CompleteIn], state: State) -> FileOut:
        """The same, with the file id in the body."""
        if data.file_id is None:
            raise problem(400, "file_id is required", errors=[{"field": "file_id", "message": "required"}])
        return _out(
            await uploads.complete(_files(state), request.user, FileId(data.file_id), data.checksum, _tags(data))
        )

    @get("/{file_id:uuid}/download", operation_id="downloadFile")
    async def download(self, request: AuthedRequest, file_id: FromPath[UUID], state: State) -> DownloadOut:
        """An expiring link to the completed file."""
        link = await uploads.download(_files(state), request.user, FileId(file_id))
        return DownloadOut(
            download_url=link.url,
            expires_at=link.expires_at,
            filename=link.filename,
            size=link.size,
            content_type=link.content_type,
            checksum=link.checksum,
        )

    @delete("/{file_id:uuid}", status_code=HTTP_204_NO_CONTENT, operation_id="abortUpload")
    async def abort(self, request: AuthedRequest, file_id: FromPath[UUID], state: State) -> None:
        """Abort an unfinished upload and drop its chunks."""
        await uploads.abort(_files(state), request.user, FileId(file_id))


def _content_length(request: Request[Any, Any, Any]) -> int:
    raw = request.headers.get("content-length")
    if raw is None or not raw.isdigit():
        raise problem(411, "a chunk needs its Content-Length", slug="length-required")
    return int(raw)


@get(
    "/v1/files/blobs/{token:str}",
    opt=PUBLIC,
    tags=["files"],
    operation_id="fileBlob",
    summary="A completed file, by the signed, expiring URL that GET /v1/files/{id}/download gave (filesystem store)",
)
async def blob(
    token: FromPath[str],
    expires: FromQuery[int],
    filename: FromQuery[str],
    content_type: FromQuery[str],
    sig: FromQuery[str],
    state: State,
) -> File:
    """The filesystem store's download URLs land here; the signature and the expiry are checked first."""
    store = _files(state).store
    if not isinstance(store, FilesystemObjectStore):
        raise problem(404, "files are not served by the API with this store")
    try:
        key = blob_key(token)
    except ValueError:
        raise problem(404, "no such file") from None
    if not store.verify_download(key, expires, filename, content_type, sig, now=datetime.now(UTC)):
        raise problem(403, "the download link is invalid or expired")
    path = store.local_path(key)
    if not path.is_file():
        raise problem(404, "no such file")
    return File(path=path, filename=filename, media_type=content_type, content_disposition_type="attachment")
