"""ObjectStore: the in-memory twin, the filesystem store and S3 (a moto server) assemble and serve files alike."""

from __future__ import annotations

import hashlib
import random
import socket
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol, cast
from urllib.parse import parse_qs, parse_qsl, unquote, urlsplit

import httpx
import pytest
from miniopy_async.api import Minio

from adapters.memory.objects import InMemoryObjectStore
from adapters.storage.filesystem import BLOB_ROUTE, FilesystemObjectStore, blob_key
from adapters.storage.s3 import S3ObjectStore, close_client, content_disposition, ensure_bucket
from application.ports import ObjectStore, PartLengthMismatch, StorageUnavailable, StoredPart

pytestmark = [
    pytest.mark.contract,
    # aiohttp warns about every part over 1 MiB, which S3ObjectStore sends as bytes on purpose (see s3.py).
    pytest.mark.filterwarnings("ignore:Sending a large body directly with raw bytes:ResourceWarning"),
]

BLOCK = 64 * 1024
PUBLIC_URL = "http://files.test"
FILENAME = 'relatório "final" 2026.pdf'


class Subject(Protocol):
    """A store under test, and what a client gets from one of its download URLs."""

    @property
    def store(self) -> ObjectStore: ...

    @property
    def part_size(self) -> int:
        """The size of the test's parts but the last: the store's minimum, or enough for a few blocks."""
        ...

    async def fetch(self, url: str, *, filename: str, content_type: str) -> bytes:
        """Download ``url`` as a client would; check it is served as ``filename`` of ``content_type``."""
        ...


class MemorySubject:
    def __init__(self) -> None:
        self.store = InMemoryObjectStore(block_size=BLOCK)
        self.part_size = 3 * BLOCK + 17

    async def fetch(self, url: str, *, filename: str, content_type: str) -> bytes:
        assert url.startswith("memory://")
        path, _, query = url.removeprefix("memory://").partition("?")
        assert parse_qs(query)["filename"] == [filename]
        return await read_all(self.store, unquote(path))


class FilesystemSubject:
    def __init__(self, root: Path) -> None:
        self.store = FilesystemObjectStore(root, secret=b"s" * 32, public_base_url=PUBLIC_URL, block_size=BLOCK)
        self.part_size = 3 * BLOCK + 17

    async def fetch(self, url: str, *, filename: str, content_type: str) -> bytes:
        # What the HTTP API's blob route does: verify the signed parameters, then stream the object.
        parts = urlsplit(url)
        assert f"{parts.scheme}://{parts.netloc}" == PUBLIC_URL
        assert parts.path.startswith(BLOB_ROUTE)
        key = blob_key(parts.path.removeprefix(BLOB_ROUTE))
        query = dict(parse_qsl(parts.query))
        assert (query["filename"], query["content_type"]) == (filename, content_type)
        assert self.store.verify_download(
            key, int(query["expires"]), query["filename"], query["content_type"], query["sig"], now=datetime.now(UTC)
        )
        return await read_all(self.store, key)


