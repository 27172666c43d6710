"""Where files' bytes live, for every runtime alike: the filesystem store (the embedded default) or S3/MinIO.

Kept apart from the composition root so that workers that only need the store start quickly.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from adapters.storage.filesystem import FilesystemObjectStore
from application.ports import ObjectStore
from entrypoints.settings import Settings

if TYPE_CHECKING:
    from aiohttp_retry import RetryClient


@asynccontextmanager
async def object_store_for(settings: Settings) -> AsyncIterator[ObjectStore]:
    """The filesystem store (embedded default: files under the data dir), or S3/MinIO, for every runtime alike."""
    if settings.storage == "s3":
        # Imported here: the S3 client (aiohttp) costs every runtime's start-up half a second otherwise.
        from miniopy_async.api import Minio

        from adapters.storage.s3 import S3ObjectStore, close_client, ensure_bucket

        if not (settings.s3_endpoint and settings.s3_access_key and settings.s3_secret_key):
            raise SystemExit("CHAT4ALL_STORAGE=s3 needs CHAT4ALL_S3_ENDPOINT, _ACCESS_KEY and _SECRET_KEY")
        client = Minio(
            settings.s3_endpoint,
            access_key=settings.s3_access_key.get_secret_value(),
            secret_key=settings.s3_secret_key.get_secret_value(),
            secure=settings.s3_secure,
            region=settings.s3_region,
            session=s3_session(settings.s3_timeout_s),
            server_url=s3_public_url(settings),
        )
        await ensure_bucket(client, settings.s3_bucket)
        try:
            yield S3ObjectStore(client, settings.s3_bucket)
        finally:
            await close_client(client)
        return
    # Links are signed with a key derived from the JWT key, which every runtime of a stack shares
    # (the API checks what the channel workers sign); a runtime without it signs with a key of its
    # own, and the links it makes do not verify elsewhere.
    jwt = settings.jwt_secret
    yield FilesystemObjectStore(
        settings.files_dir or settings.data_dir / "files",
        secret=files_url_key(jwt.get_secret_value()) if jwt is not None else secrets.token_bytes(32),
        public_base_url=http_base_url(settings),
    )


def s3_public_url(settings: Settings) -> str | None:
    """The S3 endpoint presigned links name (CHAT4ALL_S3_PUBLIC_ENDPOINT), as a URL; None: the endpoint itself.

    miniopy-async builds and signs presigned URLs for its ``server_url`` (a SigV4 signature covers the Host
    header, so a link rewritten afterwards would be refused) and sends every request to its endpoint. The
    bucket's region, part of the signature, comes from CHAT4ALL_S3_REGION or is asked once of the endpoint,
    never of the public one, which the runtimes may not reach.
    """
    if settings.s3_public_endpoint is None:
        return None
    secure = settings.s3_secure if settings.s3_public_secure is None else settings.s3_public_secure
    return f"{'https' if secure else 'http'}://{settings.s3_public_endpoint}"


@runtime_checkable
class CheckedStore(Protocol):
    """A store that can tell whether it is usable (the S3 and filesystem stores)."""

    async def ready(self) -> bool: ...


async def store_ready(store: ObjectStore) -> bool:
    """Whether ``store`` can take files now (raising says why not); a store that cannot fail (the in-memory
    one of the tests) always can."""
    return await store.ready() if isinstance(store, CheckedStore) else True


def files_url_key(jwt_secret: str) -> bytes:
    """The key that signs the filesystem store's download URLs: derived from, and not equal to, the JWT key."""
    return hmac.new(jwt_secret.encode(), b"chat4all/file-download-urls/v1", hashlib.sha256).digest()


def http_base_url(settings: Settings) -> str:
    """Where clients reach this HTTP API (CHAT4ALL_PUBLIC_URL, else the listen address)."""
    if settings.public_url:
        return settings.public_url.rstrip("/")
    host = "127.0.0.1" if settings.host in ("", "0.0.0.0") else settings.host  # noqa: S104 - comparing
    return f"http://{host}:{settings.http_port}"


def s3_session(timeout_s: float) -> RetryClient:
    """miniopy-async's session with bounded waits: its own waits 5 minutes on an S3 that does not answer.

    5xx answers are retried a few times within the request, as miniopy-async does; an S3 still
    failing then is ``StorageUnavailable`` (503) rather than a request held for minutes.
    """
    from aiohttp import ClientSession, ClientTimeout, TCPConnector
    from aiohttp_retry import ExponentialRetry, RetryClient  # miniopy-async's own dependency

    timeout = ClientTimeout(connect=min(timeout_s, 5.0), sock_read=timeout_s)
    return RetryClient(
        ClientSession(connector=TCPConnector(limit=64), timeout=timeout),
        retry_options=ExponentialRetry(attempts=3, factor=0.2, statuses={500, 502, 503, 504}),
    )
