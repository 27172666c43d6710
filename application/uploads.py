"""Files: resumable chunked uploads into the object store, completion with a checksum, expiring downloads.

A file is an upload session (``domain.uploads``) whose chunks are the parts of one multipart
upload in the object store. Chunks arrive in any order, any number of times, from any API
process: each is streamed to the store (memory stays bounded by a block, whatever the file's
size) and recorded as a row of its own. Completion assembles the parts, hashes the object in
one streaming pass, and either makes it downloadable or fails it for good (a checksum mismatch
leaves nothing behind). Identical content is stored once: a completed file whose digest is
already stored shares that blob and drops its own copy.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterable, Callable
from datetime import datetime, timedelta

import attrs

from application.errors import Conflict, NotFound
from application.ports import Clock, IdGenerator, ObjectStore, PartLengthMismatch, UnitOfWork
from domain.errors import BusinessRuleViolation, InvalidTransition
from domain.ids import FileId, UserId
from domain.uploads import DEFAULT_MAX_SIZE, BadChunk, ChecksumMismatch, MissingChunks, UploadSession, UploadStatus


@attrs.frozen
class FileSettings:
    max_size: int = DEFAULT_MAX_SIZE
    session_ttl: timedelta = timedelta(hours=24)
    """How long an unfinished upload stays open."""
    download_ttl: timedelta = timedelta(hours=1)


@attrs.frozen
class FileDeps:
    uow: Callable[[], UnitOfWork]
    clock: Clock
    ids: IdGenerator
    store: ObjectStore
    settings: FileSettings = FileSettings()


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
    )
    if session.total_chunks > 1 and session.chunk_size < d.store.min_part_size:
        raise BusinessRuleViolation(
            f"chunk_size is at least {d.store.min_part_size} bytes with this store", field="chunk_size"
        )
    session.store_upload_id = await d.store.start_upload(blob_key(session.id))
    async with d.uow() as uow:
        await uow.uploads.add(session)
        await uow.commit()
    return view_of(session)


async def _owned(uow: UnitOfWork, file_id: FileId, owner: UserId, *, lock: bool = False) -> UploadSession:
    session = await uow.uploads.get(file_id, lock=lock)
    if session is None or session.owner_id != owner:
        raise NotFound("no such file")  # someone else's upload does not exist for the caller
    return session


async def status(d: FileDeps, owner: UserId, file_id: FileId) -> FileView:
    """The upload's progress: which chunks arrived and which are missing (what a client resumes from)."""
    async with d.uow() as uow:
        session = await _owned(uow, file_id, owner)
    session.expire(at=d.clock.now())
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
    try:
        await d.store.put_part(blob_key(file_id), session.store_upload_id, index, data, length)
    except PartLengthMismatch as exc:
        raise BadChunk(f"chunk {index}: {exc}", field="body") from exc
    except KeyError:
        raise InvalidTransition("the upload takes no more chunks") from None
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


async def complete(d: FileDeps, owner: UserId, file_id: FileId, checksum: str | None = None) -> FileView:
    """Assemble the chunks, check the whole file's SHA-256 and make it downloadable.

    Repeating a successful completion answers the same. Identical content already stored is
    shared, and this upload's copy dropped.

    Raises:
        NotFound: no such upload of the caller's.
        MissingChunks: chunks are missing (409; the upload stays open).
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
        if session.missing_chunks:
            raise MissingChunks(session.missing_chunks)
        own = blob_key(file_id)
        assert session.store_upload_id is not None
        parts = await d.store.list_parts(own, session.store_upload_id)
        await d.store.complete_upload(own, session.store_upload_id, parts)
        session.store_upload_id = None
        sha256 = await _sha256_of(d.store, own)
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
        await uow.commit()
    if shared is not None:
        await d.store.delete(own)  # the content is stored already
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
            await uow.uploads.save(session)
            await uow.commit()
            if upload_id is not None:
                await d.store.abort_upload(blob_key(file_id), upload_id)


async def download(d: FileDeps, viewer: UserId, file_id: FileId) -> DownloadLink:
    """An expiring link to a completed file, for its owner.

    Members of conversations whose messages carry the file join when file messages do.

    Raises:
        NotFound: no such file the caller may read, or it is not completed.
    """
    async with d.uow() as uow:
        session = await _owned(uow, file_id, viewer)
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
