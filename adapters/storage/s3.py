"""S3 (AWS, MinIO, moto) as the object store, through miniopy-async.

A port upload is an S3 multipart upload and a port part is one S3 part, numbered ``index + 1``.
miniopy-async's part upload takes ``bytes``, so ``put_part`` holds one part in memory (parts are
bounded by the upload's chunk size) and checks its length before anything is sent: a part of the
wrong length never reaches S3. S3 refuses to complete an upload whose parts other than the last
are under 5 MiB (``min_part_size``).

Clients may send parts to S3 themselves (``supports_direct``): ``part_upload_urls`` presigns one
``PUT ?partNumber=<index + 1>&uploadId=<id>`` per part, and S3 answers each with the part's ETag.

S3 that cannot be reached (connection refused or reset, a timeout) or that fails (a 5xx answer,
``SlowDown``, a non-S3 answer from something in front of it) raises ``StorageUnavailable``; the
errors about the caller's uploads and objects stay ``KeyError`` and ``ValueError``, and anything
else S3 refuses (``AccessDenied``: a configuration to fix) is left as miniopy-async raised it.

The multipart calls are miniopy-async's internal ones (``_create_multipart_upload``,
``_upload_part``, ``_list_parts``, ``_complete_multipart_upload``, ``_abort_multipart_upload``):
its public API only uploads whole streams, and these are what it builds them from.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterable, Iterator, Sequence
from datetime import timedelta
from typing import Final, NoReturn
from urllib.parse import quote

import aiohttp
from miniopy_async.api import Minio
from miniopy_async.datatypes import Part
from miniopy_async.error import InvalidResponseError, MinioException, S3Error, ServerError

from application.ports import PartLengthMismatch, StorageUnavailable, StoredPart

S3_MIN_PART_SIZE: Final = 5 * 1024 * 1024
S3_MAX_PARTS: Final = 10_000
_REFUSED_PARTS: Final = frozenset({"InvalidPart", "InvalidPartOrder", "EntityTooSmall"})
# What S3 answers when it is the one failing, whatever the HTTP status says.
_TRANSIENT_CODES: Final = frozenset({"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout"})


@contextlib.contextmanager
def _unavailable() -> Iterator[None]:
    """S3 unreachable or failing (see the module's docstring) as ``StorageUnavailable``."""
    try:
        yield
    except S3Error as e:
        status = getattr(e.response, "status", 0)
        if e.code in _TRANSIENT_CODES or status >= 500:
            raise StorageUnavailable(f"object storage failed: {e.code}") from e
        raise
    except ServerError as e:  # an HTTP error without an S3 error body (5xx, 429)
        raise StorageUnavailable(f"object storage failed: HTTP {e.status_code}") from e
    except InvalidResponseError as e:  # not S3 answering: a proxy or load balancer in front of it
        raise StorageUnavailable("object storage gave a non-S3 answer") from e
    except (aiohttp.ClientError, OSError, TimeoutError) as e:  # refused, reset, DNS, timeouts
        raise StorageUnavailable(f"object storage unreachable: {e!r}") from e


def content_disposition(filename: str) -> str:
    """``attachment`` with ``filename`` as RFC 6266 says: an ASCII fallback, and the exact name in UTF-8."""
    fallback = "".join(c if 0x20 <= ord(c) < 0x7F and c not in '"\\' else "_" for c in filename) or "download"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


async def ensure_bucket(client: Minio, bucket: str) -> None:
    """Create ``bucket`` unless it exists (another process creating it at the same time is fine)."""
    if await client.bucket_exists(bucket):
        return
    try:
        await client.make_bucket(bucket)
    except S3Error as e:
        if e.code != "BucketAlreadyOwnedByYou":
            raise


async def close_client(client: Minio) -> None:
    """Close the client's HTTP session (miniopy-async leaves ``close_session`` unannotated)."""
    await client.close_session()  # type: ignore[no-untyped-call]


class S3ObjectStore:
    """Objects in one bucket; the caller owns ``client`` (and closes its session)."""

    def __init__(
        self,
        client: Minio,
        bucket: str,
        *,
        min_part_size: int = S3_MIN_PART_SIZE,
        block_size: int = 1024 * 1024,
        parts_in_memory: int = 2,
    ) -> None:
        self.min_part_size = min_part_size
        self.supports_direct = True
        self._client = client
        self._bucket = bucket
        self._block = block_size
        # A part is held whole (twice, briefly) until S3 has it: bound how many a process holds, so
        # its memory does not grow with the clients' concurrency. More wait their turn.
        self._parts_in_memory = asyncio.Semaphore(parts_in_memory)

    # --- health ------------------------------------------------------------------------

    async def ready(self) -> bool:
        """Whether the bucket exists, asked of S3 (a HEAD of the bucket: one cheap request).

        Raises:
            StorageUnavailable: S3 cannot be reached, or fails.
            S3Error: S3 refused (``AccessDenied``: the credentials).
        """
        with _unavailable():
            return await self._client.bucket_exists(self._bucket)

    # --- uploads -----------------------------------------------------------------------

    async def start_upload(self, key: str, *, part_size: int | None = None) -> str:  # S3 parts stand alone
        with _unavailable():
            return await self._client._create_multipart_upload(self._bucket, key, {})

    async def put_part(self, key: str, upload_id: str, index: int, data: AsyncIterable[bytes], size: int) -> StoredPart:
        if index < 0:
            raise ValueError(f"a part index is 0 or more, not {index}")
        async with self._parts_in_memory:
            return await self._put_part(key, upload_id, index, data, size)

    async def _put_part(
        self, key: str, upload_id: str, index: int, data: AsyncIterable[bytes], size: int
    ) -> StoredPart:
        chunks: list[bytes] = []
        received = 0
        async for chunk in data:
            received += len(chunk)
            if received > size:
                break
            chunks.append(chunk)
        if received != size:
            raise PartLengthMismatch(expected=size, received=received)
        # bytes, not a BytesIO: the client retries 5xx answers with the same body, and aiohttp would
        # send a BytesIO from where the last attempt left it (its end). aiohttp warns (ResourceWarning)
        # that a large bytes body is written in one go; for one part that is one memory copy.
        body = b"".join(chunks)
        del chunks
        with _unavailable():
            try:
                etag = await self._client._upload_part(self._bucket, key, body, None, upload_id, index + 1)
            except MinioException as e:  # the server answered: was it about the upload?
                await self._raise_if_no_upload(key, upload_id, e)
                raise
        return StoredPart(index, etag, size)

    async def part_upload_urls(
        self, key: str, upload_id: str, indexes: Sequence[int], *, expires_in: timedelta
    ) -> list[str]:
        """Presigned ``PUT`` URLs of S3's UploadPart, one per index (part ``index + 1``).

        Signing needs no request (the client's region is set, or known after its first call).

        Raises:
            ValueError: an index outside S3's parts (0 to 9,999), or ``expires_in`` outside 1 second to 7 days.
        """
        if any(not 0 <= i < S3_MAX_PARTS for i in indexes):
            raise ValueError(f"a part index is between 0 and {S3_MAX_PARTS - 1}")
        with _unavailable():
            return [
                await self._client.get_presigned_url(
                    "PUT",
                    self._bucket,
                    key,
                    expires=expires_in,
                    extra_query_params={"partNumber": str(i + 1), "uploadId": upload_id},
                )
                for i in indexes
            ]

    async def list_parts(self, key: str, upload_id: str) -> Sequence[StoredPart]:
        parts: list[StoredPart] = []
        marker: str | None = None
        while True:
            with _unavailable():
                try:
                    page = await self._client._list_parts(self._bucket, key, upload_id, part_number_marker=marker)
                except S3Error as e:
                    if e.code == "NoSuchUpload":
                        raise KeyError(upload_id) from e
                    raise
            parts.extend(StoredPart(p.part_number - 1, p.etag, p.size or 0) for p in page.parts)
            if not page.is_truncated or page.next_part_number_marker is None:
                return parts
            marker = str(page.next_part_number_marker)

    async def complete_upload(
        self, key: str, upload_id: str, parts: Sequence[StoredPart], *, digest: bool = True
    ) -> None:
        """Assemble ``parts`` (S3 does, without handing the bytes back: no digest).

        Raises:
            KeyError: there is no such upload.
            ValueError: S3 refused the parts (one not uploaded or replaced since, or too small).
        """
        s3_parts = [Part(p.index + 1, p.etag) for p in sorted(parts, key=lambda p: p.index)]
        with _unavailable():
            try:
                await self._client._complete_multipart_upload(self._bucket, key, upload_id, s3_parts)
            except S3Error as e:
                if e.code in _REFUSED_PARTS:
                    raise ValueError(f"S3 refused the parts: {e.code}") from e
                await self._raise_if_no_upload(key, upload_id, e)
                raise
            except MinioException as e:  # the server answered: was it about the upload?
                await self._raise_if_no_upload(key, upload_id, e)
                raise

    async def abort_upload(self, key: str, upload_id: str) -> None:
        with _unavailable():
            try:
                await self._client._abort_multipart_upload(self._bucket, key, upload_id)
            except S3Error as e:
                if e.code != "NoSuchUpload":
                    raise

    async def _raise_if_no_upload(self, key: str, upload_id: str, error: Exception) -> None:
        """Raise KeyError if ``error`` came from an upload that does not exist; return otherwise.

        S3 answers ``NoSuchUpload``; some S3-compatible servers (moto) fail with a 500 instead, so
        any other failure is followed by a ListParts, which does answer ``NoSuchUpload``.
        """
        if isinstance(error, S3Error) and error.code == "NoSuchUpload":
            raise KeyError(upload_id) from error
        try:
            await self._client._list_parts(self._bucket, key, upload_id, max_parts=1)
        except S3Error as e:
            if e.code == "NoSuchUpload":
                raise KeyError(upload_id) from error
        except MinioException:
            return  # the original error says more

    # --- objects -----------------------------------------------------------------------

    async def read(self, key: str) -> AsyncGenerator[bytes, None]:  # closable: a reader may stop early
        with _unavailable():
            try:
                response = await self._client.get_object(self._bucket, key)
            except S3Error as e:
                _raise_missing(e, key)
            finished = False
            try:
                async for block in response.content.iter_chunked(self._block):
                    yield block
                finished = True
            finally:
                if finished:
                    response.release()  # the body is read: the connection goes back to the pool
                else:
                    response.close()  # a half-read body cannot be reused: drop the connection

    async def size(self, key: str) -> int | None:
        with _unavailable():
            try:
                stat = await self._client.stat_object(self._bucket, key)
            except S3Error as e:
                if e.code in {"NoSuchKey", "NotFound"}:
                    return None
                raise
        return stat.size

    async def delete(self, key: str) -> None:
        with _unavailable():
            await self._client.remove_object(self._bucket, key)  # S3 answers 204 for a missing key too

    async def download_url(self, key: str, *, filename: str, content_type: str, expires_in: timedelta) -> str:
        """A presigned GET that S3 answers with ``filename`` as an attachment and ``content_type``.

        Raises:
            ValueError: ``expires_in`` is under a second or over 7 days (S3's limits for presigned URLs).
        """
        with _unavailable():  # signing is local, unless the bucket's region is still to be asked
            return await self._client.presigned_get_object(
                self._bucket,
                key,
                expires=expires_in,
                response_headers={
                    "response-content-disposition": content_disposition(filename),
                    "response-content-type": content_type,
                },
            )


def _raise_missing(error: S3Error, key: str) -> NoReturn:
    if error.code in {"NoSuchKey", "NotFound"}:
        raise KeyError(key) from error
    raise error
