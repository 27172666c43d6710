"""A directory as the object store: the embedded default (``<data dir>/files``), kept across restarts.

Layout under ``root``::

    uploads/<upload id>/meta.json      the key the upload belongs to (its presence is the upload)
    uploads/<upload id>/<index>.part   one file per part; a resent part replaces it atomically
    objects/<h[:2]>/<h>                a completed object, h = sha256 of its key

Every file is written as a ``.tmp-*`` file next to its destination and moved in place with
``os.replace`` (same directory, same filesystem), so a reader never sees half a part or half an
object, and a stream that breaks or has the wrong length leaves nothing behind. Objects are named
by the hash of their key, so no key can name a path outside ``root`` (and none gets too long); keys
with ``..`` segments, a leading ``/`` or a NUL are refused all the same, because they are a
caller's bug and other stores would read them differently.

Blocking file I/O runs in worker threads, a block (``block_size``) at a time, so memory stays at
a block per stream whatever the size of the file. Parts are not fsynced (a crash may lose parts
received just before it; ``list_parts`` then says which, and the client resends them); a completed
object is, with its directory, before it is moved in place.

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
from typing import BinaryIO, Final
from urllib.parse import urlencode

from application.ports import PartLengthMismatch, StorageUnavailable, StoredPart

BLOB_ROUTE: Final = "/v1/files/blobs/"
"""Where the HTTP API serves this store's objects: ``BLOB_ROUTE + <token>``."""

_TMP: Final = ".tmp-"
_META: Final = "meta.json"
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

    async def start_upload(self, key: str) -> str:
        check_key(key)
        upload_id = secrets.token_hex(16)
        with _disk_errors():
            await asyncio.to_thread(self._create_upload, upload_id, key)
        return upload_id

    async def put_part(self, key: str, upload_id: str, index: int, data: AsyncIterable[bytes], size: int) -> StoredPart:
        if index < 0:
            raise ValueError(f"a part index is 0 or more, not {index}")
        upload = self._upload_dir(upload_id)
        target = upload / f"{index}.part"
        # Only the disk's errors are the store's: a client's stream that breaks raises its own.
        with _disk_errors():
            tmp, out = await asyncio.to_thread(self._open_temp_part, upload, key, index)
        try:
            received = await self._receive(out, data, size)
            if received != size:
                raise PartLengthMismatch(expected=size, received=received)
            with _disk_errors():
                await asyncio.to_thread(_finish_part, out, tmp, target)
        except BaseException:
            with _disk_errors():
                await asyncio.to_thread(_discard, out, tmp)
            raise
        with _disk_errors():
            return await asyncio.to_thread(_stored_part, index, target)

    async def part_upload_urls(
        self, key: str, upload_id: str, indexes: Sequence[int], *, expires_in: timedelta
    ) -> list[str]:
        raise NotImplementedError("the filesystem store takes parts through the API only")

    async def list_parts(self, key: str, upload_id: str) -> Sequence[StoredPart]:
        with _disk_errors():
            return await asyncio.to_thread(self._list_parts, key, self._upload_dir(upload_id))

    async def complete_upload(self, key: str, upload_id: str, parts: Sequence[StoredPart]) -> None:
        check_key(key)
        with _disk_errors():
            await asyncio.to_thread(self._complete, key, self._upload_dir(upload_id), parts)

    async def abort_upload(self, key: str, upload_id: str) -> None:
        if _UPLOAD_ID.fullmatch(upload_id):
            with _disk_errors():
                await asyncio.to_thread(self._abort, key, self._uploads / upload_id)

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

    def _create_upload(self, upload_id: str, key: str) -> None:
        upload = self._uploads / upload_id
        upload.mkdir()
        _write_atomically(upload / _META, json.dumps({"key": key}).encode())

    @staticmethod
    def _check_upload(upload: Path, key: str) -> None:
        try:
            meta = json.loads((upload / _META).read_bytes())
        except FileNotFoundError:
            raise KeyError(upload.name) from None
        if meta.get("key") != key:
            raise KeyError(upload.name)

    def _open_temp_part(self, upload: Path, key: str, index: int) -> tuple[Path, _ThreadFile]:
        self._check_upload(upload, key)
        try:
            fd, name = _mkstemp(upload, f".{index}")
        except FileNotFoundError:  # aborted or completed meanwhile
            raise KeyError(upload.name) from None
        return Path(name), _ThreadFile(os.fdopen(fd, "wb", buffering=0))

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
        self._check_upload(upload, key)
        parts = []
        try:
            names = os.listdir(upload)
        except FileNotFoundError:
            raise KeyError(upload.name) from None
        for name in names:
            if match := _PART.fullmatch(name):
                with contextlib.suppress(FileNotFoundError):  # an abort racing us
                    parts.append(_stored_part(int(match[1]), upload / name))
        return sorted(parts, key=lambda p: p.index)

    def _complete(self, key: str, upload: Path, parts: Sequence[StoredPart]) -> None:
        self._check_upload(upload, key)
        target = self.local_path(key)
        target.parent.mkdir(exist_ok=True)
        fd, name = _mkstemp(target.parent, "")
        tmp = Path(name)
        try:
            with os.fdopen(fd, "wb", buffering=0) as out:
                for part in sorted(parts, key=lambda p: p.index):
                    _append_part(upload / f"{part.index}.part", part, out)
                os.fsync(out.fileno())
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(target.parent)
        shutil.rmtree(upload, ignore_errors=True)

    def _abort(self, key: str, upload: Path) -> None:
        try:
            self._check_upload(upload, key)
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

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self._lock = threading.Lock()

    def read(self, size: int) -> bytes:
        with self._lock:
            return self._file.read(size)

    def write(self, chunks: list[bytes]) -> None:
        with self._lock:
            _write_all(self._file, chunks)

    def close(self) -> None:
        with self._lock:
            self._file.close()


