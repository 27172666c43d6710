"""Files: resumable chunked uploads into the object store, completion with a checksum, expiring downloads.

A file is an upload session (``domain.uploads``) whose chunks are the parts of one multipart
upload in the object store. Chunks arrive in any order, any number of times, from any API
process: each is streamed to the store (memory stays bounded by a block, whatever the file's
size) and recorded as a row of its own. Completion assembles the parts, hashes the object in
one streaming pass, and either makes it downloadable or fails it for good (a checksum mismatch
leaves nothing behind). Identical content is stored once: a completed file whose digest is
already stored shares that blob and drops its own copy.

A direct upload (``initiate_direct``, on stores that allow it) hands the client presigned part URLs
instead: the bytes go to the store, the API never sees them, so its chunks are what the store lists,
and completion takes the ETags the store gave the client for each part.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterable, Callable, Sequence
from datetime import datetime, timedelta

import attrs

from application.digests import RunningDigests, fed
from application.errors import Conflict, NotFound
from application.events import emit_file_completed
from application.limits import Bucket, RateLimits
from application.ports import Clock, IdGenerator, ObjectStore, PartLengthMismatch, StorageUnavailable, UnitOfWork
from domain.conversations import Participant
from domain.errors import BusinessRuleViolation, InvalidTransition
from domain.ids import FileId, UserId
from domain.uploads import DEFAULT_MAX_SIZE, BadChunk, ChecksumMismatch, MissingChunks, UploadSession, UploadStatus


@attrs.frozen
class FileSettings:
    max_size: int = DEFAULT_MAX_SIZE
    session_ttl: timedelta = timedelta(hours=24)
    """How long an unfinished upload stays open."""
    download_ttl: timedelta = timedelta(hours=1)
    part_url_ttl: timedelta = timedelta(hours=1)
    """How long a direct upload's part URLs work (never past the upload's own expiry; fresh ones on request)."""


@attrs.frozen
class FileDeps:
    uow: Callable[[], UnitOfWork]
    clock: Clock
    ids: IdGenerator
    store: ObjectStore
    settings: FileSettings = FileSettings()
    digests: RunningDigests = attrs.field(factory=RunningDigests)
    """This process's running digests of uploads arriving in order (see ``application/digests.py``)."""
    limits: RateLimits | None = None
    """Opening an upload counts against the owner's limit of costly calls."""


@attrs.frozen
class FileView:
    """An upload as its owner sees it."""

    file_id: FileId
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


@attrs.frozen
class ChunkReceipt:
    index: int
    received: int
    total_chunks: int


@attrs.frozen
class PartUrl:
    index: int
    url: str


@attrs.frozen
class PartUrls:
    """Where a direct upload's client PUTs chunks, until ``expires_at``."""

    file_id: FileId
    parts: list[PartUrl]
    expires_at: datetime


@attrs.frozen
class DirectUpload:
    """A direct upload just opened, with a URL for every chunk."""

    file: FileView
    parts: PartUrls


@attrs.frozen
class DownloadLink:
    url: str
    expires_at: datetime
    filename: str
    size: int
    content_type: str
    checksum: str


def view_of(s: UploadSession) -> FileView:
    digest = s.sha256 or s.declared_sha256
    return FileView(
        file_id=s.id,
        filename=s.filename,
        size=s.size,
        content_type=s.content_type,
        checksum=f"sha256:{digest}" if digest else None,
        status=s.status.value,
        chunk_size=s.chunk_size,
        total_chunks=s.total_chunks,
        received_chunks=len(s.received),
        missing_chunks=s.missing_chunks,
        expires_at=s.expires_at,
    )


def blob_key(file_id: FileId) -> str:
    """Where a file's own bytes go in the store."""
    return f"files/{file_id}"


async def initiate(
    d: FileDeps,
    owner: UserId,
    *,
    filename: str,
    size: int,
    content_type: str,
    checksum: str | None = None,
    chunk_size: int | None = None,
) -> FileView:
    """Open an upload and its multipart upload in the store.

    Raises:
        UploadTooLarge: over the size limit (413).
        BusinessRuleViolation: a name, size, chunk size or checksum is out of bounds.
    """
    session = await _open(
        d, owner, filename=filename, size=size, content_type=content_type, checksum=checksum, chunk_size=chunk_size
    )
    await _add(d, session)
    return view_of(session)


