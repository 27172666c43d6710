"""Direct uploads (the client sends chunks to the store through part URLs) and a store that is down, on the
in-memory adapters."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from adapters.memory import InMemoryStore
from adapters.memory.objects import InMemoryObjectStore
from adapters.system import UuidGenerator
from application import uploads
from application.ports import StorageUnavailable
from application.uploads import DirectUpload, FileDeps, FileSettings, blob_key
from domain.errors import BusinessRuleViolation, InvalidTransition
from domain.ids import FileId, UserId
from domain.uploads import BadChunk, ChecksumMismatch, MissingChunks, PartsMismatch, UploadSession
from tests.builders import FakeClock, StoreOutage

pytestmark = pytest.mark.unit

CHUNK = UploadSession.MIN_CHUNK
OWNER = UserId(uuid.uuid4())


@pytest.fixture
def db() -> InMemoryStore:
    return InMemoryStore()


@pytest.fixture
def objects() -> InMemoryObjectStore:
    return InMemoryObjectStore(block_size=CHUNK // 4, direct=True)


@pytest.fixture
def outage(objects: InMemoryObjectStore) -> StoreOutage:
    return StoreOutage(objects)


@pytest.fixture
def d(db: InMemoryStore, outage: StoreOutage, clock: FakeClock) -> FileDeps:
    return FileDeps(
        uow=db.uow, clock=clock, ids=UuidGenerator(), store=outage, settings=FileSettings(max_size=CHUNK * 10)
    )


def content(size: int, seed: int = 1) -> bytes:
    block = hashlib.sha256(str(seed).encode()).digest()
    return (block * (size // len(block) + 1))[:size]


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def stream(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def start(d: FileDeps, data: bytes, **extra: object) -> DirectUpload:
    return await uploads.initiate_direct(
        d, OWNER, filename="film.mp4", size=len(data), content_type="video/mp4", chunk_size=CHUNK, **extra
    )


async def put_to(objects: InMemoryObjectStore, url: str, body: bytes) -> str:
    """The client PUTs ``body`` to a part URL; returns the ETag header the store answers with (quoted)."""
    parts = urlsplit(url)
    upload_id, index = parts.path.strip("/").split("/")
    key = unquote(parse_qs(parts.query)["key"][0])
    stored = await objects.put_part(key, upload_id, int(index), stream(body), len(body))
    return f'"{stored.etag}"'


async def send_all(objects: InMemoryObjectStore, opened: DirectUpload, data: bytes) -> list[tuple[int, str]]:
    return [
        (p.index, await put_to(objects, p.url, data[p.index * CHUNK : (p.index + 1) * CHUNK]))
        for p in opened.parts.parts
    ]


# --- direct uploads ----------------------------------------------------------------------


async def test_a_direct_upload_takes_its_chunks_from_the_store_and_completes_with_their_etags(
    d: FileDeps, objects: InMemoryObjectStore, clock: FakeClock
) -> None:
    data = content(CHUNK * 2 + 100)
    opened = await start(d, data, checksum=sha(data))
    file_id = opened.file.file_id
    first = await put_to(objects, opened.parts.parts[2].url, data[2 * CHUNK :])
    halfway = await uploads.status(d, OWNER, file_id)
    tags = [(2, first), *(await send_all(objects, opened, data))[:2]]

    done = await uploads.complete(d, OWNER, file_id, parts=tags)
    again = await uploads.complete(d, OWNER, file_id, parts=tags)
    later = await uploads.status(d, OWNER, file_id)

    assert [p.index for p in opened.parts.parts] == [0, 1, 2]
    assert opened.parts.expires_at == clock.now() + timedelta(hours=1)
    assert (opened.file.total_chunks, opened.file.received_chunks) == (3, 0)
    assert (halfway.received_chunks, halfway.missing_chunks) == (1, [0, 1])  # asked of the store
    assert (done.status, done.checksum, done.received_chunks, done.missing_chunks) == ("completed", sha(data), 3, [])
    assert again == done
    assert later == done  # the chunks are recorded once the file is complete
    assert objects.objects[blob_key(file_id)] == data
    assert objects.uploads == {}


async def test_completion_refuses_stored_parts_that_are_not_the_ones_sent_or_not_the_chunks_size(
    d: FileDeps, objects: InMemoryObjectStore
) -> None:
    data = content(CHUNK * 3)
    opened = await start(d, data)
    file_id, urls = opened.file.file_id, [p.url for p in opened.parts.parts]
    tags = await send_all(objects, opened, data)
    await put_to(objects, urls[1], content(CHUNK, seed=7))  # replaced since the client noted its tag
    await put_to(objects, urls[2], data[2 * CHUNK :] + b"!")  # one byte too many: the file would grow

    with pytest.raises(PartsMismatch) as differ:
        await uploads.complete(d, OWNER, file_id, parts=tags)
    status = await uploads.status(d, OWNER, file_id)
    tags[1] = (1, await put_to(objects, urls[1], data[CHUNK : 2 * CHUNK]))
    tags[2] = (2, await put_to(objects, urls[2], data[2 * CHUNK :]))
    done = await uploads.complete(d, OWNER, file_id, parts=tags)

    assert differ.value.parts == [1, 2]
    assert (status.status, status.missing_chunks) == ("uploading", [2])  # a part of the wrong size is missing
    assert done.status == "completed"
    assert objects.objects[blob_key(file_id)] == data


async def test_completion_names_the_chunks_the_store_lacks_and_needs_every_parts_tag(
    d: FileDeps, objects: InMemoryObjectStore
) -> None:
    data = content(CHUNK * 3)
    opened = await start(d, data)
    file_id = opened.file.file_id
    parts = opened.parts.parts
    tags = [(p.index, await put_to(objects, p.url, data[p.index * CHUNK : (p.index + 1) * CHUNK])) for p in parts[:2]]

    with pytest.raises(MissingChunks) as missing:
        await uploads.complete(d, OWNER, file_id, parts=tags)
    with pytest.raises(BusinessRuleViolation, match="ETags") as no_tags:
        await uploads.complete(d, OWNER, file_id)
    tags.append((2, await put_to(objects, parts[2].url, data[2 * CHUNK :])))
    with pytest.raises(BusinessRuleViolation, match="does not name chunk") as unnamed:
        await uploads.complete(d, OWNER, file_id, parts=tags[1:])
    with pytest.raises(BusinessRuleViolation, match="once") as twice:
        await uploads.complete(d, OWNER, file_id, parts=[*tags, tags[0]])

    assert missing.value.missing == [2]
    assert no_tags.value.field == unnamed.value.field == twice.value.field == "parts"
    assert (await uploads.status(d, OWNER, file_id)).status == "uploading"
    assert (await uploads.complete(d, OWNER, file_id, parts=tags)).status == "completed"


async def test_a_direct_upload_with_another_checksum_fails_and_keeps_nothing(
    d: FileDeps, objects: InMemoryObjectStore
) -> None:
    data = content(CHUNK + 5)
    opened = await start(d, data, checksum=sha(b"other"))
    tags = await send_all(objects, opened, data)

    with pytest.raises(ChecksumMismatch):
        await uploads.complete(d, OWNER, opened.file.file_id, parts=tags)

    assert (await uploads.status(d, OWNER, opened.file.file_id)).status == "failed"
    assert objects.objects == {}


async def test_direct_uploads_need_a_store_that_takes_parts_from_clients(db: InMemoryStore, clock: FakeClock) -> None:
    objects = InMemoryObjectStore()  # as the filesystem store: parts through the API only
    d = FileDeps(uow=db.uow, clock=clock, ids=UuidGenerator(), store=objects)

    with pytest.raises(BusinessRuleViolation) as refused:
        await start(d, content(CHUNK))

    assert refused.value.field == "direct"
    assert objects.uploads == {}
    assert db.state.uploads == {}


async def test_chunks_do_not_cross_between_the_two_kinds_of_upload(d: FileDeps) -> None:
    data = content(CHUNK)
    direct = await start(d, data)
    through_api = await uploads.initiate(d, OWNER, filename="a.bin", size=CHUNK, content_type="x/y", chunk_size=CHUNK)
    await uploads.put_chunk(d, OWNER, through_api.file_id, 0, stream(data), CHUNK)

    with pytest.raises(InvalidTransition, match="part URLs"):
        await uploads.put_chunk(d, OWNER, direct.file.file_id, 0, stream(data), CHUNK)
    with pytest.raises(BusinessRuleViolation, match="only a direct upload") as tags_for_api_upload:
        await uploads.complete(d, OWNER, through_api.file_id, parts=[(0, "tag")])
    with pytest.raises(BusinessRuleViolation) as not_direct:
        await uploads.part_urls(d, OWNER, through_api.file_id)

    assert tags_for_api_upload.value.field == "parts"
    assert not_direct.value.field == "direct"
    assert (await uploads.complete(d, OWNER, through_api.file_id)).status == "completed"


async def test_fresh_part_urls_resume_a_direct_upload(
    d: FileDeps, objects: InMemoryObjectStore, clock: FakeClock
) -> None:
    data = content(CHUNK * 3)
    opened = await start(d, data)
    file_id = opened.file.file_id
    await put_to(objects, opened.parts.parts[1].url, data[CHUNK : 2 * CHUNK])
    clock.advance(timedelta(hours=2))  # the first URLs have expired

    missing = await uploads.part_urls(d, OWNER, file_id)
    chosen = await uploads.part_urls(d, OWNER, file_id, [2, 0, 2])
    with pytest.raises(BadChunk):
        await uploads.part_urls(d, OWNER, file_id, [3])
    clock.set(opened.file.expires_at - timedelta(minutes=10))
    last = await uploads.part_urls(d, OWNER, file_id, [0])
    clock.set(opened.file.expires_at)
    with pytest.raises(InvalidTransition):
        await uploads.part_urls(d, OWNER, file_id)

    assert [p.index for p in missing.parts] == [0, 2]
    assert missing.expires_at == opened.parts.expires_at + timedelta(hours=2)
    assert [p.index for p in chosen.parts] == [0, 2]
    assert last.expires_at == opened.file.expires_at  # never past the upload's own expiry
    assert "expires_in=600" in last.parts[0].url


# --- the store is down: 503, and nothing changes ----------------------------------------


async def test_an_upload_does_not_open_while_the_store_is_down(
    d: FileDeps, db: InMemoryStore, outage: StoreOutage
) -> None:
    outage.down = {"start_upload"}

    with pytest.raises(StorageUnavailable):
        await uploads.initiate(d, OWNER, filename="a.bin", size=CHUNK, content_type="x/y")
    with pytest.raises(StorageUnavailable):
        await start(d, content(CHUNK))

    assert db.state.uploads == {}


async def test_a_chunk_sent_while_the_store_is_down_is_not_recorded(
    d: FileDeps, objects: InMemoryObjectStore, outage: StoreOutage
) -> None:
    data = content(CHUNK * 2)
    file_id = (
        await uploads.initiate(d, OWNER, filename="a.bin", size=len(data), content_type="x/y", chunk_size=CHUNK)
    ).file_id
    outage.down = {"put_part"}

    with pytest.raises(StorageUnavailable):
        await uploads.put_chunk(d, OWNER, file_id, 0, stream(data[:CHUNK]), CHUNK)

    assert (await uploads.status(d, OWNER, file_id)).received_chunks == 0
    assert all(parts == {} for parts in objects.uploads.values())


async def test_an_abort_while_the_store_is_down_leaves_the_upload_open_to_abort_again(
    d: FileDeps, objects: InMemoryObjectStore, outage: StoreOutage
) -> None:
    file_id = (await uploads.initiate(d, OWNER, filename="a.bin", size=CHUNK, content_type="x/y")).file_id
    outage.down = {"abort_upload"}

    with pytest.raises(StorageUnavailable):
        await uploads.abort(d, OWNER, file_id)
    still = await uploads.status(d, OWNER, file_id)
    outage.down = set()
    await uploads.abort(d, OWNER, file_id)

    assert still.status == "uploading"
    assert (await uploads.status(d, OWNER, file_id)).status == "aborted"
    assert objects.uploads == {}


@pytest.mark.parametrize("direct", [False, True], ids=["through-the-api", "direct"])
async def test_a_completion_that_fails_after_the_store_assembled_the_file_can_be_repeated(
    d: FileDeps, objects: InMemoryObjectStore, outage: StoreOutage, direct: bool
) -> None:
    data = content(CHUNK * 2 + 3)
    tags: list[tuple[int, str]] | None = None
    if direct:
        opened = await start(d, data, checksum=sha(data))
        file_id, tags = opened.file.file_id, await send_all(objects, opened, data)
    else:
        file_id = (
            await uploads.initiate(
                d, OWNER, filename="a.bin", size=len(data), content_type="x/y", chunk_size=CHUNK, checksum=sha(data)
            )
        ).file_id
        for i in (2, 0, 1):  # out of order: completion hashes the assembled object
            piece = data[i * CHUNK : (i + 1) * CHUNK]
            await uploads.put_chunk(d, OWNER, file_id, i, stream(piece), len(piece))
    outage.down = {"read"}  # assembled, then the store goes away while the file is hashed

    with pytest.raises(StorageUnavailable):
        await uploads.complete(d, OWNER, file_id, parts=tags)
    between = await uploads.status(d, OWNER, file_id)
    outage.down = set()
    done = await uploads.complete(d, OWNER, file_id, parts=tags)

    assert between.status == "uploading"
    assert objects.uploads == {}  # the store's upload is gone: the object was assembled
    assert (done.status, done.checksum, done.received_chunks) == ("completed", sha(data), 3)
    assert (await uploads.status(d, OWNER, file_id)).received_chunks == 3
    assert objects.objects[blob_key(FileId(file_id))] == data
