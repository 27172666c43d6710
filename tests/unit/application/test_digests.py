"""Running digests: an upload hashed on the way in when its chunks come in order, and set aside otherwise."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator

import pytest

from application.digests import RunningDigests, fed
from application.ports import StoredPart
from domain.ids import FileId

pytestmark = pytest.mark.unit

CHUNKS = [b"alpha" * 10, b"beta" * 10, b"gamma"]
WHOLE = hashlib.sha256(b"".join(CHUNKS)).hexdigest()


def a_file() -> FileId:
    return FileId(uuid.uuid4())


def part(index: int, tag: str | None = None) -> StoredPart:
    return StoredPart(index, tag or f"tag-{index}", len(CHUNKS[index]))


async def blocks(data: bytes) -> AsyncIterator[bytes]:
    yield data[:3]
    yield data[3:]


async def stream_in(digests: RunningDigests, file_id: FileId, index: int, tag: str | None = None) -> bool:
    """What put_chunk does: feed the chunk if it is next, record it once stored; whether it was fed."""
    digest = digests.for_chunk(file_id, index)
    passed = b"".join([b async for b in (fed(blocks(CHUNKS[index]), digest) if digest else blocks(CHUNKS[index]))])
    assert passed == CHUNKS[index]
    if digest is not None:
        digests.advance(file_id, index, digest, part(index, tag))
    return digest is not None


async def test_chunks_in_order_give_the_whole_file_s_digest_without_a_second_pass() -> None:
    digests, file_id = RunningDigests(), a_file()

    fed_in = [await stream_in(digests, file_id, i) for i in range(3)]

    assert fed_in == [True, True, True]
    assert digests.finish(file_id, [part(2), part(0), part(1)]) == WHOLE  # the store lists them in any order
    assert digests.finish(file_id, [part(0), part(1), part(2)]) is None  # taken once


async def test_a_chunk_out_of_order_leaves_the_digest_behind() -> None:
    digests, file_id = RunningDigests(), a_file()

    fed_in = [await stream_in(digests, file_id, i) for i in (0, 2, 1)]

    assert fed_in == [True, False, True]
    assert digests.finish(file_id, [part(0), part(1), part(2)]) is None  # 2 was never fed in


async def test_a_chunk_sent_again_after_it_was_hashed_sets_the_digest_aside() -> None:
    digests, file_id = RunningDigests(), a_file()
    for i in range(3):
        await stream_in(digests, file_id, i)

    # Chunk 1 was sent again (here or at another process): the store holds other bytes under another tag.
    assert digests.finish(file_id, [part(0), part(1, "tag-1-again"), part(2)]) is None


async def test_the_loser_of_a_race_for_the_same_chunk_changes_nothing() -> None:
    digests, file_id = RunningDigests(), a_file()
    first, second = digests.for_chunk(file_id, 0), digests.for_chunk(file_id, 0)
    assert first is not None and second is not None
    first.update(CHUNKS[0])
    second.update(b"other bytes")

    digests.advance(file_id, 0, first, part(0))
    digests.advance(file_id, 0, second, part(0, "tag-of-the-other"))
    for i in (1, 2):
        await stream_in(digests, file_id, i)

    assert digests.finish(file_id, [part(0), part(1), part(2)]) == WHOLE


async def test_a_failed_chunk_leaves_the_digest_as_it_was() -> None:
    digests, file_id = RunningDigests(), a_file()
    await stream_in(digests, file_id, 0)
    broken = digests.for_chunk(file_id, 1)
    assert broken is not None
    broken.update(b"half a chunk")  # the store refused the part: never advanced

    for i in (1, 2):
        await stream_in(digests, file_id, i)

    assert digests.finish(file_id, [part(0), part(1), part(2)]) == WHOLE


async def test_the_oldest_uploads_are_forgotten_past_the_capacity_and_forgotten_ones_say_so() -> None:
    digests = RunningDigests(capacity=2)
    old, middle, new = a_file(), a_file(), a_file()
    for file_id in (old, middle, new):
        await stream_in(digests, file_id, 0)
    digests.forget(middle)

    assert digests.for_chunk(old, 1) is None  # evicted: chunk 1 is no longer "next"
    assert digests.for_chunk(middle, 1) is None
    assert digests.for_chunk(new, 1) is not None
