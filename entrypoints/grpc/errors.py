"""One table from every application and domain error to a gRPC status: the twin of the REST API's problem table.

An error answers with the status, the same human message as the REST ``detail``, and trailing
metadata a program can read: ``chat4all-problem`` (the REST problem type's last segment, e.g.
``missing-chunks``) and, when one input is at fault, ``chat4all-field`` (e.g. ``payload.text``).
"""

from __future__ import annotations

import logging
import math

import attrs
from grpclib.const import Status

from application.errors import (
    ApplicationError,
    AuthenticationFailed,
    Busy,
    Conflict,
    Forbidden,
    NotFound,
    RateLimited,
    Unavailable,
)
from application.ports import StorageUnavailable
from domain.errors import BusinessRuleViolation, DomainError, InvalidTransition
from domain.uploads import BadChunk, MissingChunks, PartsMismatch, UploadTooLarge

log = logging.getLogger(__name__)

FIELD_KEY = "chat4all-field"
PROBLEM_KEY = "chat4all-problem"
RETRY_AFTER_KEY = "chat4all-retry-after"

# Most specific first: the first matching class wins. The REST status each one answers with is noted.
ERROR_TABLE: list[tuple[type[Exception], Status, str]] = [
    (UploadTooLarge, Status.RESOURCE_EXHAUSTED, "too-large"),  # 413
    (MissingChunks, Status.FAILED_PRECONDITION, "missing-chunks"),  # 409
    (PartsMismatch, Status.FAILED_PRECONDITION, "parts-mismatch"),  # 409
    (BadChunk, Status.INVALID_ARGUMENT, "bad-chunk"),  # 400
    (BusinessRuleViolation, Status.INVALID_ARGUMENT, "invalid"),  # 422
    (InvalidTransition, Status.FAILED_PRECONDITION, "conflict"),  # 409
    (DomainError, Status.INVALID_ARGUMENT, "invalid"),  # 422
    (NotFound, Status.NOT_FOUND, "not-found"),  # 404
    (Forbidden, Status.PERMISSION_DENIED, "forbidden"),  # 403
    (Busy, Status.ABORTED, "busy"),  # 409: a retry racing its first attempt; retry
    (Conflict, Status.ALREADY_EXISTS, "conflict"),  # 409: a message_id reused for another message
    (AuthenticationFailed, Status.UNAUTHENTICATED, "unauthorized"),  # 401
    (RateLimited, Status.RESOURCE_EXHAUSTED, "rate-limited"),  # 429, retry-after in trailer chat4all-retry-after
    (StorageUnavailable, Status.UNAVAILABLE, "storage-unavailable"),  # 503
    (Unavailable, Status.UNAVAILABLE, "unavailable"),  # 503
    (ApplicationError, Status.INVALID_ARGUMENT, "bad-request"),  # 400
]


@attrs.frozen
class Mapped:
    """An error as a gRPC call answers it."""

    status: Status
    message: str
    problem: str
    field: str | None
    retry_after: int | None = None

    @property
    def metadata(self) -> dict[str, str]:
        """The trailing metadata that names the problem (the field at fault, the seconds to wait before a retry)."""
        meta = {PROBLEM_KEY: self.problem}
        if self.field:
            meta[FIELD_KEY] = self.field
        if self.retry_after is not None:
            meta[RETRY_AFTER_KEY] = str(self.retry_after)
        return meta


def mapped(exc: ApplicationError | DomainError) -> Mapped:
    """``exc`` as a status, message, problem and field."""
    for cls, status, problem in ERROR_TABLE:
        if isinstance(exc, cls):
            if isinstance(exc, StorageUnavailable):
                log.warning("file storage unavailable: %s", getattr(exc, "reason", exc))
            message = getattr(exc, "message", None) or str(exc)
            field = getattr(exc, "field", None)
            wait = getattr(exc, "retry_after", None) if isinstance(exc, RateLimited) else None
            retry_after = max(1, math.ceil(wait)) if wait is not None else None
            return Mapped(status=status, message=message, problem=problem, field=field, retry_after=retry_after)
    raise TypeError(f"no status mapping for {type(exc).__name__}") from exc


def invalid(message: str, field: str) -> BusinessRuleViolation:
    """A request that breaks the contract's shape (a malformed id, a limit out of range): INVALID_ARGUMENT."""
    return BusinessRuleViolation(message, field=field)