async def initiate_direct(
    d: FileDeps,
    owner: UserId,
    *,
    filename: str,
    size: int,
    content_type: str,
    checksum: str | None = None,
    chunk_size: int | None = None,
) -> DirectUpload:
    """Open an upload whose chunks the client sends to the store itself, with a part URL for every chunk.

    Raises:
        UploadTooLarge: over the size limit (413).
        BusinessRuleViolation: the store takes no parts from clients (``direct``: nothing is opened), or a
            name, size, chunk size or checksum is out of bounds.
    """
    if not d.store.supports_direct:
        raise BusinessRuleViolation("this file storage does not take direct uploads", field="direct")
    session = await _open(
        d,
        owner,
        filename=filename,
        size=size,
        content_type=content_type,
        checksum=checksum,
        chunk_size=chunk_size,
        direct=True,
    )
    urls = await _part_urls(d, session, range(session.total_chunks))
    await _add(d, session)
    return DirectUpload(file=view_of(session), parts=urls)


async def _open(
    d: FileDeps,
    owner: UserId,
    *,
    filename: str,
    size: int,
    content_type: str,
    checksum: str | None,
    chunk_size: int | None,
    direct: bool = False,
) -> UploadSession:
    now = d.clock.now()
    session = UploadSession.initiate(
        id=FileId(d.ids.new()),
        owner_id=owner,
        filename=filename,
        size=size,
        content_type=content_type or "application/octet-stream",
        checksum=checksum,
        chunk_size=chunk_size,
        at=now,
        expires_at=now + d.settings.session_ttl,
        max_size=d.settings.max_size,
        direct=direct,
    )
    if session.total_chunks > 1 and session.chunk_size < d.store.min_part_size:
        raise BusinessRuleViolation(
            f"chunk_size is at least {d.store.min_part_size} bytes with this store", field="chunk_size"
        )
    if d.limits is not None:
        await d.limits.check([(Bucket.EXPENSIVE, str(owner))])
    session.store_upload_id = await d.store.start_upload(blob_key(session.id), part_size=session.chunk_size)
    return session


async def _add(d: FileDeps, session: UploadSession) -> None:
    async with d.uow() as uow:
        await uow.uploads.add(session)
        await uow.commit()


async def _part_urls(d: FileDeps, session: UploadSession, indexes: Sequence[int]) -> PartUrls:
    """Presigned part URLs that expire with ``part_url_ttl``, or with the upload if that comes first."""
    now = d.clock.now()
    seconds = int(min(d.settings.part_url_ttl, session.expires_at - now).total_seconds())
    ttl = timedelta(seconds=max(seconds, 1))
    assert session.store_upload_id is not None
    urls = await d.store.part_upload_urls(blob_key(session.id), session.store_upload_id, indexes, expires_in=ttl)
    return PartUrls(
        file_id=session.id,
        parts=[PartUrl(index=i, url=url) for i, url in zip(indexes, urls, strict=True)],
        expires_at=now + ttl,
    )


async def part_urls(d: FileDeps, owner: UserId, file_id: FileId, indexes: Sequence[int] | None = None) -> PartUrls:
    """Fresh part URLs for a direct upload (to resume one whose URLs expired): for ``indexes``, else the missing chunks.

    Raises:
        NotFound: no such upload of the caller's.
        BusinessRuleViolation: not a direct upload (422), or an index outside the file (400).
        InvalidTransition: the upload is over (completed, failed, aborted, expired).
    """
    async with d.uow() as uow:
        session = await _owned(uow, file_id, owner)
    now = d.clock.now()
    if indexes is None and session.direct and session.status is UploadStatus.UPLOADING:
        await _note_stored_parts(d, session)
    return await _part_urls(d, session, session.part_indexes(indexes, at=now))


async def _note_stored_parts(d: FileDeps, session: UploadSession) -> None:
    """A direct upload's chunks are the parts the store holds (the API never saw them)."""
    assert session.store_upload_id is not None
    try:
        parts = await d.store.list_parts(blob_key(session.id), session.store_upload_id)
    except KeyError:
        return  # aborted or completed meanwhile: the recorded state says what it is
    session.receive_stored_parts({p.index: p.size for p in parts})


async def _owned(uow: UnitOfWork, file_id: FileId, owner: UserId, *, lock: bool = False) -> UploadSession:
    session = await uow.uploads.get(file_id, lock=lock)
    if session is None or session.owner_id != owner:
        raise NotFound("no such file")  # someone else's upload does not exist for the caller
    return session


