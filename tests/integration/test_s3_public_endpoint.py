"""CHAT4ALL_S3_PUBLIC_ENDPOINT: presigned links name (and are signed for) the endpoint clients reach, while the
store keeps talking to CHAT4ALL_S3_ENDPOINT. On a moto server: the runtime's endpoint is ``localhost:<port>``,
the public one ``127.0.0.1:<port>``, two names of the same server, so a link that names the public one works.

moto checks no signatures, so the signature is compared with the one a client configured for the public
endpoint makes at the same instant (a SigV4 signature covers the Host header).
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from miniopy_async.api import Minio

from adapters.storage.s3 import S3ObjectStore, close_client, content_disposition
from application.ports import ObjectStore
from entrypoints.settings import Settings
from entrypoints.storage import object_store_for

pytestmark = pytest.mark.integration

BUCKET = "chat4all-public"
KEY = "files/public-endpoint"
DATA = b"bytes a browser downloads from the public endpoint\n"
EXPIRES = timedelta(minutes=10)


@pytest.fixture(scope="module")
def moto_port() -> Iterator[int]:
    """The port of an S3 server (moto, in a thread) on 127.0.0.1, which ``localhost`` reaches too."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        yield server.get_host_and_port()[1]
    finally:
        server.stop()


def s3_settings(port: int, **overrides: Any) -> Settings:
    return Settings(
        storage="s3",
        s3_endpoint=f"localhost:{port}",
        s3_access_key="testing",
        s3_secret_key="testing",
        s3_secure=False,
        s3_bucket=BUCKET,
        **overrides,
    )


@asynccontextmanager
async def stored(settings: Settings) -> AsyncIterator[ObjectStore]:
    """The runtime's store for ``settings``, holding ``DATA`` at ``KEY``."""
    async with object_store_for(settings) as store:
        upload_id = await store.start_upload(KEY)
        part = await store.put_part(KEY, upload_id, 0, chunks(DATA), len(DATA))
        await store.complete_upload(KEY, upload_id, [part])
        yield store


async def chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def download_url(store: ObjectStore) -> str:
    return await store.download_url(KEY, filename="notes.txt", content_type="text/plain", expires_in=EXPIRES)


async def signed_by_a_client_of(endpoint: str, url: str) -> str:
    """The download link a client configured for ``endpoint`` presigns at the instant ``url`` was signed."""
    query = parse_qs(urlsplit(url).query)
    signed_at = datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    client = Minio(endpoint, access_key="testing", secret_key="testing", secure=False, region="us-east-1")
    try:
        return await client.presigned_get_object(
            BUCKET,
            KEY,
            expires=EXPIRES,
            response_headers={
                "response-content-disposition": content_disposition("notes.txt"),
                "response-content-type": "text/plain",
            },
            request_date=signed_at,
        )
    finally:
        await close_client(client)


def a_closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def test_a_download_link_names_the_public_endpoint_is_signed_for_it_and_works_there(moto_port: int) -> None:
    public = f"127.0.0.1:{moto_port}"
    async with stored(s3_settings(moto_port, s3_public_endpoint=public)) as store:
        url = await download_url(store)
    assert urlsplit(url).scheme == "http"
    assert urlsplit(url).netloc == public
    assert url == await signed_by_a_client_of(public, url)
    assert url != await signed_by_a_client_of(f"localhost:{moto_port}", url)  # the host is in the signature
    async with httpx.AsyncClient() as http:
        r = await http.get(url)
    assert r.status_code == 200
    assert r.content == DATA
    assert 'filename="notes.txt"' in r.headers["content-disposition"]


async def test_direct_upload_part_links_name_the_public_endpoint_and_take_the_part_there(moto_port: int) -> None:
    public = f"127.0.0.1:{moto_port}"
    async with object_store_for(s3_settings(moto_port, s3_public_endpoint=public)) as store:
        key = f"{KEY}-direct"
        upload_id = await store.start_upload(key)
        (url,) = await store.part_upload_urls(key, upload_id, [0], expires_in=EXPIRES)
        assert urlsplit(url).netloc == public
        async with httpx.AsyncClient() as http:
            r = await http.put(url, content=DATA)
        assert r.status_code == 200, r.text
        (part,) = await store.list_parts(key, upload_id)
        assert (part.index, part.etag.strip('"'), part.size) == (0, r.headers["etag"].strip('"'), len(DATA))
        await store.complete_upload(key, upload_id, [part])
        assert await store.size(key) == len(DATA)


async def test_signing_asks_nothing_of_the_public_endpoint(moto_port: int) -> None:
    """The region is asked of the runtime's endpoint (once), never of the public one, which runtimes may not
    reach: here nothing listens there."""
    public = f"127.0.0.1:{a_closed_port()}"
    async with stored(s3_settings(moto_port, s3_public_endpoint=public)) as store:
        url = await download_url(store)
    assert urlsplit(url).netloc == public


async def test_the_public_endpoint_may_be_https_while_the_runtimes_speak_http(moto_port: int) -> None:
    settings = s3_settings(moto_port, s3_public_endpoint="files.example.com", s3_public_secure=True)
    async with stored(settings) as store:
        url = await download_url(store)
    assert url.startswith(f"https://files.example.com/{BUCKET}/")


async def test_without_a_public_endpoint_links_name_the_endpoint(moto_port: int) -> None:
    async with stored(s3_settings(moto_port)) as store:
        url = await download_url(store)
    assert urlsplit(url).netloc == f"localhost:{moto_port}"


async def test_the_store_is_ready_while_its_bucket_answers(moto_port: int) -> None:
    async with object_store_for(s3_settings(moto_port)) as store:
        assert isinstance(store, S3ObjectStore)
        assert await store.ready() is True
    client = Minio(f"localhost:{moto_port}", access_key="testing", secret_key="testing", secure=False)
    try:
        assert await S3ObjectStore(client, "no-such-bucket").ready() is False
    finally:
        await close_client(client)
