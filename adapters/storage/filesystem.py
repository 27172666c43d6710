"""A directory as the object store: the embedded default (``<data dir>/files``), kept across restarts.

Layout under ``root``::

    uploads/<upload id>/meta.json      the key and the part size (its presence is the upload)
    uploads/<upload id>/data           the object being assembled: part i at offset i x part size
    uploads/<upload id>/<index>.part   part i is wholly in ``data``: its size and version (the tag)
    uploads/<upload id>/<index>.lock   held (``flock``) while part i's bytes are written into ``data``
    objects/<h[:2]>/<h>                a completed object, h = sha256 of its key

Parts are written in place, so completing an upload whose parts but the last have the part size
is an fsync and a rename: no copy of the object, and its bytes reach the disk once. Each part's
bytes are flushed to the disk as it lands (``fdatasync``), so the writing back happens while the
upload goes on rather than all at completion. A first send of a part streams straight into its
range of ``data``; a part sent again streams into a ``.tmp-*`` file first and is copied into place
only once complete, so a resend that breaks leaves the previous part whole. A part's marker is
written (``os.replace``) only after its bytes, and removed before they are overwritten; so a reader
of the markers never sees half a part. Two sends of the same part, or a send and a completion,
take the part's lock, which works across processes and within one (``flock`` on separate opens).
Other files are written as ``.tmp-*`` files next to their destination and moved in place, and a
stream that breaks or has the wrong length leaves no marker behind. Objects are named by the hash
of their key, so no key can name a path outside ``root`` (and none gets too long); keys with
``..`` segments, a leading ``/`` or a NUL are refused all the same, because they are a caller's
bug and other stores would read them differently.

Blocking file I/O runs in worker threads, a block (``block_size``) at a time, so memory stays at
a block per stream whatever the size of the file.

A disk that fails (``ENOSPC``, ``EIO``, a permission or a directory gone) raises
``StorageUnavailable``; the expected absences stay ``KeyError`` (no such upload or object) or
``None`` (``size``). Clients cannot send parts here themselves (``supports_direct`` is False).

Download URLs point at the HTTP API's blob route, ``<public_base_url>/v1/files/blobs/<token>``,
signed with HMAC-SHA256 over the key, expiry, filename and content type; the route checks them
with ``verify_download`` and streams ``read`` (or sends ``local_path``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import errno
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import tempfile
import threading
from collections.abc import AsyncGenerator, AsyncIterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, Final
from urllib.parse import urlencode

from application.ports import PartLengthMismatch, StorageUnavailable, StoredPart

BLOB_ROUTE: Final = "/v1/files/blobs/"
"""Where the HTTP API serves this store's objects: ``BLOB_ROUTE + <token>``."""

_TMP: Final = ".tmp-"
_META: Final = "meta.json"
_DATA: Final = "data"
_LOCK_SUFFIX: Final = ".lock"
_DEFAULT_PART_SIZE: Final = 64 * 1024 * 1024
"""Where parts go when the caller named no part size: apart (a sparse file), copied out at completion."""
_UPLOAD_ID = re.compile(r"[0-9a-f]{32}")
_PART = re.compile(r"(0|[1-9][0-9]*)\.part")
_COPY_BUFFER: Final = 8 * 1024 * 1024
# copy_file_range is refused across filesystems on some kernels and by some filesystems at all.
_NO_COPY_FILE_RANGE: Final = frozenset({errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM})
_SIGNATURE_VERSION: Final = "chat4all-blob-v1"


def check_key(key: str) -> str:
    """Return ``key`` if it is a safe object key.

    Raises:
        ValueError: it is empty, absolute, has a ``..`` segment or a NUL.
    """
    if not key or "\0" in key or key.startswith("/") or ".." in key.split("/"):
        raise ValueError(f"unsafe object key: {key!r}")
    return key


@contextlib.contextmanager
def _disk_errors() -> Iterator[None]:
    """Any OSError that escapes a store call (the expected absences are caught before) is the disk failing."""
    try:
        yield
    except OSError as e:
        raise StorageUnavailable(f"file storage failed: {e}") from e


