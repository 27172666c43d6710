"""Files over HTTP on the in-memory adapters: a resumable upload from initiate to download, and its refusals."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import attrs
import pytest
from litestar.testing import AsyncTestClient

from adapters.memory import InMemoryStore
from adapters.storage.filesystem import FilesystemObjectStore
from domain.uploads import UploadSession
from tests.api.conftest import Api, build_app

pytestmark = pytest.mark.unit

CHUNK = UploadSession.MIN_CHUNK


def content(size: int) -> bytes:
    block = hashlib.sha256(b"chat4all").digest()
    return (block * (size // len(block) + 1))[:size]


async def initiate(api: Api, who: dict[str, Any], data: bytes, **extra: Any) -> Any:
    return await api.client.post(
        "/v1/files/initiate",
        json={"filename": "photo.jpg", "size": len(data), "content_type": "image/jpeg", "chunk_size": CHUNK, **extra},
        headers=who["headers"],
    )


async def test_a_resumable_upload_from_initiate_to_download(api: Api) -> None:
    ana = await api.user("ana")
    data = content(CHUNK * 2 + 100)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    started = await initiate(api, ana, data, checksum=digest)
    assert started.status_code == 201, started.text
    body = started.json()
    file_id, url = body["file_id"], body["upload_url"]
    assert (body["total_chunks"], body["chunk_size"]) == (3, CHUNK)

    parts = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]
    for i in (2, 0, 0):
        r = await api.client.put(url.format(index=i), content=parts[i], headers=ana["headers"])
        assert r.status_code == 200, r.text
    halfway = (await api.client.get(f"/v1/files/{file_id}", headers=ana["headers"])).json()
    early = await api.client.post(f"/v1/files/{file_id}/complete", json={}, headers=ana["headers"])
    await api.client.put(url.format(index=1), content=parts[1], headers=ana["headers"])
    done = await api.client.post("/v1/files/complete", json={"file_id": file_id}, headers=ana["headers"])
    link = await api.client.get(f"/v1/files/{file_id}/download", headers=ana["headers"])

    assert (halfway["status"], halfway["received_chunks"], halfway["missing_chunks"]) == ("uploading", 2, [1])
    assert early.status_code == 409
    assert early.json()["errors"] == [{"field": "chunks", "message": "1 chunk(s) missing: 1"}]
    assert done.status_code == 200, done.text
    assert (done.json()["status"], done.json()["checksum"]) == ("completed", digest)
    assert link.status_code == 200
    assert {k: link.json()[k] for k in ("filename", "size", "content_type", "checksum")} == {
        "filename": "photo.jpg",
        "size": len(data),
        "content_type": "image/jpeg",
        "checksum": digest,
    }


async def test_refusals_are_problems_and_change_nothing(api: Api) -> None:
    ana, bob = await api.user("ana"), await api.user("bob")
    data = content(CHUNK * 2)
    file_id = (await initiate(api, ana, data)).json()["file_id"]
    chunk = f"/v1/files/{file_id}/chunks"

    too_big = await api.client.post(
        "/v1/files/initiate", json={"filename": "a.bin", "size": 3 * 1024**3}, headers=ana["headers"]
    )
    wrong_length = await api.client.put(f"{chunk}/0", content=data[: CHUNK - 1], headers=ana["headers"])
    out_of_range = await api.client.put(f"{chunk}/7", content=data[:CHUNK], headers=ana["headers"])
    not_owner = await api.client.put(f"{chunk}/0", content=data[:CHUNK], headers=bob["headers"])
    not_owner_status = await api.client.get(f"/v1/files/{file_id}", headers=bob["headers"])
    unauthenticated = await api.client.put(f"{chunk}/0", content=data[:CHUNK])
    bad_name = await initiate(api, ana, data, filename="../..")
    bad_type = await initiate(api, ana, data, content_type="text/html\r\nSet-Cookie: a=b")

    codes = [r.status_code for r in (too_big, wrong_length, out_of_range, not_owner, not_owner_status, unauthenticated)]
    assert codes == [413, 400, 400, 404, 404, 401]
    assert [bad_name.status_code, bad_type.status_code] == [422, 422]
    assert [bad_name.json()["errors"][0]["field"], bad_type.json()["errors"][0]["field"]] == [
        "filename",
        "content_type",
    ]
    assert all(r.headers["content-type"].startswith("application/problem+json") for r in (too_big, wrong_length))
    status = (await api.client.get(f"/v1/files/{file_id}", headers=ana["headers"])).json()
    assert status["received_chunks"] == 0


async def uploaded(api: Api, who: dict[str, Any], data: bytes) -> str:
    started = (await initiate(api, who, data)).json()
    await api.client.put(started["upload_url"].format(index=0), content=data, headers=who["headers"])
    done = await api.client.post(f"/v1/files/{started['file_id']}/complete", json={}, headers=who["headers"])
    assert done.status_code == 200, done.text
    return str(started["file_id"])


async def test_a_file_message_shows_the_file_in_history_and_its_readers_download_it(api: Api) -> None:
    ana, bob, eve = await api.user("ana"), await api.user("bob"), await api.user("eve")
    conv = (await api.conversation(ana, "bob"))["conversation_id"]
    data = content(CHUNK)
    file_id = await uploaded(api, ana, data)

    sent = await api.client.post(
        "/v1/messages",
        json={"conversation_id": conv, "payload": {"type": "file", "file_id": file_id, "caption": "a photo"}},
        headers=ana["headers"],
    )
    history = await api.client.get(f"/v1/conversations/{conv}/messages", headers=bob["headers"])
    by_bob = await api.client.get(f"/v1/files/{file_id}/download", headers=bob["headers"])
    by_eve = await api.client.get(f"/v1/files/{file_id}/download", headers=eve["headers"])
    eve_forwards = await api.client.post(
        "/v1/messages",
        json={
            "conversation_id": (await api.conversation(eve, "ana"))["conversation_id"],
            "payload": {"type": "file", "file_id": file_id},
        },
        headers=eve["headers"],
    )

    assert sent.status_code == 202, sent.text
    [message] = history.json()["items"]
    assert message["payload"] == {
        "type": "file",
        "file_id": file_id,
        "caption": "a photo",
        "filename": "photo.jpg",
        "size": len(data),
        "content_type": "image/jpeg",
    }
    assert by_bob.status_code == 200
    assert by_bob.json()["size"] == len(data)
    assert by_eve.status_code == 404
    assert eve_forwards.status_code == 422
    assert eve_forwards.json()["errors"][0]["field"] == "payload.file_id"


async def test_completion_takes_no_body_and_checks_the_checksum_declared_at_initiate(api: Api) -> None:
    ana = await api.user("ana")
    data = content(CHUNK)
    good = (await initiate(api, ana, data, checksum="sha256:" + hashlib.sha256(data).hexdigest())).json()
    bad = (await initiate(api, ana, data, checksum="sha256:" + "0" * 64)).json()
    for started in (good, bad):
        await api.client.put(started["upload_url"].format(index=0), content=data, headers=ana["headers"])

    done = await api.client.post(f"/v1/files/{good['file_id']}/complete", headers=ana["headers"])
    refused = await api.client.post(f"/v1/files/{bad['file_id']}/complete", headers=ana["headers"])

    assert (done.status_code, done.json()["status"]) == (200, "completed")
    assert refused.status_code == 422


async def test_a_path_for_a_filename_keeps_only_its_last_segment(api: Api) -> None:
    ana = await api.user("ana")

    started = await initiate(api, ana, content(CHUNK), filename="../../etc/passwd")
    seen = await api.client.get(f"/v1/files/{started.json()['file_id']}", headers=ana["headers"])

    assert started.status_code == 201
    assert seen.json()["filename"] == "passwd"


async def test_an_aborted_upload_takes_no_more_chunks(api: Api) -> None:
    ana = await api.user("ana")
    data = content(CHUNK)
    file_id = (await initiate(api, ana, data)).json()["file_id"]

    aborted = await api.client.delete(f"/v1/files/{file_id}", headers=ana["headers"])
    late = await api.client.put(f"/v1/files/{file_id}/chunks/0", content=data, headers=ana["headers"])

    assert aborted.status_code == 204
    assert late.status_code == 409
    assert (await api.client.get(f"/v1/files/{file_id}", headers=ana["headers"])).json()["status"] == "aborted"


async def test_the_filesystem_stores_signed_link_serves_the_file_and_refuses_tampering(
    store: InMemoryStore, tmp_path: Path
) -> None:
    app = build_app(store)
    objects = FilesystemObjectStore(tmp_path / "files", secret=b"s" * 32, public_base_url="http://testserver.local")
    async with AsyncTestClient(app) as client:
        app.state.files = attrs.evolve(app.state.files, store=objects)
        api = Api(client)
        ana = await api.user("ana")
        data = content(CHUNK + 5)
        file_id = (await initiate(api, ana, data)).json()["file_id"]
        await client.put(f"/v1/files/{file_id}/chunks/0", content=data[:CHUNK], headers=ana["headers"])
        await client.put(f"/v1/files/{file_id}/chunks/1", content=data[CHUNK:], headers=ana["headers"])
        assert (await client.post(f"/v1/files/{file_id}/complete", json={}, headers=ana["headers"])).status_code == 200
        link = (await client.get(f"/v1/files/{file_id}/download", headers=ana["headers"])).json()["download_url"]
        path = link.removeprefix("http://testserver.local")

        served = await client.get(path)  # no bearer token: the signature is the permission
        renamed = await client.get(path.replace("filename=photo.jpg", "filename=evil.exe"))
        forged = await client.get(path[:-4] + "0000")
        expired = await client.get(re.sub(r"expires=\d+", "expires=1000", path))

    assert served.status_code == 200
    assert served.content == data
    assert 'filename="photo.jpg"' in served.headers["content-disposition"]
    assert served.headers["content-type"].startswith("image/jpeg")
    assert [r.status_code for r in (renamed, forged, expired)] == [403, 403, 403]
