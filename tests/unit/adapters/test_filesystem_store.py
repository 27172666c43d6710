"""The filesystem store on its own: safe paths, atomic files, restarts and signed download URLs."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest

from adapters.storage import filesystem
from adapters.storage.filesystem import BLOB_ROUTE, FilesystemObjectStore, blob_key, blob_token
from application.ports import PartLengthMismatch, StorageUnavailable

SECRET = b"k" * 32
KEY = "files/3f1c/relatório.pdf"


def a_store(root: Path, *, secret: bytes = SECRET, block_size: int = 4096) -> FilesystemObjectStore:
    return FilesystemObjectStore(root, secret=secret, public_base_url="https://chat.example/", block_size=block_size)


async def stream(data: bytes, chunk: int = 1000) -> AsyncIterator[bytes]:
    for start in range(0, len(data), chunk):
        yield data[start : start + chunk]


async def read_all(store: FilesystemObjectStore, key: str) -> bytes:
    return b"".join([block async for block in store.read(key)])


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith(".tmp-")]


# --- keys and paths --------------------------------------------------------------------


@pytest.mark.parametrize("key", ["../escape", "files/../../escape", "..", "/etc/passwd", "files/a\0b", ""])
async def test_unsafe_keys_are_refused(tmp_path: Path, key: str) -> None:
    sut = a_store(tmp_path)

    with pytest.raises(ValueError, match="unsafe object key"):
        await sut.start_upload(key)
    with pytest.raises(ValueError, match="unsafe object key"):
        await sut.size(key)
    with pytest.raises(ValueError, match="unsafe object key"):
        await sut.delete(key)
    with pytest.raises(ValueError, match="unsafe object key"):
        await anext(sut.read(key))
    with pytest.raises(ValueError, match="unsafe object key"):
        await sut.download_url(key, filename="x", content_type="text/plain", expires_in=timedelta(minutes=1))
    assert files_under(tmp_path) == []


async def test_a_key_with_slashes_names_one_file_inside_the_objects_directory(tmp_path: Path) -> None:
    sut = a_store(tmp_path)
    upload_id = await sut.start_upload(KEY)
    part = await sut.put_part(KEY, upload_id, 0, stream(b"%PDF"), 4)
    await sut.complete_upload(KEY, upload_id, [part])

    path = sut.local_path(KEY)
    assert path.read_bytes() == b"%PDF"
    assert path.parent.parent == tmp_path / "objects"
    assert files_under(tmp_path) == [str(path.relative_to(tmp_path))]  # and the upload is cleaned up


async def test_an_upload_id_that_is_a_path_is_no_upload(tmp_path: Path) -> None:
    sut = a_store(tmp_path)
    upload_id = await sut.start_upload(KEY)
    await sut.put_part(KEY, upload_id, 0, stream(b"kept"), 4)
    before = files_under(tmp_path)

    with pytest.raises(KeyError):
        await sut.put_part(KEY, f"../uploads/{upload_id}", 1, stream(b"x"), 1)
    with pytest.raises(KeyError):
        await sut.list_parts(KEY, "../objects")
    await sut.abort_upload(KEY, "..")  # ignored: it must not remove the store's directories
    await sut.abort_upload(KEY, f"../uploads/{upload_id}")

    assert files_under(tmp_path) == before


async def test_an_upload_of_another_key_is_no_upload(tmp_path: Path) -> None:
    sut = a_store(tmp_path)
    upload_id = await sut.start_upload(KEY)

    with pytest.raises(KeyError):
        await sut.put_part("files/other", upload_id, 0, stream(b"x"), 1)
    await sut.abort_upload("files/other", upload_id)  # ignored

    assert await sut.list_parts(KEY, upload_id) == []


# --- atomic files ----------------------------------------------------------------------


async def test_parts_are_written_in_place_and_a_completion_is_a_rename(tmp_path: Path) -> None:
    sut = a_store(tmp_path)
    upload_id = await sut.start_upload(KEY, part_size=6)
    upload = tmp_path / "uploads" / upload_id
    parts = [
        await sut.put_part(KEY, upload_id, 1, stream(b"world"), 5),
        await sut.put_part(KEY, upload_id, 0, stream(b"hello "), 6),
    ]
    data = upload / "data"
    inode = data.stat().st_ino

    assert data.read_bytes() == b"hello world"
    assert sorted(p.name for p in upload.iterdir()) == ["0.lock", "0.part", "1.lock", "1.part", "data", "meta.json"]
    await sut.complete_upload(KEY, upload_id, parts)
    assert sut.local_path(KEY).stat().st_ino == inode  # moved, not copied
    assert await read_all(sut, KEY) == b"hello world"
    assert files_under(tmp_path) == [str(sut.local_path(KEY).relative_to(tmp_path))]


async def test_parts_of_other_sizes_than_announced_are_copied_out_in_order(tmp_path: Path) -> None:
    sut = a_store(tmp_path)
    upload_id = await sut.start_upload(KEY)  # no part size: parts lie apart, and are copied out
    parts = [
        await sut.put_part(KEY, upload_id, i, stream(word), len(word)) for i, word in enumerate([b"ab", b"c", b"de"])
    ]

    await sut.complete_upload(KEY, upload_id, parts[::-1])

    assert await read_all(sut, KEY) == b"abcde"


async def test_a_resent_part_replaces_the_old_one_under_a_new_tag(tmp_path: Path) -> None:
    sut = a_store(tmp_path)
    upload_id = await sut.start_upload(KEY, part_size=15000)
    old = await sut.put_part(KEY, upload_id, 0, stream(b"old" * 5000), 15000)

    new = await sut.put_part(KEY, upload_id, 0, stream(b"new" * 5000), 15000)

    assert new.etag != old.etag
    assert await sut.list_parts(KEY, upload_id) == [new]
    assert temp_files(tmp_path) == []
    await sut.complete_upload(KEY, upload_id, [new])
    assert await read_all(sut, KEY) == b"new" * 5000


async def test_a_resend_that_breaks_midway_keeps_the_previous_part(tmp_path: Path) -> None:
    sut = a_store(tmp_path)
    upload_id = await sut.start_upload(KEY)
    kept = await sut.put_part(KEY, upload_id, 0, stream(b"a" * 20_000), 20_000)

    async def broken() -> AsyncIterator[bytes]:
        yield b"b" * 12_000  # several blocks reach the temp file first
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await sut.put_part(KEY, upload_id, 0, broken(), 20_000)

    assert await sut.list_parts(KEY, upload_id) == [kept]
    assert temp_files(tmp_path) == []
    await sut.complete_upload(KEY, upload_id, [kept])
    assert await read_all(sut, KEY) == b"a" * 20_000  # the resend never reached the part's range


async def test_a_part_cancelled_midway_leaves_no_part_and_the_upload_open(tmp_path: Path) -> None:
    sut = a_store(tmp_path, block_size=4096)
    upload_id = await sut.start_upload(KEY)
    stalled = asyncio.Event()

    async def stalling() -> AsyncIterator[bytes]:
        yield b"s" * 10_000  # written (a block at a time) before the stall
        stalled.set()
        await asyncio.Event().wait()  # the client stops sending
        yield b""

    sending = asyncio.create_task(sut.put_part(KEY, upload_id, 0, stalling(), 20_000))
    await stalled.wait()
    sending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sending

    assert await sut.list_parts(KEY, upload_id) == []  # half a part is no part
    assert temp_files(tmp_path) == []
    assert (await sut.put_part(KEY, upload_id, 0, stream(b"t" * 20_000), 20_000)).size == 20_000


@pytest.mark.parametrize("sent", [10_000, 30_000], ids=["short", "long"])
async def test_a_part_of_the_wrong_length_leaves_no_part_behind(tmp_path: Path, sent: int) -> None:
    sut = a_store(tmp_path, block_size=4096)
    upload_id = await sut.start_upload(KEY)

    with pytest.raises(PartLengthMismatch):
        await sut.put_part(KEY, upload_id, 3, stream(b"x" * sent), 20_000)

    assert await sut.list_parts(KEY, upload_id) == []
    assert temp_files(tmp_path) == []


async def test_completing_with_a_part_replaced_since_it_was_listed_is_refused(tmp_path: Path) -> None:
    sut = a_store(tmp_path)
    upload_id = await sut.start_upload(KEY)
    await sut.put_part(KEY, upload_id, 0, stream(b"first"), 5)
    listed = await sut.list_parts(KEY, upload_id)
    await sut.put_part(KEY, upload_id, 0, stream(b"again"), 5)

    with pytest.raises(ValueError, match="replaced"):
        await sut.complete_upload(KEY, upload_id, listed)

    assert await sut.size(KEY) is None
    assert temp_files(tmp_path) == []
    await sut.complete_upload(KEY, upload_id, await sut.list_parts(KEY, upload_id))  # the upload is still there
    assert await read_all(sut, KEY) == b"again"


async def test_reading_stops_cleanly_when_the_reader_does(tmp_path: Path) -> None:
    sut = a_store(tmp_path, block_size=4096)
    upload_id = await sut.start_upload(KEY)
    await sut.complete_upload(KEY, upload_id, [await sut.put_part(KEY, upload_id, 0, stream(b"z" * 50_000), 50_000)])

    blocks = sut.read(KEY)
    assert await anext(blocks) == b"z" * 4096
    await blocks.aclose()  # closes the file; nothing is left open or half-read

    assert await read_all(sut, KEY) == b"z" * 50_000


# --- restarts --------------------------------------------------------------------------


async def test_uploads_and_objects_survive_a_restart(tmp_path: Path) -> None:
    before = a_store(tmp_path)
    upload_id = await before.start_upload(KEY)
    await before.put_part(KEY, upload_id, 1, stream(b"world"), 5)
    await before.put_part(KEY, upload_id, 0, stream(b"hello "), 6)
    listed = await before.list_parts(KEY, upload_id)

    after = a_store(tmp_path)
    assert await after.list_parts(KEY, upload_id) == listed
    await after.complete_upload(KEY, upload_id, listed)
    url = await after.download_url(KEY, filename="r.pdf", content_type="application/pdf", expires_in=timedelta(hours=1))

    again = a_store(tmp_path)
    assert await read_all(again, KEY) == b"hello world"
    assert await again.size(KEY) == 11
    query = dict(parse_qsl(urlsplit(url).query))
    assert again.verify_download(
        KEY, int(query["expires"]), "r.pdf", "application/pdf", query["sig"], now=datetime.now(UTC)
    )


# --- download URLs ---------------------------------------------------------------------


async def a_download(sut: FilesystemObjectStore, expires_in: timedelta = timedelta(hours=1)) -> dict[str, str]:
    url = await sut.download_url(
        KEY, filename="relatório final.pdf", content_type="application/pdf", expires_in=expires_in
    )
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == "https://chat.example"
    assert parts.path.startswith(BLOB_ROUTE)
    return {"key": blob_key(parts.path.removeprefix(BLOB_ROUTE)), **dict(parse_qsl(parts.query))}


def verify(sut: FilesystemObjectStore, url: dict[str, str], *, now: datetime | None = None) -> bool:
    return sut.verify_download(
        url["key"],
        int(url["expires"]),
        url["filename"],
        url["content_type"],
        url["sig"],
        now=now or datetime.now(UTC),
    )


async def test_a_download_url_names_the_object_and_the_file(tmp_path: Path) -> None:
    url = await a_download(a_store(tmp_path))

    assert (url["key"], url["filename"], url["content_type"]) == (KEY, "relatório final.pdf", "application/pdf")
    assert verify(a_store(tmp_path), url)


async def test_a_download_url_is_refused_once_it_expires(tmp_path: Path) -> None:
    sut = a_store(tmp_path)
    url = await a_download(sut, expires_in=timedelta(minutes=5))
    expires = datetime.fromtimestamp(int(url["expires"]), UTC)

    assert expires - datetime.now(UTC) > timedelta(minutes=4)
    assert verify(sut, url, now=expires)
    assert not verify(sut, url, now=expires + timedelta(seconds=1))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("key", "files/3f1c/other.pdf"),
        ("filename", "relatório final.exe"),
        ("content_type", "text/html"),
        ("expires", "9999999999"),
        ("sig", "0" * 64),
        ("sig", "é" * 64),
        ("sig", ""),
    ],
)
async def test_a_tampered_download_url_is_refused(tmp_path: Path, field: str, value: str) -> None:
    sut = a_store(tmp_path)
    url = await a_download(sut)

    assert verify(sut, url)
    assert not verify(sut, {**url, field: value})


async def test_a_download_url_signed_with_another_secret_is_refused(tmp_path: Path) -> None:
    url = await a_download(a_store(tmp_path, secret=b"o" * 32))

    assert not verify(a_store(tmp_path), url)


@pytest.mark.parametrize("key", [KEY, "a", "files/ü/ñ?#&=%2F"])
def test_a_blob_token_is_one_path_segment_that_names_its_key(key: str) -> None:
    token = blob_token(key)

    assert not {"/", "=", "?", "#", "%"} & set(token)
    assert blob_key(token) == key


# "_w" decodes to 0xff (not UTF-8); "YR" is "YQ" (the token of "a") with its unused bits set.
@pytest.mark.parametrize("token", ["not base64!", "YQ==", "a/b", "_w", "YR"])
def test_a_token_that_names_no_key_is_refused(token: str) -> None:
    with pytest.raises(ValueError, match="not a blob token"):
        blob_key(token)


def test_a_short_secret_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        a_store(tmp_path, secret=b"short")


async def test_aborting_removes_the_upload_and_its_parts(tmp_path: Path) -> None:
    sut = a_store(tmp_path)
    upload_id = await sut.start_upload(KEY)
    await sut.put_part(KEY, upload_id, 0, stream(b"x" * 9000), 9000)

    await sut.abort_upload(KEY, upload_id)

    assert os.listdir(tmp_path / "uploads") == []


# --- a failing disk --------------------------------------------------------------------


async def test_a_full_disk_is_storage_unavailable_and_leaves_the_previous_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sut = a_store(tmp_path)
    upload_id = await sut.start_upload(KEY)
    kept = await sut.put_part(KEY, upload_id, 0, stream(b"a" * 9000), 9000)

    def full(self: object, chunks: list[bytes]) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(filesystem._ThreadFile, "write", full)
    with pytest.raises(StorageUnavailable) as down:
        await sut.put_part(KEY, upload_id, 0, stream(b"b" * 9000), 9000)

    assert "No space left" in down.value.reason
    assert await sut.list_parts(KEY, upload_id) == [kept]
    assert temp_files(tmp_path) == []


async def test_a_disk_read_error_is_storage_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sut = a_store(tmp_path)
    upload_id = await sut.start_upload(KEY)
    await sut.complete_upload(KEY, upload_id, [await sut.put_part(KEY, upload_id, 0, stream(b"a" * 9000), 9000)])

    def broken(self: object, size: int) -> bytes:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(filesystem._ThreadFile, "read", broken)
    with pytest.raises(StorageUnavailable):
        await read_all(sut, KEY)


async def test_a_broken_uploads_directory_is_storage_unavailable(tmp_path: Path) -> None:
    sut = a_store(tmp_path)
    upload_id = await sut.start_upload(KEY)
    await sut.complete_upload(KEY, upload_id, [await sut.put_part(KEY, upload_id, 0, stream(b"a" * 10), 10)])
    shutil.rmtree(tmp_path / "uploads")
    (tmp_path / "uploads").write_text("not a directory")  # a volume gone wrong: ENOTDIR

    with pytest.raises(StorageUnavailable):
        await sut.start_upload(KEY)
    assert await sut.size(KEY) == 10  # what does not need the broken directory still works


async def test_a_send_racing_a_first_send_of_the_same_part_waits_its_turn_and_wins(tmp_path: Path) -> None:
    sut = a_store(tmp_path, block_size=4096)
    upload_id = await sut.start_upload(KEY, part_size=20_000)
    go_on = asyncio.Event()

    async def slow_first() -> AsyncIterator[bytes]:
        yield b"1" * 10_000  # streaming in place, holding the part's lock
        await go_on.wait()
        yield b"1" * 10_000

    first = asyncio.create_task(sut.put_part(KEY, upload_id, 0, slow_first(), 20_000))
    await asyncio.sleep(0.05)
    second = asyncio.create_task(sut.put_part(KEY, upload_id, 0, stream(b"2" * 20_000), 20_000))
    await asyncio.sleep(0.05)
    assert not second.done()  # complete in its temporary file, waiting for the lock
    go_on.set()
    firsts, seconds = await first, await second

    assert await sut.list_parts(KEY, upload_id) == [seconds]
    assert firsts.etag != seconds.etag
    await sut.complete_upload(KEY, upload_id, [seconds])
    assert await read_all(sut, KEY) == b"2" * 20_000


async def test_completion_hashes_the_object_unless_told_the_caller_has_its_digest(tmp_path: Path) -> None:
    sut = a_store(tmp_path)
    hashed, skipped = await sut.start_upload(KEY, part_size=5), await sut.start_upload(KEY, part_size=5)
    parts = {u: await sut.put_part(KEY, u, 0, stream(b"hello"), 5) for u in (hashed, skipped)}

    assert await sut.complete_upload(KEY, hashed, [parts[hashed]]) == hashlib.sha256(b"hello").hexdigest()
    assert await sut.complete_upload(KEY, skipped, [parts[skipped]], digest=False) is None


async def test_the_store_is_ready_while_it_can_write_and_leaves_nothing_behind(tmp_path: Path) -> None:
    sut = a_store(tmp_path)
    assert await sut.ready() is True
    assert files_under(tmp_path) == []


async def test_a_store_whose_directory_is_gone_or_full_is_not_ready(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sut = a_store(tmp_path)
    shutil.rmtree(tmp_path / "objects")
    with pytest.raises(StorageUnavailable):
        await sut.ready()

    sut = a_store(tmp_path)

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(filesystem.tempfile, "TemporaryFile", full)
    with pytest.raises(StorageUnavailable) as down:
        await sut.ready()
    assert "No space left" in down.value.reason
