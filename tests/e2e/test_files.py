"""Files through `chat4all up`: an upload on the embedded filesystem store; the janitor expires an abandoned one."""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any

import psycopg
import pytest

from domain.uploads import UploadSession
from tests.e2e.platforms import a_user

pytestmark = pytest.mark.e2e

CHUNK = UploadSession.MIN_CHUNK


def test_an_abandoned_upload_expires_and_its_chunks_are_dropped_while_a_finished_one_downloads(stack: Any) -> None:
    http = stack.http
    ana = a_user(http, "files")
    data = os.urandom(CHUNK + 1000)

    def start() -> str:
        r = http.post(
            "/v1/files/initiate",
            json={"filename": "a.bin", "size": len(data), "chunk_size": CHUNK},
            headers=ana["headers"],
        )
        assert r.status_code == 201, r.text
        return str(r.json()["file_id"])

    finished, abandoned = start(), start()
    for file_id, parts in ((finished, (0, 1)), (abandoned, (0,))):
        for i in parts:
            body = data[i * CHUNK : (i + 1) * CHUNK]
            assert http.put(f"/v1/files/{file_id}/chunks/{i}", content=body, headers=ana["headers"]).status_code == 200
    done = http.post(f"/v1/files/{finished}/complete", json={}, headers=ana["headers"])
    assert done.status_code == 200, done.text
    uploads_dir = stack.data_dir / "files" / "uploads"
    assert len(list(uploads_dir.iterdir())) == 1  # the abandoned upload's parts
    with psycopg.connect(stack.database_url, autocommit=True) as db:  # as if a day had passed
        db.execute("update uploads set expires_at = now() - interval '1 hour' where id = %s", (abandoned,))

    def stored_status(file_id: str) -> str:
        with psycopg.connect(stack.database_url) as db:
            row = db.execute("select status from uploads where id = %s", (file_id,)).fetchone()
        assert row is not None
        return str(row[0])

    deadline = time.monotonic() + 30
    while stored_status(abandoned) != "expired" and time.monotonic() < deadline:
        time.sleep(0.2)

    assert stored_status(abandoned) == "expired"  # the sweeper runs every second in these stacks
    assert list(uploads_dir.iterdir()) == []
    assert http.get(f"/v1/files/{abandoned}", headers=ana["headers"]).json()["status"] == "expired"
    link = http.get(f"/v1/files/{finished}/download", headers=ana["headers"]).json()["download_url"]
    served = http.get(link.removeprefix(stack.base_url))
    assert served.status_code == 200
    assert hashlib.sha256(served.content).digest() == hashlib.sha256(data).digest()