class S3Subject:
    def __init__(self, client: Minio, bucket: str) -> None:
        self.store = S3ObjectStore(client, bucket, block_size=BLOCK)
        self.part_size = self.store.min_part_size

    async def fetch(self, url: str, *, filename: str, content_type: str) -> bytes:
        async with httpx.AsyncClient() as http:
            response = await http.get(url)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == content_type
        assert response.headers["content-disposition"] == content_disposition(filename)
        return response.content


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """``host:port`` of an S3 server (moto, in a thread) for the whole session."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"{host}:{port}"
    finally:
        server.stop()


@pytest.fixture(params=["memory", "filesystem", pytest.param("s3", marks=pytest.mark.integration)])
async def subject(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Subject]:
    if request.param == "memory":
        yield MemorySubject()
    elif request.param == "filesystem":
        yield FilesystemSubject(tmp_path / "files")
    else:
        endpoint: str = request.getfixturevalue("moto_endpoint")
        # moto checks no signatures; the region spares a GetBucketLocation per bucket.
        client = Minio(endpoint, access_key="testing", secret_key="testing", secure=False, region="us-east-1")
        bucket = f"c4a-{uuid.uuid4().hex[:12]}"
        try:
            await ensure_bucket(client, bucket)
            await ensure_bucket(client, bucket)  # idempotent: every process may call it at start-up
            yield S3Subject(client, bucket)
        finally:
            await close_client(client)


# --- helpers ---------------------------------------------------------------------------


def blob(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


async def stream(data: bytes, chunk: int = 50_000) -> AsyncIterator[bytes]:
    for start in range(0, len(data), chunk):
        yield data[start : start + chunk]


async def read_all(store: ObjectStore, key: str) -> bytes:
    return b"".join([block async for block in store.read(key)])


async def sha256_of(store: ObjectStore, key: str) -> str:
    digest = hashlib.sha256()
    async for block in store.read(key):
        digest.update(block)
    return digest.hexdigest()


def a_key() -> str:
    return f"files/{uuid.uuid4()}/blob"


async def put(store: ObjectStore, key: str, upload_id: str, index: int, data: bytes) -> StoredPart:
    return await store.put_part(key, upload_id, index, stream(data), len(data))


async def an_object(subject: Subject, key: str, data: bytes) -> None:
    """Upload ``data`` as ``key`` in parts of ``subject.part_size``."""
    store = subject.store
    upload_id = await store.start_upload(key)
    size = subject.part_size
    parts = [
        await put(store, key, upload_id, i, data[start : start + size])
        for i, start in enumerate(range(0, len(data), size))
    ]
    await store.complete_upload(key, upload_id, parts)


# --- uploads ---------------------------------------------------------------------------


async def test_parts_sent_in_any_order_and_resent_make_the_object_in_index_order(subject: Subject) -> None:
    store, key = subject.store, a_key()
    parts = [blob(subject.part_size, 1), blob(subject.part_size, 2), blob(1_000, 3)]
    upload_id = await store.start_upload(key)

    await put(store, key, upload_id, 2, parts[2])
    await put(store, key, upload_id, 0, blob(subject.part_size, 9))  # replaced below
    await put(store, key, upload_id, 1, parts[1])
    await put(store, key, upload_id, 0, parts[0])
    listed = await store.list_parts(key, upload_id)
    assembled = await store.complete_upload(key, upload_id, listed[::-1])  # the store puts them in order

    whole = b"".join(parts)
    assert await sha256_of(store, key) == hashlib.sha256(whole).hexdigest()
    # The filesystem store hashes the file it assembled; S3 and the in-memory store leave it to the caller.
    assert assembled == (hashlib.sha256(whole).hexdigest() if isinstance(store, FilesystemObjectStore) else None)
    assert await store.size(key) == len(whole)
    with pytest.raises(KeyError):  # a completed upload is gone
        await store.list_parts(key, upload_id)


async def test_list_parts_reports_the_parts_as_they_were_stored(subject: Subject) -> None:
    store, key = subject.store, a_key()
    upload_id = await store.start_upload(key)
    assert await store.list_parts(key, upload_id) == []

    first = await put(store, key, upload_id, 0, blob(subject.part_size, 1))
    third = await put(store, key, upload_id, 2, blob(700, 3))
    assert (first.index, first.size, third.index, third.size) == (0, subject.part_size, 2, 700)
    assert await store.list_parts(key, upload_id) == [first, third]

    resent = await put(store, key, upload_id, 0, blob(subject.part_size, 7))
    assert resent.etag != first.etag  # a new version of the part has a new tag
    assert await store.list_parts(key, upload_id) == [resent, third]


@pytest.mark.parametrize("sent", [-1, +1], ids=["short", "long"])
async def test_a_part_of_the_wrong_length_is_refused_and_nothing_of_it_is_kept(subject: Subject, sent: int) -> None:
    store, key = subject.store, a_key()
    upload_id = await store.start_upload(key)
    kept = await put(store, key, upload_id, 0, blob(subject.part_size, 1))
    announced = 2 * BLOCK + 10
    wrong = blob(announced + sent, 2)

    for index in (0, 1):  # a resent part and a new one
        with pytest.raises(PartLengthMismatch) as refused:
            await store.put_part(key, upload_id, index, stream(wrong, chunk=BLOCK // 3), announced)
        assert refused.value.expected == announced
        assert (refused.value.received < announced) if sent < 0 else (refused.value.received > announced)

    assert await store.list_parts(key, upload_id) == [kept]


async def test_a_part_longer_than_announced_is_not_read_to_its_end(subject: Subject) -> None:
    store, key = subject.store, a_key()
    upload_id = await store.start_upload(key)
    taken = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal taken
        while taken < 100 * BLOCK:  # a bound, so that a store that reads on fails rather than hangs
            taken += BLOCK // 4
            yield bytes(BLOCK // 4)

    with pytest.raises(PartLengthMismatch):
        await store.put_part(key, upload_id, 0, endless(), BLOCK)

    assert taken <= BLOCK + BLOCK // 4
    assert await store.list_parts(key, upload_id) == []


async def test_an_aborted_upload_is_gone(subject: Subject) -> None:
    store, key = subject.store, a_key()
    upload_id = await store.start_upload(key)
    await put(store, key, upload_id, 0, blob(1_000, 1))

    await store.abort_upload(key, upload_id)

    with pytest.raises(KeyError):
        await put(store, key, upload_id, 1, blob(1_000, 2))
    with pytest.raises(KeyError):
        await store.list_parts(key, upload_id)
    await store.abort_upload(key, upload_id)  # twice is harmless
    assert await store.size(key) is None


@pytest.mark.parametrize("upload_id", ["0" * 32, "no-such-upload"])
async def test_an_unknown_upload_is_a_key_error(subject: Subject, upload_id: str) -> None:
    store, key = subject.store, a_key()
    await store.start_upload(key)  # another upload of the same key exists

    with pytest.raises(KeyError):
        await put(store, key, upload_id, 0, blob(1_000, 1))
    with pytest.raises(KeyError):
        await store.list_parts(key, upload_id)
    with pytest.raises(KeyError):
        await store.complete_upload(key, upload_id, [StoredPart(0, "etag", 1_000)])
    await store.abort_upload(key, upload_id)  # ignored


async def test_completing_an_upload_of_an_existing_key_replaces_the_object(subject: Subject) -> None:
    store, key = subject.store, a_key()
    await an_object(subject, key, blob(5_000, 1))
    await an_object(subject, key, blob(3_000, 2))

    assert await read_all(store, key) == blob(3_000, 2)


# --- objects ---------------------------------------------------------------------------


async def test_size_and_delete(subject: Subject) -> None:
    store, key = subject.store, a_key()
    await an_object(subject, key, blob(10_000, 1))
    assert await store.size(key) == 10_000

    await store.delete(key)

    assert await store.size(key) is None
    with pytest.raises(KeyError):
        await read_all(store, key)
    await store.delete(key)  # a missing object is not an error


async def test_a_missing_object_has_no_size_and_cannot_be_read(subject: Subject) -> None:
    assert await subject.store.size(a_key()) is None
    with pytest.raises(KeyError):
        await anext(subject.store.read(a_key()))


async def test_reading_streams_an_object_in_blocks(subject: Subject) -> None:
    store, key = subject.store, a_key()
    data = blob(3 * BLOCK + 5, 1)
    upload_id = await store.start_upload(key)
    await store.complete_upload(key, upload_id, [await put(store, key, upload_id, 0, data)])  # one (last) part

    blocks = [block async for block in store.read(key)]

    assert len(blocks) >= 4
    assert max(len(b) for b in blocks) <= BLOCK
    assert b"".join(blocks) == data


async def test_a_reader_that_stops_early_leaves_the_store_usable(subject: Subject) -> None:
    store, key = subject.store, a_key()
    data = blob(8 * BLOCK, 1)
    await an_object(subject, key, data)

    reader = cast(AsyncGenerator[bytes, None], store.read(key))
    first = await anext(reader)
    assert first
    assert data.startswith(first)
    await reader.aclose()  # a client gone mid-download

    assert await read_all(store, key) == data
    await store.delete(key)
    assert await store.size(key) is None


async def test_a_download_url_serves_the_object_as_the_named_file(subject: Subject) -> None:
    store, key = subject.store, a_key()
    data = blob(20_000, 1)
    await an_object(subject, key, data)

    url = await store.download_url(
        key, filename=FILENAME, content_type="application/pdf", expires_in=timedelta(hours=1)
    )

    assert await subject.fetch(url, filename=FILENAME, content_type="application/pdf") == data


@pytest.mark.integration
async def test_an_s3_download_url_expires_when_asked(moto_endpoint: str) -> None:
    # moto checks no signatures (the filesystem store's tests cover refusals); the expiry is S3's
    # X-Amz-Expires, which real S3 enforces.
    client = Minio(moto_endpoint, access_key="testing", secret_key="testing", secure=False, region="us-east-1")
    try:
        url = await S3ObjectStore(client, "any-bucket").download_url(
            "files/x", filename="x.txt", content_type="text/plain", expires_in=timedelta(minutes=5)
        )
    finally:
        await close_client(client)
    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-Expires"] == ["300"]
    assert query["response-content-type"] == ["text/plain"]


# --- direct uploads: clients send parts to the store themselves -------------------------


async def test_only_s3_takes_parts_from_clients_and_the_others_hand_out_no_part_urls(subject: Subject) -> None:
    store, key = subject.store, a_key()
    upload_id = await store.start_upload(key)

    assert store.supports_direct is isinstance(subject, S3Subject)  # S3's part URLs: tested below
    if not store.supports_direct:
        with pytest.raises(NotImplementedError):
            await store.part_upload_urls(key, upload_id, [0], expires_in=timedelta(hours=1))


@pytest.mark.integration
async def test_s3_part_urls_take_parts_from_clients_and_the_upload_completes_with_their_etags(
    moto_endpoint: str,
) -> None:
    client = Minio(moto_endpoint, access_key="testing", secret_key="testing", secure=False, region="us-east-1")
    bucket = f"c4a-{uuid.uuid4().hex[:12]}"
    try:
        await ensure_bucket(client, bucket)
        store, key = S3ObjectStore(client, bucket, block_size=BLOCK), a_key()
        parts = [blob(store.min_part_size, 1), blob(store.min_part_size, 2), blob(1_000, 3)]
        upload_id = await store.start_upload(key)

        urls = await store.part_upload_urls(key, upload_id, [2, 0, 1], expires_in=timedelta(minutes=10))
        url_of = dict(zip([2, 0, 1], urls, strict=True))
        sent = [(2, parts[2]), (0, blob(store.min_part_size, 9)), (1, parts[1]), (0, parts[0])]  # 0 sent again
        etags = {}
        async with httpx.AsyncClient() as http:  # the client, straight to S3
            for index, data in sent:
                answer = await http.put(url_of[index], content=data)
                assert answer.status_code == 200, answer.text
                etags[index] = answer.headers["etag"]  # the last one sent counts
        listed = await store.list_parts(key, upload_id)
        await store.complete_upload(key, upload_id, listed)

        assert store.supports_direct is True
        assert len(set(urls)) == 3
        for url, part_number in zip(urls, ["3", "1", "2"], strict=True):
            query = {k: v for k, [v] in parse_qs(urlsplit(url).query).items()}
            assert (query["partNumber"], query["uploadId"], query["X-Amz-Expires"]) == (part_number, upload_id, "600")
        assert [(p.index, p.size) for p in listed] == [(0, len(parts[0])), (1, len(parts[1])), (2, len(parts[2]))]
        assert [f'"{p.etag}"' for p in listed] == [etags[0], etags[1], etags[2]]  # the resent part 0's tag
        assert await read_all(store, key) == b"".join(parts)
    finally:
        await close_client(client)


# --- an unreachable store --------------------------------------------------------------


def a_closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port  # nothing listens there any more: connections are refused


async def test_an_unreachable_s3_is_storage_unavailable_on_every_call() -> None:
    # The region is set, as in production: signing URLs needs no request, so those still work.
    client = Minio(f"127.0.0.1:{a_closed_port()}", access_key="k", secret_key="s", secure=False, region="us-east-1")
    store, key = S3ObjectStore(client, "c4a-down"), a_key()
    calls = {
        "start_upload": lambda: store.start_upload(key),
        "put_part": lambda: put(store, key, "up-1", 0, b"x" * 10),
        "list_parts": lambda: store.list_parts(key, "up-1"),
        "complete_upload": lambda: store.complete_upload(key, "up-1", [StoredPart(0, "tag", 10)]),
        "abort_upload": lambda: store.abort_upload(key, "up-1"),
        "read": lambda: read_all(store, key),
        "size": lambda: store.size(key),
        "delete": lambda: store.delete(key),
    }
    try:
        for name, call in calls.items():
            with pytest.raises(StorageUnavailable) as down:
                await call()
            assert "unreachable" in down.value.reason, name
        signed = await store.part_upload_urls(key, "up-1", [0], expires_in=timedelta(minutes=1))
        assert signed[0].startswith("http://127.0.0.1:")
    finally:
        await close_client(client)
