"""An upload's SHA-256, computed while its chunks stream in, when they arrive in order.

A process that receives chunk 0, then 1, then 2... of an upload feeds each into the upload's running
digest on its way to the store, so completion needs no second pass over the file. Chunks that
arrive out of order, or at another API process, or again, leave the running digest behind: it is
then not used, and completion hashes the assembled object in one streaming pass as before. An
object store cannot hand back a part before the upload completes (S3 cannot), and buffering a
chunk until its turn would cost memory, so there is no catching up.

The digest is trusted only for exactly the bytes the store holds: every part it covered is
recorded with the tag the store gave it (S3's ETag; the filesystem store's size, time and inode),
and completion compares those tags with the store's own list of parts. A chunk sent again (by
this process or another) changes its tag, and the digest is set aside.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from typing import Protocol

import attrs

from application.ports import StoredPart
from domain.ids import FileId


class Digest(Protocol):
    """What ``hashlib.sha256()`` gives."""

    def update(self, data: bytes, /) -> None: ...

    def copy(self) -> Digest: ...

    def hexdigest(self) -> str: ...


@attrs.frozen
class _Running:
    next_index: int
    digest: Digest
    tags: tuple[str, ...]


class RunningDigests:
    """The running digests of the uploads this process receives in order (at most ``capacity``, newest kept)."""

    def __init__(self, capacity: int = 1024) -> None:
        self._capacity = capacity
        self._open: OrderedDict[FileId, _Running] = OrderedDict()

    def for_chunk(self, file_id: FileId, index: int) -> Digest | None:
        """A copy of the digest so far, to feed chunk ``index`` into, if it is the next one in order; else None."""
        running = self._open.get(file_id)
        if running is None:
            return hashlib.sha256() if index == 0 else None
        return running.digest.copy() if index == running.next_index else None

    def advance(self, file_id: FileId, index: int, digest: Digest, part: StoredPart) -> None:
        """Chunk ``index`` is stored as ``part`` and was fed into ``digest``: it is the digest so far.

        A chunk that lost a race (the same index finished first elsewhere in this process) changes nothing.
        """
        running = self._open.get(file_id)
        expected = 0 if running is None else running.next_index
        if index != expected:
            return
        tags = () if running is None else running.tags
        self._open[file_id] = _Running(index + 1, digest, (*tags, part.etag))
        self._open.move_to_end(file_id)
        while len(self._open) > self._capacity:
            self._open.popitem(last=False)

    def finish(self, file_id: FileId, parts: Sequence[StoredPart]) -> str | None:
        """The hex SHA-256 of the object these parts make, if this process hashed exactly them; else None."""
        running = self._open.pop(file_id, None)
        if running is None or running.tags != tuple(p.etag for p in sorted(parts, key=lambda p: p.index)):
            return None
        return running.digest.hexdigest()

    def forget(self, file_id: FileId) -> None:
        """Drop an upload's digest (aborted, expired)."""
        self._open.pop(file_id, None)


async def fed(data: AsyncIterable[bytes], digest: Digest) -> AsyncIterator[bytes]:
    """``data`` unchanged, each block fed into ``digest`` as it passes."""
    async for block in data:
        digest.update(block)
        yield block