def blob_token(key: str) -> str:
    """The URL path segment that names ``key`` (base64url, unpadded: no ``/`` for a proxy to decode)."""
    return base64.urlsafe_b64encode(key.encode()).rstrip(b"=").decode("ascii")


def blob_key(token: str) -> str:
    """The key a ``blob_token`` names.

    Raises:
        ValueError: ``token`` is not one.
    """
    try:
        key = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeError) as e:
        raise ValueError(f"not a blob token: {token!r}") from e
    if blob_token(key) != token:  # one spelling per key
        raise ValueError(f"not a blob token: {token!r}")
    return key


class FilesystemObjectStore:
    """Objects and uploads as files under ``root``; see the module's docstring for the layout."""

    def __init__(
        self,
        root: Path,
        *,
        secret: bytes,
        public_base_url: str,
        min_part_size: int = 1,
        block_size: int = 1024 * 1024,
    ) -> None:
        if len(secret) < 16:
            raise ValueError("the download URL secret needs at least 16 bytes")
        if block_size < 1:
            raise ValueError("block_size must be positive")
        self.min_part_size = min_part_size
        self.supports_direct = False
        self._uploads = root / "uploads"
        self._objects = root / "objects"
        self._secret = secret
        self._base_url = public_base_url.rstrip("/")
        self._block = block_size
        self._uploads.mkdir(parents=True, exist_ok=True)
        self._objects.mkdir(parents=True, exist_ok=True)

    # --- uploads -----------------------------------------------------------------------

    async def start_upload(self, key: str, *, part_size: int | None = None) -> str:
        check_key(key)
        if part_size is not None and part_size < 1:
            raise ValueError(f"a part size is at least 1 byte, not {part_size}")
        upload_id = secrets.token_hex(16)
        with _disk_errors():
            await asyncio.to_thread(self._create_upload, upload_id, key, part_size or _DEFAULT_PART_SIZE)
        return upload_id

    async def put_part(self, key: str, upload_id: str, index: int, data: AsyncIterable[bytes], size: int) -> StoredPart:
        if index < 0:
            raise ValueError(f"a part index is 0 or more, not {index}")
        upload = self._upload_dir(upload_id)
        with _disk_errors():
            part_size = await asyncio.to_thread(self._part_size, upload, key)
        if size > part_size:
            raise ValueError(f"a part of this upload has at most {part_size} bytes, not {size}")
        # A first send streams into place, holding the part's lock; anything else (a resend, or a
        # send racing another) streams into a temporary file and is copied in once complete.
        with _disk_errors():
            claimed = await asyncio.to_thread(_claim_first_send, upload, index)
        if claimed is not None:
            return await self._put_in_place(upload, index, part_size, data, size, claimed)
        return await self._put_via_temp(upload, index, part_size, data, size)

    async def part_upload_urls(
        self, key: str, upload_id: str, indexes: Sequence[int], *, expires_in: timedelta
    ) -> list[str]:
        raise NotImplementedError("the filesystem store takes parts through the API only")

    async def list_parts(self, key: str, upload_id: str) -> Sequence[StoredPart]:
        with _disk_errors():
            return await asyncio.to_thread(self._list_parts, key, self._upload_dir(upload_id))

    async def complete_upload(
        self, key: str, upload_id: str, parts: Sequence[StoredPart], *, digest: bool = True
    ) -> str | None:
        check_key(key)
        with _disk_errors():
            target = await asyncio.to_thread(self._complete, key, self._upload_dir(upload_id), parts)
            if not digest:
                return None
            # Hashed here, in one thread with the file still in the page cache: about twice as fast
            # as the caller streaming it back a block at a time.
            return await asyncio.to_thread(_file_sha256, target)

    async def abort_upload(self, key: str, upload_id: str) -> None:
        if _UPLOAD_ID.fullmatch(upload_id):
            with _disk_errors():
                await asyncio.to_thread(self._abort, key, self._uploads / upload_id)

    async def _put_in_place(
        self, upload: Path, index: int, part_size: int, data: AsyncIterable[bytes], size: int, lock: int
    ) -> StoredPart:
        try:
            with _disk_errors():
                out = await asyncio.to_thread(_open_range, upload, index * part_size)
            try:
                received = await self._receive(out, data, size)
                if received != size:
                    raise PartLengthMismatch(expected=size, received=received)
                with _disk_errors():
                    await asyncio.to_thread(out.start_writeback)
            finally:
                with _disk_errors():
                    await asyncio.to_thread(out.close)
            with _disk_errors():
                return await asyncio.to_thread(_mark_part, upload, index, size)
        finally:
            await asyncio.to_thread(os.close, lock)  # releases the part's flock

    async def _put_via_temp(
        self, upload: Path, index: int, part_size: int, data: AsyncIterable[bytes], size: int
    ) -> StoredPart:
        with _disk_errors():
            tmp, out = await asyncio.to_thread(_open_temp_part, upload, index)
        try:
            received = await self._receive(out, data, size)
            if received != size:
                raise PartLengthMismatch(expected=size, received=received)
            with _disk_errors():
                await asyncio.to_thread(out.close)
                return await asyncio.to_thread(_move_into_place, upload, index, part_size, tmp, size)
        finally:
            with _disk_errors():
                await asyncio.to_thread(_discard, out, tmp)

    # --- health ------------------------------------------------------------------------

    async def ready(self) -> bool:
        """True when a file can be written where uploads and objects go (a byte each, in unnamed files).

        Raises:
            StorageUnavailable: the disk refuses (read-only, full, gone, failing).
        """
        with _disk_errors():
            await asyncio.to_thread(_probe_writes, (self._uploads, self._objects))
        return True

    # --- objects -----------------------------------------------------------------------

    async def read(self, key: str) -> AsyncGenerator[bytes, None]:  # closable: a reader may stop early
        path = self.local_path(key)
        with _disk_errors():
            try:
                source = _ThreadFile(await asyncio.to_thread(path.open, "rb", buffering=0))
            except FileNotFoundError:
                raise KeyError(key) from None
            try:
                while block := await asyncio.to_thread(source.read, self._block):
                    yield block
            finally:
                await asyncio.to_thread(source.close)

    async def size(self, key: str) -> int | None:
        path = self.local_path(key)
        with _disk_errors():
            try:
                return (await asyncio.to_thread(path.stat)).st_size
            except FileNotFoundError:
                return None

    async def delete(self, key: str) -> None:
        path = self.local_path(key)
        with _disk_errors(), contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(path.unlink)

    def local_path(self, key: str) -> Path:
        """Where object ``key`` is (or would be) kept: for a server that sends the file itself.

        Raises:
            ValueError: ``key`` is unsafe (see ``check_key``).
        """
        digest = hashlib.sha256(check_key(key).encode()).hexdigest()
        return self._objects / digest[:2] / digest

    # --- download URLs -----------------------------------------------------------------

    async def download_url(self, key: str, *, filename: str, content_type: str, expires_in: timedelta) -> str:
        check_key(key)
        expires = int((datetime.now(UTC) + expires_in).timestamp())
        query = urlencode(
            {
                "expires": expires,
                "filename": filename,
                "content_type": content_type,
                "sig": self._signature(key, expires, filename, content_type),
            }
        )
        return f"{self._base_url}{BLOB_ROUTE}{blob_token(key)}?{query}"

    def verify_download(
        self, key: str, expires: int, filename: str, content_type: str, sig: str, *, now: datetime
    ) -> bool:
        """Whether a download URL's parameters are the ones this store signed, and it has not expired."""
        if now.timestamp() > expires:
            return False
        expected = self._signature(key, expires, filename, content_type).encode("ascii")
        return hmac.compare_digest(expected, sig.encode("utf-8", "backslashreplace"))

    def _signature(self, key: str, expires: int, filename: str, content_type: str) -> str:
        # A JSON array is unambiguous whatever the strings hold (no separator to smuggle in).
        message = json.dumps(
            [_SIGNATURE_VERSION, key, expires, filename, content_type], ensure_ascii=False, separators=(",", ":")
        )
        return hmac.new(self._secret, message.encode(), hashlib.sha256).hexdigest()

    # --- in worker threads -------------------------------------------------------------

    def _upload_dir(self, upload_id: str) -> Path:
        # Anything but our own ids (a path, "..") is no upload of ours.
        if not _UPLOAD_ID.fullmatch(upload_id):
            raise KeyError(upload_id)
        return self._uploads / upload_id

    def _create_upload(self, upload_id: str, key: str, part_size: int) -> None:
        upload = self._uploads / upload_id
        upload.mkdir()
        (upload / _DATA).touch()
        _write_atomically(upload / _META, json.dumps({"key": key, "part_size": part_size}).encode())

    @staticmethod
    def _meta(upload: Path, key: str) -> dict[str, Any]:
        try:
            meta: dict[str, Any] = json.loads((upload / _META).read_bytes())
        except FileNotFoundError:
            raise KeyError(upload.name) from None
        if meta.get("key") != key:
            raise KeyError(upload.name)
        return meta

    def _part_size(self, upload: Path, key: str) -> int:
        # Uploads started before parts were kept in place have no part size: none are left open
        # after a day (the janitor), so they are not read here.
        return int(self._meta(upload, key)["part_size"])

    async def _receive(self, out: _ThreadFile, data: AsyncIterable[bytes], size: int) -> int:
        """Write ``data`` to ``out`` a block at a time; return how many bytes came (stops past ``size``).

        One block is written in a thread while the next one arrives, so the disk and the network
        (or the HTTP parser) work at the same time; memory holds at most those two blocks.
        """
        received = 0
        pending: list[bytes] = []
        pending_bytes = 0
        writing: asyncio.Task[None] | None = None
        try:
            async for chunk in data:
                received += len(chunk)
                if received > size:
                    return received
                pending.append(chunk)
                pending_bytes += len(chunk)
                if pending_bytes >= self._block:
                    if writing is not None:
                        with _disk_errors():
                            await writing
                    writing = asyncio.create_task(asyncio.to_thread(out.write, pending))
                    pending, pending_bytes = [], 0
            with _disk_errors():
                if writing is not None:
                    await writing
                if pending:
                    await asyncio.to_thread(out.write, pending)
            return received
        finally:
            if writing is not None and not writing.done():
                await asyncio.wait({writing})  # the part is complete, or it failed: no write is left over
            if writing is not None and not writing.cancelled():
                writing.exception()  # seen: the error that matters is already propagating

    def _list_parts(self, key: str, upload: Path) -> list[StoredPart]:
        self._meta(upload, key)
        parts = []
        try:
            names = os.listdir(upload)
        except FileNotFoundError:
            raise KeyError(upload.name) from None
        for name in names:
            if match := _PART.fullmatch(name):
                with contextlib.suppress(FileNotFoundError):  # being replaced, or an abort racing us
                    parts.append(_read_marker(upload, int(match[1])))
        return sorted(parts, key=lambda p: p.index)

    def _complete(self, key: str, upload: Path, parts: Sequence[StoredPart]) -> Path:
        part_size = int(self._meta(upload, key)["part_size"])
        ordered = sorted(parts, key=lambda p: p.index)
        target = self.local_path(key)
        target.parent.mkdir(exist_ok=True)
        locks: list[int] = []
        try:
            for part in ordered:  # no part changes while the object is assembled
                locks.append(_lock(upload, part.index))
            for part in ordered:
                try:
                    held = _read_marker(upload, part.index)
                except FileNotFoundError:
                    raise ValueError(f"part {part.index} is not in this upload") from None
                if held != part:
                    raise ValueError(f"part {part.index} was replaced since it was listed")
            data = upload / _DATA
            in_place = [p.index for p in ordered] == list(range(len(ordered))) and all(
                p.size == part_size for p in ordered[:-1]
            )
            if in_place:  # the parts are the object already
                total = sum(p.size for p in ordered)
                with data.open("r+b", buffering=0) as out:
                    out.truncate(total)
                    os.fsync(out.fileno())
                os.replace(data, target)
            else:  # parts of other sizes, or gaps: the object is copied out of their ranges
                _copy_ranges(data, ordered, part_size, target)
        finally:
            for lock in locks:
                os.close(lock)
        _fsync_dir(target.parent)
        shutil.rmtree(upload, ignore_errors=True)
        return target

    def _abort(self, key: str, upload: Path) -> None:
        try:
            self._meta(upload, key)
        except KeyError:
            return  # unknown uploads are ignored
        # Renamed away first, so a part still streaming in finds no upload to land in.
        doomed = self._uploads / f"{_TMP}aborted-{upload.name}-{secrets.token_hex(4)}"
        try:
            upload.rename(doomed)
        except FileNotFoundError:
            return
        shutil.rmtree(doomed, ignore_errors=True)


