"""Upload sessions: chunks in any order, completion only when whole and intact, terminal states are final."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TypeVar

import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from domain.errors import BusinessRuleViolation, DomainError, InvalidTransition
from domain.uploads import (
    DEFAULT_CHUNK_SIZE,
    ChecksumMismatch,
    MissingChunks,
    PartsMismatch,
    UploadSession,
    UploadStatus,
    UploadTooLarge,
)
from tests.builders import T0, an_upload

MIN = UploadSession.MIN_CHUNK
SHA_A = hashlib.sha256(b"a").hexdigest()
SHA_B = hashlib.sha256(b"b").hexdigest()


def send_all(sut: UploadSession, *, at: datetime = T0) -> None:
    for i in range(sut.total_chunks):
        sut.receive_chunk(i, sut.expected_length(i), at=at)


# --- initiate ------------------------------------------------------------------------


def test_initiate_opens_an_upload_with_the_default_chunk_size() -> None:
    sut = an_upload(filename="  photo.jpg ", size=DEFAULT_CHUNK_SIZE + 1, chunk_size=None, checksum=None)

    assert sut.status is UploadStatus.UPLOADING
    assert sut.filename == "photo.jpg"
    assert sut.chunk_size == DEFAULT_CHUNK_SIZE
    assert sut.total_chunks == 2
    assert sut.missing_chunks == [0, 1]
    assert sut.declared_sha256 is None


def test_the_declared_checksum_is_normalised_to_lower_case_hex() -> None:
    sut = an_upload(checksum="sha256:" + SHA_A.upper())

    assert sut.declared_sha256 == SHA_A


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\fakepath\\relatório.pdf", "relatório.pdf"),
        ("evil\u202efdp.exe", "evilfdp.exe"),  # would read "evilexe.pdf"
        ("a\x00b\tc\nd.txt", "abcd.txt"),
        ("cafe\u0301.png", "café.png"),  # NFC
        ("👨\u200d👩\u200d👧.png", "👨\u200d👩\u200d👧.png"),  # joiners are not direction marks
    ],
)
def test_a_filename_is_sanitised_to_its_last_segment_without_controls(given: str, kept: str) -> None:
    assert an_upload(filename=given).filename == kept


@pytest.mark.parametrize("filename", ["", "   ", "..", "a/..", "dir/", "\x00\x01", "x" * 256])
def test_a_filename_with_nothing_left_or_too_long_is_refused(filename: str) -> None:
    with pytest.raises(BusinessRuleViolation) as raised:
        an_upload(filename=filename)

    assert raised.value.field == "filename"


def test_a_filename_of_255_characters_is_accepted() -> None:
    assert an_upload(filename="x" * 255).filename == "x" * 255


@pytest.mark.parametrize("size", [0, -1])
def test_an_empty_file_is_refused(size: int) -> None:
    with pytest.raises(BusinessRuleViolation) as raised:
        an_upload(size=size)

    assert raised.value.field == "size"
    assert not isinstance(raised.value, UploadTooLarge)


def test_a_file_over_the_limit_is_too_large() -> None:
    assert an_upload(size=1000, max_size=1000).size == 1000

    with pytest.raises(UploadTooLarge) as raised:
        an_upload(size=1001, max_size=1000)
    assert raised.value.field == "size"


@pytest.mark.parametrize(
    ("chunk_size", "ok"), [(MIN - 1, False), (MIN, True), (64 * 1024**2, True), (64 * 1024**2 + 1, False)]
)
def test_chunk_size_bounds(chunk_size: int, ok: bool) -> None:
    if ok:
        assert an_upload(chunk_size=chunk_size).chunk_size == chunk_size
    else:
        with pytest.raises(BusinessRuleViolation) as raised:
            an_upload(chunk_size=chunk_size)
        assert raised.value.field == "chunk_size"


@pytest.mark.parametrize(
    "checksum", ["md5:" + "0" * 32, SHA_A, "sha256:" + SHA_A[:-1], "sha256:" + "g" * 64, "sha256" + SHA_A]
)
def test_a_malformed_checksum_is_refused(checksum: str) -> None:
    with pytest.raises(BusinessRuleViolation) as raised:
        an_upload(checksum=checksum)

    assert raised.value.field == "checksum"


# --- chunks and completion -------------------------------------------------------------


def test_the_last_chunk_carries_the_remainder() -> None:
    sut = an_upload(size=2 * MIN + 10, chunk_size=MIN)

    assert sut.total_chunks == 3
    assert [sut.expected_length(i) for i in range(3)] == [MIN, MIN, 10]
    with pytest.raises(BusinessRuleViolation) as raised:
        sut.expected_length(3)
    assert raised.value.field == "index"


def test_chunks_arrive_in_any_order_and_a_resend_is_harmless() -> None:
    sut = an_upload(size=3 * MIN, chunk_size=MIN)

    assert sut.receive_chunk(2, MIN, at=T0)
    assert sut.receive_chunk(0, MIN, at=T0)
    assert not sut.receive_chunk(2, MIN, at=T0)
    assert sut.missing_chunks == [1]


def test_a_chunk_of_the_wrong_length_is_refused() -> None:
    sut = an_upload(size=2 * MIN, chunk_size=MIN)

    with pytest.raises(BusinessRuleViolation) as raised:
        sut.receive_chunk(0, MIN - 1, at=T0)

    assert raised.value.field == "body"
    assert sut.received == set()


def test_completion_waits_for_every_chunk() -> None:
    sut = an_upload(size=3 * MIN, chunk_size=MIN)
    sut.receive_chunk(1, MIN, at=T0)

    with pytest.raises(MissingChunks) as raised:
        sut.complete(sha256=SHA_A, checksum=None, at=T0)

    assert raised.value.missing == [0, 2]
    assert sut.status is UploadStatus.UPLOADING


def test_a_whole_upload_with_the_declared_checksum_completes_and_completing_again_is_harmless() -> None:
    sut = an_upload(checksum="sha256:" + SHA_A)
    send_all(sut)

    sut.complete(sha256=SHA_A, checksum=None, at=T0)
    sut.complete(sha256=SHA_A, checksum=None, at=T0)

    assert sut.status is UploadStatus.COMPLETED
    assert sut.sha256 == SHA_A
    with pytest.raises(InvalidTransition):
        sut.receive_chunk(0, MIN, at=T0)


def test_a_checksum_mismatch_fails_the_upload_for_good() -> None:
    sut = an_upload(checksum="sha256:" + SHA_A)
    send_all(sut)

    with pytest.raises(ChecksumMismatch) as raised:
        sut.complete(sha256=SHA_B, checksum=None, at=T0)

    assert (raised.value.expected, raised.value.actual) == (SHA_A, SHA_B)
    assert sut.status is UploadStatus.FAILED
    assert sut.failure == "checksum mismatch"
    with pytest.raises(InvalidTransition):
        sut.complete(sha256=SHA_A, checksum=None, at=T0)


def test_a_checksum_at_completion_must_agree_with_the_declared_one() -> None:
    sut = an_upload(checksum="sha256:" + SHA_A)
    send_all(sut)

    with pytest.raises(BusinessRuleViolation, match="differs") as raised:
        sut.complete(sha256=SHA_B, checksum="sha256:" + SHA_B, at=T0)

    assert not isinstance(raised.value, ChecksumMismatch)
    assert sut.status is UploadStatus.UPLOADING


def test_an_open_upload_expires_at_its_deadline() -> None:
    sut = an_upload(expires_at=T0 + timedelta(hours=1))

    assert not sut.expire(at=T0 + timedelta(minutes=59))
    assert sut.expire(at=T0 + timedelta(hours=1))
    assert sut.status is UploadStatus.EXPIRED
    assert not sut.expire(at=T0 + timedelta(hours=2))
    with pytest.raises(InvalidTransition):
        sut.receive_chunk(0, MIN, at=T0)


def test_a_chunk_after_the_deadline_expires_the_upload() -> None:
    sut = an_upload(expires_at=T0 + timedelta(hours=1))

    with pytest.raises(InvalidTransition):
        sut.receive_chunk(0, MIN, at=T0 + timedelta(hours=1))

    assert sut.status is UploadStatus.EXPIRED


def test_abort_ends_an_open_upload_only() -> None:
    sut = an_upload()

    sut.abort()

    assert sut.status is UploadStatus.ABORTED
    with pytest.raises(InvalidTransition):
        sut.abort()


# --- the state machine ------------------------------------------------------------------


def attempt(action: Callable[[], T]) -> tuple[T | None, DomainError | None]:
    """Run ``action`` and return its result or the domain error it raised."""
    try:
        return action(), None
    except DomainError as e:
        return None, e


T = TypeVar("T")
CHECKSUMS = [None, "sha256:" + SHA_A, "sha256:" + SHA_B, "sha256:" + SHA_A.upper(), "sha1:abc"]
TERMINAL = {UploadStatus.COMPLETED, UploadStatus.FAILED, UploadStatus.ABORTED, UploadStatus.EXPIRED}


class UploadMachine(RuleBasedStateMachine):
    """Drive one upload with valid and invalid chunks, completions, aborts and the passing of time."""

    sut: UploadSession
    now: datetime
    seen: list[UploadStatus]

    @initialize(
        chunks=st.integers(1, 5),
        remainder=st.integers(0, MIN - 1),
        chunk_size=st.sampled_from([MIN, MIN + 1, 2 * MIN]),
        declared=st.sampled_from([None, SHA_A, SHA_B]),
    )
    def open_upload(self, chunks: int, remainder: int, chunk_size: int, declared: str | None) -> None:
        size = max(1, (chunks - 1) * chunk_size + remainder)
        self.now = T0
        self.sut = an_upload(
            size=size,
            chunk_size=chunk_size,
            checksum=None if declared is None else "sha256:" + declared,
            expires_at=T0 + timedelta(hours=1),
        )
        self.seen = [self.sut.status]
        assert self.sut.total_chunks == -(-size // chunk_size)

    def _record(self) -> None:
        if self.sut.status is not self.seen[-1]:
            self.seen.append(self.sut.status)

    @rule(minutes=st.integers(0, 20))
    def time_passes(self, minutes: int) -> None:
        self.now += timedelta(minutes=minutes)

    @rule(data=st.data(), offset=st.sampled_from([0, 0, 0, -1, 1]))
    def receive_chunk(self, data: st.DataObject, offset: int) -> None:
        total = self.sut.total_chunks
        index = data.draw(st.integers(-1, total), label="index")
        was_open = self.sut.status is UploadStatus.UPLOADING and self.now < self.sut.expires_at
        valid_index = 0 <= index < total
        length = (self.sut.expected_length(index) if valid_index else MIN) + offset
        before = set(self.sut.received)
        new, error = attempt(lambda: self.sut.receive_chunk(index, length, at=self.now))

        if isinstance(error, InvalidTransition):
            assert not was_open
        elif isinstance(error, BusinessRuleViolation):
            assert was_open
            assert error.field == ("index" if not valid_index else "body")
            assert self.sut.received == before
        else:
            assert was_open and valid_index and offset == 0
            assert new is (index not in before)
            assert self.sut.received == before | {index}
        self._record()

    @rule(sha=st.sampled_from([SHA_A, SHA_B]), checksum=st.sampled_from(CHECKSUMS))
    def complete(self, sha: str, checksum: str | None) -> None:
        status = self.sut.status
        if status is UploadStatus.UPLOADING and self.now >= self.sut.expires_at:
            status = UploadStatus.EXPIRED
        missing = [i for i in range(self.sut.total_chunks) if i not in self.sut.received]
        already = status is UploadStatus.COMPLETED and self.sut.sha256 == sha
        _, error = attempt(lambda: self.sut.complete(sha256=sha, checksum=checksum, at=self.now))

        if isinstance(error, InvalidTransition):
            assert status is not UploadStatus.UPLOADING and not already
        elif isinstance(error, MissingChunks):
            assert status is UploadStatus.UPLOADING
            assert error.missing == missing
            assert self.sut.status is UploadStatus.UPLOADING
        elif isinstance(error, ChecksumMismatch):
            assert status is UploadStatus.UPLOADING and not missing
            assert error.actual == sha != error.expected
            assert self.sut.status is UploadStatus.FAILED
        elif isinstance(error, BusinessRuleViolation):
            # A malformed checksum, or one that contradicts the declared one: the upload stays open.
            assert status is UploadStatus.UPLOADING and not missing
            assert error.field == "checksum"
            assert checksum is not None
            assert self.sut.status is UploadStatus.UPLOADING
        else:
            assert already or (status is UploadStatus.UPLOADING and not missing)
            assert self.sut.status is UploadStatus.COMPLETED
            assert self.sut.sha256 == sha
        self._record()

    @rule()
    def receive_every_missing_chunk(self) -> None:
        was_open = self.sut.status is UploadStatus.UPLOADING and self.now < self.sut.expires_at
        try:
            for i in self.sut.missing_chunks:
                assert self.sut.receive_chunk(i, self.sut.expected_length(i), at=self.now)
        except InvalidTransition:
            assert not was_open
        else:
            assert self.sut.missing_chunks == [] or not was_open
        self._record()

    # A coin keeps aborts rare enough for most runs to reach completion.
    @rule(coin=st.integers(0, 7))
    def abort(self, coin: int) -> None:
        if coin:
            return
        was = self.sut.status
        try:
            self.sut.abort()
        except InvalidTransition:
            assert was in TERMINAL
            assert self.sut.status is was
        else:
            assert was is UploadStatus.UPLOADING
            assert self.sut.status is UploadStatus.ABORTED
        self._record()

    @rule()
    def expire(self) -> None:
        due = self.sut.status is UploadStatus.UPLOADING and self.now >= self.sut.expires_at
        assert self.sut.expire(at=self.now) is due
        if due:
            assert self.sut.status is UploadStatus.EXPIRED
        self._record()

    @invariant()
    def received_chunks_are_inside_the_file(self) -> None:
        assert self.sut.received <= set(range(self.sut.total_chunks))
        assert sorted(set(range(self.sut.total_chunks)) - self.sut.received) == self.sut.missing_chunks

    @invariant()
    def status_leaves_uploading_at_most_once_and_then_never_changes(self) -> None:
        self._record()
        assert self.seen[0] is UploadStatus.UPLOADING
        assert len(self.seen) <= 2
        if len(self.seen) == 2:
            assert self.seen[1] in TERMINAL

    @invariant()
    def completed_means_whole_and_intact(self) -> None:
        if self.sut.status is UploadStatus.COMPLETED:
            assert self.sut.missing_chunks == []
            assert self.sut.sha256 is not None
            if self.sut.declared_sha256 is not None:
                assert self.sut.sha256 == self.sut.declared_sha256
        else:
            assert self.sut.sha256 is None

    @invariant()
    def failed_means_checksum_mismatch(self) -> None:
        assert (self.sut.failure == "checksum mismatch") is (self.sut.status is UploadStatus.FAILED)

    @invariant()
    def chunk_lengths_add_up_to_the_size(self) -> None:
        lengths = [self.sut.expected_length(i) for i in range(self.sut.total_chunks)]
        assert sum(lengths) == self.sut.size
        assert all(0 < n <= self.sut.chunk_size for n in lengths)

    def teardown(self) -> None:
        if hasattr(self, "sut"):
            event(f"ended {self.sut.status.value}")


TestUploadMachine = UploadMachine.TestCase
TestUploadMachine.settings = settings(max_examples=200, stateful_step_count=30, deadline=None)


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("application/pdf", "application/pdf"),
        ("Text/Plain; charset=utf-8", "text/plain"),
        ("image/svg+xml", "image/svg+xml"),
    ],
)
def test_a_content_type_is_kept_as_its_media_type(given: str, kept: str) -> None:
    assert an_upload(content_type=given).content_type == kept


@pytest.mark.parametrize("content_type", ["", "pdf", "text/html\r\nSet-Cookie: a=b", "a/b c", "/x"])
def test_a_content_type_that_is_not_a_media_type_is_refused(content_type: str) -> None:
    with pytest.raises(BusinessRuleViolation) as raised:
        an_upload(content_type=content_type)

    assert raised.value.field == "content_type"


# --- direct uploads ----------------------------------------------------------------------


def test_a_direct_uploads_chunks_are_the_stored_parts_of_the_chunks_size() -> None:
    s = an_upload(direct=True, size=3 * MIN + 10)  # chunks of MIN, MIN, MIN, 10 bytes

    s.receive_stored_parts({0: MIN, 1: MIN - 1, 3: 10, 4: MIN})  # 1 is short, 4 is outside the file

    assert s.received == {0, 3}
    assert s.missing_chunks == [1, 2]
    with pytest.raises(InvalidTransition, match="part URLs"):
        s.receive_chunk(1, MIN, at=T0)


def test_direct_parts_match_by_etag_quoted_or_not_and_by_size() -> None:
    s = an_upload(direct=True, size=2 * MIN + 10)
    stored = {0: ("aa", MIN), 1: ("bb", MIN), 2: ("cc", 10)}

    with pytest.raises(PartsMismatch) as differ:
        s.match_direct_parts({**stored, 1: ("bb", MIN + 1)}, [(0, "aa"), (1, "bb"), (2, "zz")], at=T0)
    s.match_direct_parts(stored, [(2, '"cc"'), (0, ' "aa" '), (1, "bb")], at=T0)

    assert differ.value.parts == [1, 2]
    assert s.received == {0, 1, 2}
    s.complete(sha256=SHA_A, checksum=None, at=T0)
    assert s.status is UploadStatus.COMPLETED


def test_part_urls_are_for_open_direct_uploads_and_chunks_of_the_file() -> None:
    s = an_upload(direct=True)
    s.receive_stored_parts({1: MIN})

    assert s.part_indexes(None, at=T0) == [0, 2, 3]
    assert s.part_indexes([3, 0, 3], at=T0) == [0, 3]
    with pytest.raises(BusinessRuleViolation, match="index"):
        s.part_indexes([4], at=T0)
    with pytest.raises(BusinessRuleViolation) as not_direct:
        an_upload().part_indexes(None, at=T0)
    assert not_direct.value.field == "direct"
    s.abort()
    with pytest.raises(InvalidTransition):
        s.part_indexes(None, at=T0)