async def status(d: FileDeps, owner: UserId, file_id: FileId) -> FileView:
    """The upload's progress: which chunks arrived and which are missing (what a client resumes from).

    A direct upload's chunks are the parts the store holds at the chunk's size, asked of the store.
    """
    async with d.uow() as uow:
        session = await _owned(uow, file_id, owner)
    if not session.expire(at=d.clock.now()) and session.direct and session.status is UploadStatus.UPLOADING:
        await _note_stored_parts(d, session)
    return view_of(session)


async def put_chunk(
    d: FileDeps, owner: UserId, file_id: FileId, index: int, data: AsyncIterable[bytes], length: int
) -> ChunkReceipt:
    """Stream chunk ``index`` into the store and record it; a resent chunk replaces the earlier copy.

    Raises:
        NotFound: no such upload of the caller's.
        BusinessRuleViolation: the index is outside the file, or the length is not the chunk's (400).
        InvalidTransition: the upload is over (completed, failed, aborted, expired).
    """
    async with d.uow() as uow:
        session = await _owned(uow, file_id, owner)
    now = d.clock.now()
    # The domain checks the index, the length and that the upload is open, before any byte is stored.
    probe = attrs.evolve(session, received=set())
    probe.receive_chunk(index, length, at=now)
    assert session.store_upload_id is not None
    digest = d.digests.for_chunk(file_id, index)  # the next chunk in order: hashed on its way to the store
    try:
        part = await d.store.put_part(
            blob_key(file_id), session.store_upload_id, index, data if digest is None else fed(data, digest), length
        )
    except PartLengthMismatch as exc:
        raise BadChunk(f"chunk {index}: {exc}", field="body") from exc
    except KeyError:
        raise InvalidTransition("the upload takes no more chunks") from None
    if digest is not None:
        d.digests.advance(file_id, index, digest, part)
    async with d.uow() as uow:
        await uow.uploads.add_chunk(file_id, index, at=now)
        await uow.commit()
        current = await uow.uploads.get(file_id)
    assert current is not None
    return ChunkReceipt(index=index, received=len(current.received), total_chunks=current.total_chunks)


async def _sha256_of(store: ObjectStore, key: str) -> str:
    digest = hashlib.sha256()
    async for block in store.read(key):
        digest.update(block)
    return digest.hexdigest()


async def complete(
    d: FileDeps,
    owner: UserId,
    file_id: FileId,
    checksum: str | None = None,
    parts: Sequence[tuple[int, str]] | None = None,
) -> FileView:
    """Assemble the chunks, check the whole file's SHA-256 and make it downloadable.

    A direct upload names its ``parts``: (index, ETag) for every chunk, the ETags the store answered
    the client's PUTs with; the store's parts must be those, each of the chunk's exact size.
    Repeating a successful completion answers the same. Identical content already stored is
    shared, and this upload's copy dropped. A completion that failed after the store assembled
    the parts (the store or the database went away) can be repeated: the assembled object is hashed.

    Raises:
        NotFound: no such upload of the caller's.
        MissingChunks: chunks are missing (409; the upload stays open).
        PartsMismatch: a direct upload's stored parts are not the ones named, or not the chunk's size (409).
        BusinessRuleViolation: ``parts`` missing for a direct upload, given for another, or not naming every
            chunk once (422).
        ChecksumMismatch: the digest is not the declared one (422; the upload is failed for good).
        InvalidTransition: the upload was aborted, failed or expired.
    """
    async with d.uow() as uow:
        session = await _owned(uow, file_id, owner, lock=True)
        now = d.clock.now()
        if session.status is UploadStatus.COMPLETED:
            return view_of(session)
        if session.expire(at=now):
            await uow.uploads.save(session)
            await uow.commit()
            raise InvalidTransition("upload is expired")
        if session.status is not UploadStatus.UPLOADING:
            raise InvalidTransition(f"upload is {session.status.value}")
        if not session.direct and parts is None and session.missing_chunks:
            raise MissingChunks(session.missing_chunks)
        own = blob_key(file_id)
        assert session.store_upload_id is not None
        streamed = None  # the digest computed as the chunks arrived in order, or by the store as it assembled
        try:
            stored = await d.store.list_parts(own, session.store_upload_id)
        except KeyError:
            # No upload in the store: an earlier completion assembled it, then failed before its commit.
            if await d.store.size(own) != session.size:
                raise InvalidTransition("the upload's chunks are no longer stored") from None
            session.mark_assembled()
        else:
            if session.direct or parts is not None:
                session.match_direct_parts({p.index: (p.etag, p.size) for p in stored}, parts, at=now)
            chunks = [p for p in stored if p.index < session.total_chunks]
            # Hashed once: on the way in (chunks came here in order), else by the store if it can.
            streamed = d.digests.finish(file_id, chunks)
            assembled = await d.store.complete_upload(own, session.store_upload_id, chunks, digest=streamed is None)
            streamed = streamed or assembled
        if session.direct:  # its chunks recorded, as the API records those it receives itself
            for index in range(session.total_chunks):
                await uow.uploads.add_chunk(file_id, index, at=now)
        session.store_upload_id = None
        sha256 = streamed or await _sha256_of(d.store, own)  # else one streaming pass over the object
        try:
            session.complete(sha256=sha256, checksum=checksum, at=now)
        except ChecksumMismatch:
            await d.store.delete(own)  # nothing of a failed file stays downloadable
            await uow.uploads.save(session)
            await uow.commit()
            raise
        shared = await uow.uploads.blob_of(sha256)
        session.blob_key = shared or own
        await uow.uploads.save(session)
        await emit_file_completed(uow.outbox, session, at=now.isoformat())
        await uow.commit()
    if shared is not None:
        # The content is stored already. The completion is committed: a store failing now leaves
        # an unreferenced copy behind rather than failing the request.
        with contextlib.suppress(StorageUnavailable):
            await d.store.delete(own)
    return view_of(session)