def _mkstemp(directory: Path, suffix: str) -> tuple[int, str]:
    return tempfile.mkstemp(prefix=_TMP, suffix=suffix, dir=directory)


def _probe_writes(directories: Sequence[Path]) -> None:
    """Write a byte in each of ``directories``, in a file that is gone once closed.

    Not synced: the filesystem refuses a read-only mount, a missing directory, a full disk (space is
    reserved at write time) without it, and an fsync behind a busy disk's writeback could take seconds.
    """
    for directory in directories:
        with tempfile.TemporaryFile(dir=directory, prefix=_TMP) as probe:
            probe.write(b"0")
            probe.flush()


def _write_atomically(path: Path, content: bytes) -> None:
    fd, name = _mkstemp(path.parent, "")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(content)
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


def _write_all(out: BinaryIO, chunks: list[bytes]) -> None:
    for chunk in chunks:
        view = memoryview(chunk)
        while view:  # an unbuffered write may take less than it is given
            written = out.write(view)
            view = view[written or 0 :]


class _ThreadFile:
    """A file read or written from worker threads, whose ``close`` waits for the call in progress.

    A cancelled ``asyncio.to_thread`` call leaves its thread running: closing the file under it
    could let its descriptor be reused by another file while that thread still reads or writes.
    """

    def __init__(self, file: BinaryIO, *, offset: int | None = None) -> None:
        self._file = file
        self._lock = threading.Lock()
        self._offset = offset  # positioned writes from here (a part's range), else sequential
        self._start = offset

    def read(self, size: int) -> bytes:
        with self._lock:
            return self._file.read(size)

    def write(self, chunks: list[bytes]) -> None:
        with self._lock:
            if self._offset is None:
                _write_all(self._file, chunks)
                return
            # One system call for the block's pieces (the HTTP body arrives in small ones).
            views = [memoryview(c) for c in chunks if c]
            while views:
                written = os.pwritev(self._file.fileno(), views, self._offset)
                self._offset += written
                while views and written >= len(views[0]):
                    written -= len(views[0])
                    views.pop(0)
                if views and written:
                    views[0] = views[0][written:]

    def start_writeback(self) -> None:
        """Start writing the range written so far back to the disk, without waiting for it.

        So the writing back happens while the upload goes on, and completion's fsync finds little
        left to write. (``POSIX_FADV_DONTNEED`` starts writeback of the dirty pages; being dirty,
        they stay cached for completion's hash.)
        """
        with self._lock:
            if self._start is not None and self._offset is not None:
                os.posix_fadvise(self._file.fileno(), self._start, self._offset - self._start, os.POSIX_FADV_DONTNEED)

    def close(self) -> None:
        with self._lock:
            self._file.close()


