"""Resumable uploads on the in-memory adapters: chunks in any order and resent, completion with a checksum,
identical content stored once, aborts, expiry, and who may see what."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import attrs
import pytest

from adapters.memory import InMemoryStore
from adapters.memory.objects import InMemoryObjectStore
from adapters.system import UuidGenerator
from application import uploads
from application.errors import Conflict, NotFound
from application.uploads import FileDeps, FileSettings
from domain.errors import BusinessRuleViolation, InvalidTransition
from domain.ids import FileId, UserId
from domain.uploads import ChecksumMismatch, MissingChunks, UploadSession, UploadTooLarge
from tests.builders import FakeClock

pytestmark = pytest.mark.unit

CHUNK = UploadSession.MIN_CHUNK
OWNER, STRANGER = UserId(uuid.uuid4()), UserId(uuid.uuid4())


@pytest.fixture
def objects() -> InMemoryObjectStore:
    return InMemoryObjectStore(block_size=CHUNK // 4)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def d(objects: InMemoryObjectStore, clock: FakeClock) -> FileDeps:
    return FileDeps(
        uow=InMemoryStore().uow,
        clock=clock,
        ids=UuidGenerator(),
        store=objects,
        settings=FileSettings(max_size=CHUNK * 10),
    )


def content(size: int, seed: int = 1) -> bytes:
    block = hashlib.sha256(str(seed).encode()).digest()
    return (block * (size // len(block) + 1))[:size]


async def stream(data: bytes, piece: int = 10_000) -> AsyncIterator[bytes]:
    for start in range(0, len(data), piece):
        yield data[start : start + piece]


def chunks_of(data: bytes) -> list[bytes]:
    return [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]


async def upload(d: FileDeps, data: bytes, *, order: list[int] | None = None, **initiate: object) -> FileId:
    view = await uploads.initiate(
        d, OWNER, filename="report.pdf", size=len(data), content_type="application/pdf", chunk_size=CHUNK, **initiate
    )
    parts = chunks_of(data)
    for i in order if order is not None else range(len(parts)):
        await uploads.put_chunk(d, OWNER, view.file_id, i, stream(parts[i]), len(parts[i]))
    return view.file_id


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def test_chunks_in_any_order_and_resent_complete_into_the_exact_file(
    d: FileDeps, objects: InMemoryObjectStore
) -> None:
    data = content(CHUNK * 3 + 123)
    file_id = await upload(d, data, order=[3, 1, 1, 0, 2], checksum=sha(data))

    done = await uploads.complete(d, OWNER, file_id)
    again = await uploads.complete(d, OWNER, file_id)

    assert (done.status, done.checksum, done.received_chunks, done.missing_chunks) == ("completed", sha(data), 4, [])
    assert again == done
    link = await uploads.download(d, OWNER, file_id)
    assert (link.size, link.checksum, link.filename) == (len(data), sha(data), "report.pdf")
    assert objects.objects[f"files/{file_id}"] == data
    assert objects.uploads == {}  # the parts are assembled, nothing left behind


async def test_the_status_tells_a_client_what_to_resend(d: FileDeps) -> None:
    data = content(CHUNK * 4)
    file_id = await upload(d, data, order=[0, 2])

    view = await uploads.status(d, OWNER, file_id)

    assert (view.status, view.total_chunks, view.received_chunks, view.missing_chunks) == ("uploading", 4, 2, [1, 3])
    with pytest.raises(MissingChunks) as missing:
        await uploads.complete(d, OWNER, file_id)
    assert missing.value.missing == [1, 3]
    assert (await uploads.status(d, OWNER, file_id)).status == "uploading"  # still open: resume


async def test_a_checksum_mismatch_fails_the_upload_and_keeps_nothing(
    d: FileDeps, objects: InMemoryObjectStore
) -> None:
    data = content(CHUNK * 2)
    file_id = await upload(d, data, checksum=sha(b"something else"))

    with pytest.raises(ChecksumMismatch):
        await uploads.complete(d, OWNER, file_id)

    assert (await uploads.status(d, OWNER, file_id)).status == "failed"
    assert objects.objects == {}
    with pytest.raises(NotFound):
        await uploads.download(d, OWNER, file_id)
    with pytest.raises(InvalidTransition):
        await uploads.put_chunk(d, OWNER, file_id, 0, stream(data[:CHUNK]), CHUNK)


async def test_identical_content_is_stored_once(d: FileDeps, objects: InMemoryObjectStore) -> None:
    data = content(CHUNK + 7)
    first = await upload(d, data)
    await uploads.complete(d, OWNER, first)
    second = await upload(d, data)

    await uploads.complete(d, OWNER, second)

    assert list(objects.objects) == [f"files/{first}"]
    one, two = await uploads.download(d, OWNER, first), await uploads.download(d, OWNER, second)
    assert one.url.split("?")[0] == two.url.split("?")[0]  # the same blob behind both


@pytest.mark.parametrize(
    ("index", "length", "error"),
    [(0, CHUNK - 1, BusinessRuleViolation), (5, CHUNK, BusinessRuleViolation), (-1, CHUNK, BusinessRuleViolation)],
)
async def test_a_wrong_index_or_length_is_refused_before_anything_is_stored(
    d: FileDeps, objects: InMemoryObjectStore, index: int, length: int, error: type[Exception]
) -> None:
    file_id = await upload(d, content(CHUNK * 2), order=[])

    with pytest.raises(error):
        await uploads.put_chunk(d, OWNER, file_id, index, stream(b"x" * length), length)

    assert all(parts == {} for parts in objects.uploads.values())


async def test_a_body_shorter_than_announced_is_refused_and_not_recorded(d: FileDeps) -> None:
    file_id = await upload(d, content(CHUNK * 2), order=[])

    with pytest.raises(BusinessRuleViolation, match="chunk 0"):
        await uploads.put_chunk(d, OWNER, file_id, 0, stream(b"x" * (CHUNK - 10)), CHUNK)

    assert (await uploads.status(d, OWNER, file_id)).received_chunks == 0


async def test_only_the_owner_sees_or_touches_an_upload(d: FileDeps) -> None:
    data = content(CHUNK)
    file_id = await upload(d, data)
    await uploads.complete(d, OWNER, file_id)

    for call in (
        uploads.status(d, STRANGER, file_id),
        uploads.put_chunk(d, STRANGER, file_id, 0, stream(data), len(data)),
        uploads.complete(d, STRANGER, file_id),
        uploads.abort(d, STRANGER, file_id),
        uploads.download(d, STRANGER, file_id),
        uploads.status(d, OWNER, FileId(uuid.uuid4())),
    ):
        with pytest.raises(NotFound):
            await call


async def test_an_abort_drops_the_stored_chunks_and_a_completed_file_cannot_be_aborted(
    d: FileDeps, objects: InMemoryObjectStore
) -> None:
    open_one = await upload(d, content(CHUNK * 2), order=[0])
    done = await upload(d, content(CHUNK, seed=2))
    await uploads.complete(d, OWNER, done)

    await uploads.abort(d, OWNER, open_one)
    await uploads.abort(d, OWNER, open_one)  # again: nothing more to do

    assert (await uploads.status(d, OWNER, open_one)).status == "aborted"
    assert objects.uploads == {}
    with pytest.raises(Conflict):
        await uploads.abort(d, OWNER, done)


async def test_abandoned_uploads_expire_and_their_chunks_are_dropped(
    d: FileDeps, objects: InMemoryObjectStore, clock: FakeClock
) -> None:
    abandoned = await upload(d, content(CHUNK * 2), order=[1])
    clock.advance(timedelta(hours=25))
    fresh = await upload(d, content(CHUNK * 2, seed=3), order=[0])

    assert await uploads.expire_abandoned(d) == 1
    assert await uploads.expire_abandoned(d) == 0

    assert (await uploads.status(d, OWNER, abandoned)).status == "expired"
    assert (await uploads.status(d, OWNER, fresh)).status == "uploading"
    assert len(objects.uploads) == 1  # only the fresh upload's parts remain
    with pytest.raises(InvalidTransition):
        await uploads.complete(d, OWNER, abandoned)


async def test_limits_are_checked_when_an_upload_opens(d: FileDeps) -> None:
    with pytest.raises(UploadTooLarge):
        await uploads.initiate(d, OWNER, filename="big.bin", size=CHUNK * 10 + 1, content_type="application/zip")
    with pytest.raises(BusinessRuleViolation, match="filename"):
        await uploads.initiate(d, OWNER, filename="../..", size=10, content_type="text/plain")
    store_with_big_parts = with_min_part_size(d, min_part_size=CHUNK * 2)
    with pytest.raises(BusinessRuleViolation, match="chunk_size"):
        await uploads.initiate(
            store_with_big_parts, OWNER, filename="a.bin", size=CHUNK * 3, content_type="x/y", chunk_size=CHUNK
        )
    single = await uploads.initiate(  # one chunk: the store's minimum part size does not apply
        store_with_big_parts, OWNER, filename="a.bin", size=CHUNK, content_type="x/y", chunk_size=CHUNK
    )
    assert single.total_chunks == 1


def with_min_part_size(d: FileDeps, *, min_part_size: int) -> FileDeps:
    return attrs.evolve(d, store=InMemoryObjectStore(min_part_size=min_part_size))


async def test_chunks_arriving_in_order_are_hashed_on_the_way_and_completion_reads_nothing_back(
    d: FileDeps, objects: InMemoryObjectStore
) -> None:
    data = content(CHUNK * 3 - 7)
    file_id = await upload(d, data, checksum=sha(data))
    reads = counting_reads(objects)

    done = await uploads.complete(d, OWNER, file_id)

    assert (done.status, done.checksum) == ("completed", sha(data))
    assert reads == []


@pytest.mark.parametrize("order", [[1, 0, 2], [0, 2, 1]])
async def test_otherwise_completion_hashes_the_object_in_one_pass(
    d: FileDeps, objects: InMemoryObjectStore, order: list[int]
) -> None:
    data = content(CHUNK * 3 - 7)
    file_id = await upload(d, data, order=order, checksum=sha(data))
    reads = counting_reads(objects)

    done = await uploads.complete(d, OWNER, file_id)

    assert (done.status, done.checksum) == ("completed", sha(data))
    assert reads == [f"files/{file_id}"]


async def test_a_chunk_sent_again_with_other_bytes_fails_the_checksum_even_after_an_in_order_pass(
    d: FileDeps, objects: InMemoryObjectStore
) -> None:
    data = content(CHUNK * 2)
    file_id = await upload(d, data, checksum=sha(data))
    other = bytes(CHUNK)
    await uploads.put_chunk(d, OWNER, file_id, 1, stream(other), CHUNK)  # the store now holds other bytes

    with pytest.raises(ChecksumMismatch):
        await uploads.complete(d, OWNER, file_id)


def counting_reads(objects: InMemoryObjectStore) -> list[str]:
    """The keys ``objects.read`` is called with from now on."""
    keys: list[str] = []
    read = objects.read

    def counted(key: str) -> AsyncIterator[bytes]:
        keys.append(key)
        return read(key)

    objects.read = counted  # type: ignore[method-assign]
    return keys