async def abort(d: FileDeps, owner: UserId, file_id: FileId) -> None:
    """Give up an unfinished upload and drop its stored chunks.

    Raises:
        NotFound: no such upload of the caller's.
        Conflict: the upload is already completed.
    """
    async with d.uow() as uow:
        session = await _owned(uow, file_id, owner, lock=True)
        if session.status is UploadStatus.COMPLETED:
            raise Conflict("a completed file cannot be aborted")
        if session.status is UploadStatus.UPLOADING:
            session.abort()
            upload_id, session.store_upload_id = session.store_upload_id, None
            # The store first: when it is unavailable the upload stays open, and an abort can be repeated.
            if upload_id is not None:
                await d.store.abort_upload(blob_key(file_id), upload_id)
            await uow.uploads.save(session)
            await uow.commit()


async def download(d: FileDeps, viewer: UserId, file_id: FileId) -> DownloadLink:
    """An expiring link to a completed file, for its owner and whoever sees a message carrying it.

    The readers are the senders and recipients of the file's messages who are still members of
    those messages' conversations. Anyone else is told the file does not exist.

    Raises:
        NotFound: no such file the caller may read, or it is not completed.
    """
    async with d.uow() as uow:
        session = await uow.uploads.get(file_id)
        if session is None or (
            session.owner_id != viewer and not await uow.messages.shares_file(file_id, Participant.user(viewer))
        ):
            raise NotFound("no such file")
    if session.status is not UploadStatus.COMPLETED or session.blob_key is None or session.sha256 is None:
        raise NotFound("the file is not complete")
    expires_at = d.clock.now() + d.settings.download_ttl
    url = await d.store.download_url(
        session.blob_key,
        filename=session.filename,
        content_type=session.content_type,
        expires_in=d.settings.download_ttl,
    )
    return DownloadLink(
        url=url,
        expires_at=expires_at,
        filename=session.filename,
        size=session.size,
        content_type=session.content_type,
        checksum=f"sha256:{session.sha256}",
    )


async def expire_abandoned(d: FileDeps, *, limit: int = 100) -> int:
    """Expire uploads left open past their expiry and drop their stored chunks; return how many (the janitor)."""
    now = d.clock.now()
    async with d.uow() as uow:
        due = await uow.uploads.expired(at=now, limit=limit)
    for session in due:
        # The store first: a janitor that dies in between finds the session open and tries again.
        if session.store_upload_id is not None:
            await d.store.abort_upload(blob_key(session.id), session.store_upload_id)
        session.expire(at=now)
        session.store_upload_id = None
    async with d.uow() as uow:
        for session in due:
            await uow.uploads.save(session)
        await uow.commit()
    return len(due)
