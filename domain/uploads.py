"""Upload sessions: a file arrives in fixed-size chunks, in any order, and completes only whole."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from datetime import datetime
from enum import StrEnum
from typing import ClassVar, Final

import attrs

from domain.errors import BusinessRuleViolation, InvalidTransition
from domain.ids import FileId, UserId


class UploadStatus(StrEnum):
    """uploading -> completed | failed | aborted | expired."""

    UPLOADING = "uploading"
    COMPLETED = "completed"
    FAILED = "failed"
    ABORTED = "aborted"
    EXPIRED = "expired"


_TERMINAL: Final = frozenset({UploadStatus.COMPLETED, UploadStatus.FAILED, UploadStatus.ABORTED, UploadStatus.EXPIRED})
_NEXT: Final = {
    UploadStatus.UPLOADING: _TERMINAL,
    UploadStatus.COMPLETED: frozenset[UploadStatus](),
    UploadStatus.FAILED: frozenset[UploadStatus](),
    UploadStatus.ABORTED: frozenset[UploadStatus](),
    UploadStatus.EXPIRED: frozenset[UploadStatus](),
}

DEFAULT_MAX_SIZE: Final = 2 * 1024**3
DEFAULT_CHUNK_SIZE: Final = 8 * 1024**2


def _etag(tag: str) -> str:
    """An ETag without its quotes (HTTP headers quote it, S3's part listings do not)."""
    return tag.strip().strip('"')


_BIDI_CONTROLS: Final = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def safe_filename(given: str) -> str:
    """The name a file is stored, shown and served under: the last path segment, NFC, without controls.

    A browser may send a whole path (``C:/fakepath/a.pdf``, with either slash): only its last segment
    is the name. Control characters and the invisible direction marks that make ``evil<U+202E>fdp.exe``
    read as ``evilexe.pdf`` are dropped, and ``.`` or ``..`` is no name at all (an empty result).
    """
    name = unicodedata.normalize("NFC", given).replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if c not in _BIDI_CONTROLS and unicodedata.category(c) not in ("Cc", "Zl", "Zp"))
    name = name.strip()
    return "" if name in (".", "..") else name


_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")


def media_type(given: str) -> str:
    """A content type as it may go into a header: ``type/subtype`` (RFC 6838), lower-cased, without parameters.

    Raises:
        BusinessRuleViolation: it is not one.
    """
    essence = given.split(";", 1)[0].strip().lower()
    if not _MEDIA_TYPE.fullmatch(essence):
        raise BusinessRuleViolation("content_type is a media type such as 'application/pdf'", field="content_type")
    return essence


def _sha256_hex(checksum: str) -> str:
    algo, sep, digest = checksum.partition(":")
    digest = digest.lower()
    if algo != "sha256" or not sep or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise BusinessRuleViolation("a checksum is 'sha256:' followed by 64 hex digits", field="checksum")
    return digest


