"""Upload sessions and their chunks, on the in-memory twin and on PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from domain.uploads import UploadStatus
from tests.builders import T0, an_upload
from tests.contract.backends import Backend

pytestmark = pytest.mark.contract

DIGEST = "a" * 64


async def test_a_session_is_stored_and_read_back_with_its_chunks(uow_factory: Backend) -> None:
    session = an_upload(checksum="sha256:" + DIGEST)
    session.store_upload_id = "store-1"
    async with uow_factory() as uow:
        await uow.uploads.add(session)
        await uow.commit()
    async with uow_factory() as uow:
        first = await uow.uploads.add_chunk(session.id, 2, at=T0)
        again = await uow.uploads.add_chunk(session.id, 2, at=T0)
        await uow.uploads.add_chunk(session.id, 0, at=T0)
        await uow.commit()

    async with uow_factory() as uow:
        found = await uow.uploads.get(session.id)
        missing = await uow.uploads.get(an_upload().id)

    assert (first, again) == (True, False)
    assert found is not None and missing is None
    assert found.received == {0, 2}
    assert found.missing_chunks == [1, 3]
    assert (found.filename, found.size, found.chunk_size, found.declared_sha256) == (
        session.filename,
        session.size,
        session.chunk_size,
        DIGEST,
    )
    assert (found.status, found.store_upload_id, found.expires_at) == (
        UploadStatus.UPLOADING,
        "store-1",
        session.expires_at,
    )


async def test_concurrent_chunks_are_all_recorded(uow_factory: Backend) -> None:
    session = an_upload()
    async with uow_factory() as uow:
        await uow.uploads.add(session)
        await uow.commit()

    async def arrive(index: int) -> bool:
        async with uow_factory() as uow:
            new = await uow.uploads.add_chunk(session.id, index, at=T0)
            await uow.commit()
            return new

    results = await asyncio.gather(*(arrive(i) for i in [0, 1, 2, 3, 1, 2]))

    async with uow_factory() as uow:
        found = await uow.uploads.get(session.id)
    assert found is not None and found.received == {0, 1, 2, 3}
    assert sorted(results) == [False, False, True, True, True, True]


async def test_a_saved_completion_names_the_blob_that_identical_content_shares(uow_factory: Backend) -> None:
    older, newer, other = an_upload(), an_upload(at=T0 + timedelta(minutes=1)), an_upload()
    async with uow_factory() as uow:
        for s in (older, newer, other):
            await uow.uploads.add(s)
        await uow.commit()
    for s, blob in ((older, "files/older"), (newer, "files/older")):
        s.received = set(range(s.total_chunks))
        s.complete(sha256=DIGEST, checksum=None, at=T0)
        s.blob_key = blob
    async with uow_factory() as uow:
        before = await uow.uploads.blob_of(DIGEST)
        await uow.uploads.save(older)
        await uow.uploads.save(newer)
        await uow.commit()

    async with uow_factory() as uow:
        shared = await uow.uploads.blob_of(DIGEST)
        unknown = await uow.uploads.blob_of("b" * 64)
        stored = await uow.uploads.get(newer.id, lock=True)

    assert (before, shared, unknown) == (None, "files/older", None)
    assert stored is not None
    assert (stored.status, stored.sha256, stored.blob_key) == (UploadStatus.COMPLETED, DIGEST, "files/older")


async def test_expired_lists_open_sessions_past_their_expiry_oldest_first(uow_factory: Backend) -> None:
    soon = an_upload(expires_at=T0 + timedelta(hours=1))
    sooner = an_upload(expires_at=T0 + timedelta(minutes=30))
    later = an_upload(expires_at=T0 + timedelta(hours=5))
    aborted = an_upload(expires_at=T0 + timedelta(minutes=10))
    aborted.abort()
    async with uow_factory() as uow:
        for s in (soon, sooner, later, aborted):
            await uow.uploads.add(s)
        await uow.commit()

    async with uow_factory() as uow:
        due = await uow.uploads.expired(at=T0 + timedelta(hours=2), limit=10)
        first = await uow.uploads.expired(at=T0 + timedelta(hours=2), limit=1)

    assert [s.id for s in due] == [sooner.id, soon.id]
    assert [s.id for s in first] == [sooner.id]


async def test_a_direct_upload_is_stored_as_one(uow_factory: Backend) -> None:
    direct, through_api = an_upload(direct=True), an_upload()
    async with uow_factory() as uow:
        await uow.uploads.add(direct)
        await uow.uploads.add(through_api)
        await uow.commit()

    async with uow_factory() as uow:
        found = await uow.uploads.get(direct.id)
        other = await uow.uploads.get(through_api.id)

    assert found is not None and other is not None
    assert (found.direct, other.direct) == (True, False)


async def test_count_open_counts_the_sessions_still_uploading(uow_factory: Backend) -> None:
    async with uow_factory() as uow:
        none = await uow.uploads.count_open()
    open_, past_expiry, aborted, completed = an_upload(), an_upload(expires_at=T0), an_upload(), an_upload()
    aborted.abort()
    completed.received = set(range(completed.total_chunks))
    completed.complete(sha256=DIGEST, checksum=None, at=T0)
    async with uow_factory() as uow:
        for s in (open_, past_expiry, aborted, completed):
            await uow.uploads.add(s)
        await uow.commit()

    async with uow_factory() as uow:
        counted = await uow.uploads.count_open()

    assert (none, counted) == (0, 2)  # open until the janitor expires them, even past their expiry
