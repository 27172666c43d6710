"""Files over HTTP: direct uploads (presigned part URLs; S3 on a moto server), and a store that is down (503)."""

from __future__ import annotations

import contextlib
import hashlib
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from miniopy_async.api import Minio

from adapters.memory import InMemoryStore
from adapters.memory.objects import InMemoryObjectStore
from adapters.storage.filesystem import FilesystemObjectStore
from adapters.storage.s3 import S3ObjectStore, close_client, ensure_bucket
from domain.uploads import UploadSession
from tests.api.conftest import Api, build_app
from tests.builders import StoreOutage

pytestmark = [
    pytest.mark.unit,
    pytest.mark.filterwarnings("ignore:Sending a large body directly with raw bytes:ResourceWarning"),
]

CHUNK = UploadSession.MIN_CHUNK
PROBLEM = "application/problem+json"


def content(size: int) -> bytes:
    block = hashlib.sha256(b"direct").digest()
    return (block * (size // len(block) + 1))[:size]


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
async def app(store: InMemoryStore) -> AsyncIterator[tuple[Litestar, Api]]:
    application = build_app(store)
    async with AsyncTestClient(application) as client:
        yield application, Api(client)


def use_store(app: Litestar, objects: Any) -> None:
    app.state.files = attrs.evolve(app.state.files, store=objects)


@contextlib.contextmanager
def s3_in(app: tuple[Litestar, Api], endpoint: str, bucket: str) -> Iterator[S3ObjectStore]:
    """The app's store: S3 at ``endpoint``, through a client whose HTTP session lives on the app's event loop.

    The test client runs the app on a loop of its own, in another thread: the session is made there on
    first use, and closed there.
    """
    application, api = app
    client = Minio(endpoint, access_key="testing", secret_key="testing", secure=False, region="us-east-1")
    store = S3ObjectStore(client, bucket)
    use_store(application, store)
    try:
        yield store
    finally:
        api.client.blocking_portal.call(close_client, client)


async def initiate(api: Api, who: dict[str, Any], data: bytes, chunk_size: int = CHUNK, **extra: Any) -> Any:
    return await api.client.post(
        "/v1/files/initiate",
        json={
            "filename": "film.mp4",
            "size": len(data),
            "content_type": "video/mp4",
            "chunk_size": chunk_size,
            **extra,
        },
        headers=who["headers"],
    )


# --- direct uploads ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["filesystem", "memory"])
async def test_direct_uploads_are_refused_by_a_store_that_takes_no_parts_from_clients(
    app: tuple[Litestar, Api], store: InMemoryStore, tmp_path: Path, kind: str
) -> None:
    application, api = app
    if kind == "filesystem":
        use_store(application, FilesystemObjectStore(tmp_path, secret=b"s" * 32, public_base_url="http://t.local"))
    ana = await api.user("ana")

    refused = await initiate(api, ana, content(CHUNK), direct=True)

    assert refused.status_code == 422
    assert refused.headers["content-type"].startswith(PROBLEM)
    assert refused.json()["errors"] == [
        {"field": "direct", "message": "this file storage does not take direct uploads"}
    ]
    assert store.state.uploads == {}
    if kind == "filesystem":
        assert list((tmp_path / "uploads").iterdir()) == []


async def test_part_urls_and_parts_are_only_for_direct_uploads(app: tuple[Litestar, Api]) -> None:
    _, api = app
    ana = await api.user("ana")
    data = content(CHUNK)
    started = (await initiate(api, ana, data)).json()
    file_id = started["file_id"]
    await api.client.put(f"/v1/files/{file_id}/chunks/0", content=data, headers=ana["headers"])

    urls = await api.client.get(f"/v1/files/{file_id}/parts", headers=ana["headers"])
    tags = await api.client.post(
        f"/v1/files/{file_id}/complete", json={"parts": [{"index": 0, "etag": "x"}]}, headers=ana["headers"]
    )

    assert "parts" not in started
    assert (urls.status_code, urls.json()["errors"][0]["field"]) == (422, "direct")
    assert (tags.status_code, tags.json()["errors"][0]["field"]) == (422, "parts")


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
async def bucket(moto_endpoint: str) -> str:
    client = Minio(moto_endpoint, access_key="testing", secret_key="testing", secure=False, region="us-east-1")
    name = f"c4a-{uuid.uuid4().hex[:12]}"
    try:
        await ensure_bucket(client, name)
    finally:
        await close_client(client)
    return name


@pytest.mark.integration
async def test_a_direct_upload_to_s3_from_initiate_to_download(
    app: tuple[Litestar, Api], moto_endpoint: str, bucket: str
) -> None:
    with s3_in(app, moto_endpoint, bucket) as s3:
        await a_direct_upload_to_s3(app[1], s3)


async def a_direct_upload_to_s3(api: Api, s3: S3ObjectStore) -> None:
    ana = await api.user("ana")
    part = s3.min_part_size
    data = content(2 * part + 1000)

    started = await initiate(api, ana, data, chunk_size=part, direct=True, checksum=digest(data))
    assert started.status_code == 201, started.text
    body = started.json()
    file_id, urls = body["file_id"], {p["index"]: p["url"] for p in body["parts"]}
    etags: dict[int, str] = {}
    async with httpx.AsyncClient() as storage:  # the client, straight to S3

        async def send(index: int, payload: bytes) -> None:
            r = await storage.put(urls[index], content=payload)
            assert r.status_code == 200, r.text
            etags[index] = r.headers["etag"]

        await send(0, data[:part])
        await send(2, data[2 * part :] + b"extra")  # too long: S3 takes it, completion will not
        halfway = (await api.client.get(f"/v1/files/{file_id}", headers=ana["headers"])).json()
        fresh = await api.client.get(f"/v1/files/{file_id}/parts", headers=ana["headers"])
        urls.update({p["index"]: p["url"] for p in fresh.json()["parts"]})
        await send(1, data[part : 2 * part])
        tags = [{"index": i, "etag": etags[i]} for i in (0, 1, 2)]
        refused = await api.client.post(f"/v1/files/{file_id}/complete", json={"parts": tags}, headers=ana["headers"])
        await send(2, data[2 * part :])
    stale = await api.client.post(f"/v1/files/{file_id}/complete", json={"parts": tags}, headers=ana["headers"])
    tags[2]["etag"] = etags[2]
    done = await api.client.post("/v1/files/complete", json={"file_id": file_id, "parts": tags}, headers=ana["headers"])
    link = (await api.client.get(f"/v1/files/{file_id}/download", headers=ana["headers"])).json()
    async with httpx.AsyncClient() as http:
        downloaded = await http.get(link["download_url"])

    assert (body["total_chunks"], len(body["parts"])) == (3, 3)
    assert body["parts_expires_at"] < body["expires_at"]
    assert (halfway["received_chunks"], halfway["missing_chunks"]) == (1, [1, 2])  # part 2 is the wrong size
    assert [p["index"] for p in fresh.json()["parts"]] == [1, 2]
    assert refused.status_code == 409
    assert refused.headers["content-type"].startswith(PROBLEM)
    assert refused.json()["type"].endswith("/parts-mismatch")
    assert refused.json()["errors"][0]["field"] == "parts"
    assert stale.status_code == 409  # part 2 was sent again: its old tag names a part S3 no longer has
    assert done.status_code == 200, done.text
    assert (done.json()["status"], done.json()["checksum"], done.json()["received_chunks"]) == (
        "completed",
        digest(data),
        3,
    )
    assert downloaded.content == data


# --- the store is down ---------------------------------------------------------------------


def a_closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def unavailable(r: httpx.Response) -> bool:
    return (
        r.status_code == 503
        and r.headers["content-type"].startswith(PROBLEM)
        and r.json()["type"].endswith("/storage-unavailable")
        and int(r.headers["retry-after"]) > 0
    )


async def test_initiate_against_an_unreachable_s3_is_503_and_opens_nothing(
    app: tuple[Litestar, Api], store: InMemoryStore
) -> None:
    _, api = app
    ana = await api.user("ana")
    with s3_in(app, f"127.0.0.1:{a_closed_port()}", "c4a-down"):
        plain = await initiate(api, ana, content(CHUNK))
        direct = await initiate(api, ana, content(CHUNK), direct=True)

    assert unavailable(plain), plain.text
    assert unavailable(direct), direct.text
    assert "127.0.0.1" not in plain.text  # where the store is stays in the logs
    assert store.state.uploads == {}


async def test_chunks_and_completion_while_the_store_is_down_are_503_and_change_nothing(
    app: tuple[Litestar, Api],
) -> None:
    application, api = app
    objects = InMemoryObjectStore()
    outage = StoreOutage(objects)
    use_store(application, outage)
    ana = await api.user("ana")
    data = content(CHUNK + 10)
    file_id = (await initiate(api, ana, data)).json()["file_id"]
    chunk = f"/v1/files/{file_id}/chunks"

    outage.down = {"put_part"}
    put_while_down = await api.client.put(f"{chunk}/0", content=data[:CHUNK], headers=ana["headers"])
    after_put = (await api.client.get(f"/v1/files/{file_id}", headers=ana["headers"])).json()
    stored_after_put = [dict(parts) for parts in objects.uploads.values()]
    outage.down = set()
    for i, piece in enumerate((data[:CHUNK], data[CHUNK:])):
        assert (await api.client.put(f"{chunk}/{i}", content=piece, headers=ana["headers"])).status_code == 200
    outage.down = {"list_parts"}
    complete_while_down = await api.client.post(f"/v1/files/{file_id}/complete", json={}, headers=ana["headers"])
    after_complete = (await api.client.get(f"/v1/files/{file_id}", headers=ana["headers"])).json()
    outage.down = set()
    done = await api.client.post(f"/v1/files/{file_id}/complete", json={}, headers=ana["headers"])

    assert unavailable(put_while_down), put_while_down.text
    assert after_put["received_chunks"] == 0
    assert stored_after_put == [{}]
    assert unavailable(complete_while_down), complete_while_down.text
    assert after_complete["status"] == "uploading"
    assert (done.status_code, done.json()["status"]) == (200, "completed")
