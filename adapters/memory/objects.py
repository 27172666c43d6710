"""An in-memory object store: the storage port's twin for unit tests and BDD specs."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from datetime import timedelta
from urllib.parse import quote

from application.ports import PartLengthMismatch, StoredPart


class InMemoryObjectStore:
    """Objects and unfinished uploads in dicts; download URLs are opaque ``memory://`` links.

    With ``direct``, it also hands out part upload URLs (``memory://parts/...``, which nothing serves:
    a test plays the client with ``put_part``), like a store that takes parts from clients.
    """

    def __init__(self, *, min_part_size: int = 1, block_size: int = 64 * 1024, direct: bool = False) -> None:
        self.min_part_size = min_part_size
        self.supports_direct = direct
        self._block = block_size
        self.objects: dict[str, bytes] = {}
        self.uploads: dict[str, dict[int, bytes]] = {}  # upload id -> parts
        self._keys: dict[str, str] = {}  # upload id -> object key

    async def start_upload(self, key: str, *, part_size: int | None = None) -> str:
        upload_id = secrets.token_hex(8)
        self.uploads[upload_id] = {}
        self._keys[upload_id] = key
        return upload_id

    async def put_part(self, key: str, upload_id: str, index: int, data: AsyncIterable[bytes], size: int) -> StoredPart:
        parts = self._upload(key, upload_id)
        received = bytearray()
        async for block in data:
            received += block
            if len(received) > size:
                break
        if len(received) != size:
            raise PartLengthMismatch(expected=size, received=len(received))
        parts[index] = bytes(received)
        return StoredPart(index, hashlib.md5(received).hexdigest(), size)  # noqa: S324 - an ETag, as S3's

    async def part_upload_urls(
        self, key: str, upload_id: str, indexes: Sequence[int], *, expires_in: timedelta
    ) -> list[str]:
        if not self.supports_direct:
            raise NotImplementedError("this store takes no parts from clients")
        self._upload(key, upload_id)
        seconds = int(expires_in.total_seconds())
        return [f"memory://parts/{upload_id}/{i}?key={quote(key)}&expires_in={seconds}" for i in indexes]

    async def list_parts(self, key: str, upload_id: str) -> Sequence[StoredPart]:
        parts = self._upload(key, upload_id)
        return [StoredPart(i, hashlib.md5(b).hexdigest(), len(b)) for i, b in sorted(parts.items())]  # noqa: S324

    async def complete_upload(
        self, key: str, upload_id: str, parts: Sequence[StoredPart], *, digest: bool = True
    ) -> None:  # no digest
        held = self._upload(key, upload_id)
        if any(p.index not in held for p in parts):
            raise ValueError("a part to assemble is not stored")
        self.objects[key] = b"".join(held[p.index] for p in sorted(parts, key=lambda p: p.index))
        del self.uploads[upload_id], self._keys[upload_id]

    async def abort_upload(self, key: str, upload_id: str) -> None:
        if self._keys.get(upload_id) == key:
            del self.uploads[upload_id], self._keys[upload_id]

    async def read(self, key: str) -> AsyncIterator[bytes]:
        data = self.objects[key]
        for start in range(0, len(data), self._block):
            yield data[start : start + self._block]

    async def size(self, key: str) -> int | None:
        data = self.objects.get(key)
        return None if data is None else len(data)

    async def delete(self, key: str) -> None:
        self.objects.pop(key, None)

    async def download_url(self, key: str, *, filename: str, content_type: str, expires_in: timedelta) -> str:
        return f"memory://{quote(key)}?filename={quote(filename)}&expires_in={int(expires_in.total_seconds())}"

    def _upload(self, key: str, upload_id: str) -> dict[int, bytes]:
        if self._keys.get(upload_id) != key:
            raise KeyError(upload_id)
        return self.uploads[upload_id]