@attrs.define(kw_only=True, eq=False)
class UploadSession:
    """A resumable upload of ``size`` bytes in ``total_chunks`` chunks of ``chunk_size``."""

    MIN_CHUNK: ClassVar[int] = 256 * 1024
    MAX_CHUNK: ClassVar[int] = 64 * 1024**2
    MAX_FILENAME: ClassVar[int] = 255

    id: FileId
    owner_id: UserId
    filename: str
    size: int
    content_type: str
    declared_sha256: str | None
    chunk_size: int
    created_at: datetime
    expires_at: datetime
    status: UploadStatus = UploadStatus.UPLOADING
    received: set[int] = attrs.field(factory=set)
    sha256: str | None = None
    failure: str | None = None
    store_upload_id: str | None = None
    """The object store's id for the open multipart upload."""
    blob_key: str | None = None
    """Where the completed bytes are; files with identical content share one blob."""
    direct: bool = False
    """The client sends the chunks to the object store itself (presigned part URLs), not through the API."""

    @classmethod
    def initiate(
        cls,
        *,
        id: FileId,
        owner_id: UserId,
        filename: str,
        size: int,
        content_type: str,
        checksum: str | None,
        chunk_size: int | None,
        at: datetime,
        expires_at: datetime,
        max_size: int = DEFAULT_MAX_SIZE,
        direct: bool = False,
    ) -> UploadSession:
        """Open an upload.

        Raises:
            BusinessRuleViolation: a size, chunk size, name or checksum is out of bounds.
        """
        name = safe_filename(filename)
        if not name or len(name) > cls.MAX_FILENAME:
            raise BusinessRuleViolation(
                f"a filename has 1-{cls.MAX_FILENAME} characters besides path, control and direction characters",
                field="filename",
            )
        content_type = media_type(content_type)
        if size < 1:
            raise BusinessRuleViolation("size is at least 1 byte", field="size")
        if size > max_size:
            raise UploadTooLarge(f"size {size} exceeds the limit of {max_size} bytes")
        chunk = DEFAULT_CHUNK_SIZE if chunk_size is None else chunk_size
        if not cls.MIN_CHUNK <= chunk <= cls.MAX_CHUNK:
            raise BusinessRuleViolation(
                f"chunk_size is between {cls.MIN_CHUNK} and {cls.MAX_CHUNK} bytes", field="chunk_size"
            )
        return cls(
            id=id,
            owner_id=owner_id,
            filename=name,
            size=size,
            content_type=content_type,
            declared_sha256=None if checksum is None else _sha256_hex(checksum),
            chunk_size=chunk,
            created_at=at,
            expires_at=expires_at,
            direct=direct,
        )

    @property
    def total_chunks(self) -> int:
        """How many chunks make the whole file."""
        return -(-self.size // self.chunk_size)

    def expected_length(self, index: int) -> int:
        """The exact byte length chunk ``index`` must have.

        Raises:
            BusinessRuleViolation: ``index`` is outside the file.
        """
        if not 0 <= index < self.total_chunks:
            raise BadChunk(f"chunk index is between 0 and {self.total_chunks - 1}", field="index")
        if index == self.total_chunks - 1:
            return self.size - self.chunk_size * (self.total_chunks - 1)
        return self.chunk_size

    @property
    def missing_chunks(self) -> list[int]:
        """The chunk indexes not yet received, ascending."""
        return [i for i in range(self.total_chunks) if i not in self.received]

    def receive_chunk(self, index: int, length: int, *, at: datetime) -> bool:
        """Record chunk ``index``; a resent chunk is harmless.

        Returns:
            True when the chunk is new.

        Raises:
            InvalidTransition: the upload is no longer open.
            BusinessRuleViolation: the index or length is wrong.
        """
        self._expire_if_due(at)
        if self.status is not UploadStatus.UPLOADING:
            raise InvalidTransition(f"upload is {self.status.value}; it takes no more chunks")
        if self.direct:
            raise InvalidTransition("a direct upload's chunks go to the presigned part URLs")
        expected = self.expected_length(index)
        if length != expected:
            raise BadChunk(f"chunk {index} must be {expected} bytes, got {length}", field="body")
        if index in self.received:
            return False
        self.received.add(index)
        return True

    # --- direct uploads: the chunks are parts the client sent to the store, which the API never sees ---

    def part_indexes(self, requested: Sequence[int] | None, *, at: datetime) -> list[int]:
        """The chunks of a direct upload to hand part URLs for: ``requested``, else the missing ones.

        Raises:
            BusinessRuleViolation: not a direct upload (``direct``), or an index outside the file (``index``).
            InvalidTransition: the upload is no longer open.
        """
        self._open_direct(at)
        if requested is None:
            return self.missing_chunks
        for index in requested:
            self.expected_length(index)
        return sorted(set(requested))

    def receive_stored_parts(self, sizes: Mapping[int, int]) -> None:
        """A direct upload's chunks are the parts the store holds (index -> size) of the chunk's exact size.

        A part of another size counts as missing: it has to be sent again. Other uploads are left as they are.
        """
        if self.direct and self.status is UploadStatus.UPLOADING:
            self.received = {
                i for i, size in sizes.items() if 0 <= i < self.total_chunks and size == self.expected_length(i)
            }

    def match_direct_parts(
        self, stored: Mapping[int, tuple[str, int]], claimed: Sequence[tuple[int, str]] | None, *, at: datetime
    ) -> None:
        """Take the parts the store holds (index -> (ETag, size)) as the chunks, if they are the ones the client sent.

        ``claimed`` is the client's (index, ETag) for every chunk, as the store answered each part's upload;
        a part the store holds in another version, or at another size than the chunk's, is refused, so what
        is assembled is exactly what the client sent and exactly ``size`` bytes long.

        Raises:
            BusinessRuleViolation: not a direct upload, or ``claimed`` is absent or does not name every chunk once.
            MissingChunks: chunks the store does not hold (the upload stays open).
            PartsMismatch: parts whose ETag or size is not the chunk's (the upload stays open: send them again).
            InvalidTransition: the upload is no longer open.
        """
        if claimed is not None and not self.direct:
            raise BusinessRuleViolation("only a direct upload completes with its parts", field="parts")
        self._open_direct(at)
        if claimed is None:
            raise BusinessRuleViolation("a direct upload completes with its parts' ETags", field="parts")
        named: dict[int, str] = {}
        for index, etag in claimed:
            if not 0 <= index < self.total_chunks or index in named:
                raise BusinessRuleViolation(
                    f"parts names each chunk from 0 to {self.total_chunks - 1} once (index {index})", field="parts"
                )
            named[index] = _etag(etag)
        missing = [i for i in range(self.total_chunks) if i not in stored]
        if missing:
            raise MissingChunks(missing)
        unnamed = [i for i in range(self.total_chunks) if i not in named]
        if unnamed:
            shown = ", ".join(map(str, unnamed[:20])) + (" ..." if len(unnamed) > 20 else "")
            raise BusinessRuleViolation(f"parts does not name chunk(s) {shown}", field="parts")
        differing = [
            i
            for i in range(self.total_chunks)
            if _etag(stored[i][0]) != named[i] or stored[i][1] != self.expected_length(i)
        ]
        if differing:
            raise PartsMismatch(differing)
        self.received = set(range(self.total_chunks))

    def mark_assembled(self) -> None:
        """Every chunk is in: the store assembled them already (a completion that failed after doing so)."""
        self._move(UploadStatus.UPLOADING, check_only=True)
        self.received = set(range(self.total_chunks))

    def _open_direct(self, at: datetime) -> None:
        self._expire_if_due(at)
        if not self.direct:
            raise BusinessRuleViolation("this is not a direct upload", field="direct")
        if self.status is not UploadStatus.UPLOADING:
            raise InvalidTransition(f"upload is {self.status.value}")

    def complete(self, *, sha256: str, checksum: str | None, at: datetime) -> None:
        """Finish the upload once every chunk is in and the whole-file SHA-256 matches.

        A mismatch fails the upload for good: nothing becomes downloadable.

        Raises:
            MissingChunks: some chunks are still missing (the upload stays open).
            ChecksumMismatch: the computed digest differs from the declared one.
            InvalidTransition: the upload is no longer open.
        """
        self._expire_if_due(at)
        if self.status is UploadStatus.COMPLETED and self.sha256 == sha256:
            return
        self._move(UploadStatus.UPLOADING, check_only=True)
        if self.missing_chunks:
            raise MissingChunks(self.missing_chunks)
        declared = _sha256_hex(checksum) if checksum is not None else self.declared_sha256
        if declared is not None and self.declared_sha256 is not None and declared != self.declared_sha256:
            raise BusinessRuleViolation("checksum differs from the one declared at initiate", field="checksum")
        if declared is not None and declared != sha256:
            self._move(UploadStatus.FAILED)
            self.failure = "checksum mismatch"
            raise ChecksumMismatch(expected=declared, actual=sha256)
        self.sha256 = sha256
        self._move(UploadStatus.COMPLETED)

    def abort(self) -> None:
        """Give up an unfinished upload.

        Raises:
            InvalidTransition: the upload already ended.
        """
        self._move(UploadStatus.ABORTED)

    def expire(self, *, at: datetime) -> bool:
        """Expire the upload if it is still open past ``expires_at``; returns True if it did."""
        return self._expire_if_due(at)

    def _expire_if_due(self, at: datetime) -> bool:
        if self.status is UploadStatus.UPLOADING and at >= self.expires_at:
            self.status = UploadStatus.EXPIRED
            return True
        return False

    def _move(self, to: UploadStatus, *, check_only: bool = False) -> None:
        if to is UploadStatus.UPLOADING:
            if self.status is not UploadStatus.UPLOADING:
                raise InvalidTransition(f"upload is {self.status.value}")
            return
        if to not in _NEXT[self.status]:
            raise InvalidTransition(f"upload is {self.status.value}; it cannot become {to.value}")
        if not check_only:
            self.status = to


class BadChunk(BusinessRuleViolation):
    """A chunk that cannot be part of the file: an index outside it, or the wrong length."""


class UploadTooLarge(BusinessRuleViolation):
    """The declared size is over the configured limit."""

    def __init__(self, message: str) -> None:
        super().__init__(message, field="size")


class MissingChunks(BusinessRuleViolation):
    """Completion was asked for before every chunk arrived."""

    def __init__(self, missing: list[int]) -> None:
        shown = ", ".join(map(str, missing[:20])) + (" ..." if len(missing) > 20 else "")
        super().__init__(f"{len(missing)} chunk(s) missing: {shown}", field="chunks")
        self.missing = missing


class PartsMismatch(BusinessRuleViolation):
    """A direct upload's stored parts are not the ones the client sent (another ETag) or not the chunk's size."""

    def __init__(self, parts: list[int]) -> None:
        shown = ", ".join(map(str, parts[:20])) + (" ..." if len(parts) > 20 else "")
        super().__init__(
            f"{len(parts)} part(s) differ from the stored ones (ETag or size); send them again: {shown}",
            field="parts",
        )
        self.parts = parts


class ChecksumMismatch(BusinessRuleViolation):
    """The whole file's SHA-256 is not the one declared."""

    def __init__(self, *, expected: str, actual: str) -> None:
        super().__init__(f"sha256 mismatch: expected {expected}, got {actual}", field="checksum")
        self.expected = expected
        self.actual = actual