def _lock(upload: Path, index: int, *, wait: bool = True) -> int:
    """Take part ``index``'s lock; its descriptor (closing it releases the lock).

    Raises:
        KeyError: the upload is gone (completed or aborted).
        BlockingIOError: ``wait`` is False and someone holds it.
    """
    try:
        fd = os.open(upload / f"{index}{_LOCK_SUFFIX}", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except FileNotFoundError:
        raise KeyError(upload.name) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _claim_first_send(upload: Path, index: int) -> int | None:
    """Part ``index``'s lock if nobody holds it and the part was never stored, else None."""
    try:
        lock = _lock(upload, index, wait=False)
    except BlockingIOError:
        return None
    if (upload / f"{index}.part").exists():
        os.close(lock)
        return None
    return lock


def _open_range(upload: Path, offset: int) -> _ThreadFile:
    try:
        fd = os.open(upload / _DATA, os.O_WRONLY | os.O_CLOEXEC)
    except FileNotFoundError:  # completed or aborted meanwhile
        raise KeyError(upload.name) from None
    return _ThreadFile(os.fdopen(fd, "wb", buffering=0), offset=offset)


def _open_temp_part(upload: Path, index: int) -> tuple[Path, _ThreadFile]:
    try:
        fd, name = _mkstemp(upload, f".{index}")
    except FileNotFoundError:  # aborted or completed meanwhile
        raise KeyError(upload.name) from None
    return Path(name), _ThreadFile(os.fdopen(fd, "wb", buffering=0))


def _move_into_place(upload: Path, index: int, part_size: int, tmp: Path, size: int) -> StoredPart:
    """Copy a complete temporary part into its range of ``data`` (under the part's lock) and mark it."""
    lock = _lock(upload, index)
    try:
        with contextlib.suppress(FileNotFoundError):
            (upload / f"{index}.part").unlink()  # its range is about to change
        try:
            out = os.open(upload / _DATA, os.O_WRONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise KeyError(upload.name) from None
        try:
            with tmp.open("rb", buffering=0) as source:
                if _copy_range(source.fileno(), out, size, dst_offset=index * part_size) != size:
                    raise OSError(errno.EIO, f"part {index} could not be copied whole")
            os.fdatasync(out)
        finally:
            os.close(out)
        return _mark_part(upload, index, size)
    finally:
        os.close(lock)


def _mark_part(upload: Path, index: int, size: int) -> StoredPart:
    """Record that part ``index`` is wholly in ``data``, under a new version: its tag."""
    part = StoredPart(index, f"{size:x}-{secrets.token_hex(8)}", size)
    try:
        _write_atomically(upload / f"{index}.part", json.dumps({"size": size, "etag": part.etag}).encode())
    except FileNotFoundError:  # aborted or completed meanwhile
        raise KeyError(upload.name) from None
    return part


def _read_marker(upload: Path, index: int) -> StoredPart:
    marker = json.loads((upload / f"{index}.part").read_bytes())
    return StoredPart(index, str(marker["etag"]), int(marker["size"]))


def _discard(out: _ThreadFile, tmp: Path) -> None:
    out.close()
    tmp.unlink(missing_ok=True)


def _copy_ranges(data: Path, parts: Sequence[StoredPart], part_size: int, target: Path) -> None:
    fd, name = _mkstemp(target.parent, "")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb", buffering=0) as out, data.open("rb", buffering=0) as source:
            for part in parts:
                copied = _copy_range(source.fileno(), out.fileno(), part.size, src_offset=part.index * part_size)
                if copied != part.size:
                    raise ValueError(f"part {part.index} is shorter than listed")
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _copy_range(source: int, out: int, size: int, *, src_offset: int = 0, dst_offset: int | None = None) -> int:
    """Copy ``size`` bytes of ``source`` from ``src_offset`` to ``out`` (at ``dst_offset``, else its position).

    In the kernel where it can (``copy_file_range``), else through a buffer; returns how many bytes.
    """
    copied = 0
    try:
        while copied < size:
            n = os.copy_file_range(
                source, out, size - copied, src_offset + copied, None if dst_offset is None else dst_offset + copied
            )
            if n == 0:
                return copied
            copied += n
    except OSError as e:
        if copied or e.errno not in _NO_COPY_FILE_RANGE:
            raise
    else:
        return copied
    while copied < size:
        block = os.pread(source, min(_COPY_BUFFER, size - copied), src_offset + copied)
        if not block:
            break
        view = memoryview(block)
        while view:
            at = None if dst_offset is None else dst_offset + copied
            written = os.write(out, view) if at is None else os.pwrite(out, view, at)
            view = view[written:]
            copied += written
    return copied


def _file_sha256(path: Path) -> str:
    with path.open("rb") as source:
        return hashlib.file_digest(source, "sha256").hexdigest()


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