def _finish_part(out: _ThreadFile, tmp: Path, target: Path) -> None:
    out.close()
    try:
        os.replace(tmp, target)
    except FileNotFoundError:  # the upload was aborted while the part streamed in
        raise KeyError(target.parent.name) from None


def _discard(out: _ThreadFile, tmp: Path) -> None:
    out.close()
    tmp.unlink(missing_ok=True)


def _etag(stat: os.stat_result) -> str:
    # Names this version of the part: a resent part is a new file (new inode and mtime). Cheaper
    # than hashing every byte, which the upload's own checksum does once, end to end.
    return f"{stat.st_size:x}-{stat.st_mtime_ns:x}-{stat.st_ino:x}"


def _stored_part(index: int, path: Path) -> StoredPart:
    stat = path.stat()
    return StoredPart(index, _etag(stat), stat.st_size)


def _append_part(path: Path, part: StoredPart, out: BinaryIO) -> None:
    try:
        source = path.open("rb", buffering=0)
    except FileNotFoundError:
        raise ValueError(f"part {part.index} is not in this upload") from None
    with source:
        if _etag(os.fstat(source.fileno())) != part.etag:
            raise ValueError(f"part {part.index} was replaced since it was listed")
        if _copy(source.fileno(), out, part.size) != part.size:
            raise ValueError(f"part {part.index} is shorter than listed")


def _copy(source: int, out: BinaryIO, size: int) -> int:
    """Append ``size`` bytes of ``source`` to ``out``, in the kernel when it can; return how many."""
    copied = 0
    try:
        while copied < size:
            n = os.copy_file_range(source, out.fileno(), size - copied)
            if n == 0:
                return copied
            copied += n
    except OSError as e:
        if copied or e.errno not in _NO_COPY_FILE_RANGE:
            raise
    else:
        return copied
    while copied < size:
        block = os.read(source, min(_COPY_BUFFER, size - copied))
        if not block:
            break
        _write_all(out, [block])
        copied += len(block)
    return copied


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
