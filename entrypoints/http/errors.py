"""One table from every error to an RFC 9457 problem+json answer (Litestar's problem-details plugin)."""

from __future__ import annotations

import logging
import math
from http import HTTPStatus
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.plugins.problem_details import ProblemDetailsConfig, ProblemDetailsException, ProblemDetailsPlugin

from application.errors import (
    ApplicationError,
    AuthenticationFailed,
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

PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "https://chat4all.dev/problems/"

# Most specific first: the first matching class wins.
ERROR_TABLE: list[tuple[type[Exception], int, str]] = [
    (UploadTooLarge, 413, "too-large"),
    (MissingChunks, 409, "missing-chunks"),
    (PartsMismatch, 409, "parts-mismatch"),
    (BadChunk, 400, "bad-chunk"),
    (BusinessRuleViolation, 422, "invalid"),
    (InvalidTransition, 409, "conflict"),
    (DomainError, 422, "invalid"),
    (NotFound, 404, "not-found"),
    (Forbidden, 403, "forbidden"),
    (Conflict, 409, "conflict"),
    (AuthenticationFailed, 401, "unauthorized"),
    (RateLimited, 429, "rate-limited"),
    (StorageUnavailable, 503, "storage-unavailable"),
    (Unavailable, 503, "unavailable"),
    (ApplicationError, 400, "bad-request"),
]

_SLUGS = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    409: "conflict",
    413: "too-large",
    415: "unsupported-media-type",
    422: "invalid",
    429: "rate-limited",
    503: "unavailable",
}


def problem(
    status: int,
    detail: str | None,
    *,
    slug: str | None = None,
    errors: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> ProblemDetailsException:
    return ProblemDetailsException(
        status_code=status,
        type_=PROBLEM_BASE + (slug or _SLUGS.get(status, "error")),
        title=HTTPStatus(status).phrase,
        detail=detail or "",
        extra={"errors": errors} if errors else None,
        headers=headers,
    )


def app_error(exc: Exception) -> ProblemDetailsException:
    """A domain or application error as a problem."""
    for cls, status, slug in ERROR_TABLE:
        if isinstance(exc, cls):
            headers = {"Retry-After": "5"} if status == 503 else None
            if isinstance(exc, StorageUnavailable):
                log.warning("file storage unavailable: %s", getattr(exc, "reason", exc))
            if status == 401:
                headers = {"WWW-Authenticate": "Bearer"}
            if isinstance(exc, RateLimited):
                headers = {"Retry-After": str(max(1, math.ceil(getattr(exc, "retry_after", 1))))}
            field = getattr(exc, "field", None)
            message = getattr(exc, "message", str(exc))
            errors = [{"field": field, "message": message}] if field else None
            return problem(status, message, slug=slug, errors=errors, headers=headers)
    raise TypeError(f"no problem mapping for {type(exc).__name__}") from exc


def http_error(exc: HTTPException) -> ProblemDetailsException:
    """Litestar's own errors (validation, auth, routing, body size) as problems."""
    status = exc.status_code
    errors: list[dict[str, str]] | None = None
    detail = exc.detail
    if isinstance(exc, ValidationException):
        detail = "the request does not match the schema"
        extra = exc.extra if isinstance(exc.extra, list) else []
        errors = [
            {"field": str(e.get("key") or e.get("source") or "body"), "message": str(e.get("message", ""))}
            for e in extra
            if isinstance(e, dict)
        ] or [{"field": "body", "message": exc.detail}]
    elif status == 401:
        detail = "a valid bearer token is required"
    elif status >= 500:
        detail = "internal error"
    headers = dict(exc.headers or {})
    if status == 401:
        headers.setdefault("WWW-Authenticate", "Bearer")
    return problem(status, detail, errors=errors, headers=headers or None)


def internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """Anything unexpected: logged with its traceback, answered without details."""
    log.exception("unhandled error", exc_info=exc)
    return problem(500, "internal error", slug="internal").to_response(request)


PROBLEM_DETAILS = ProblemDetailsPlugin(
    ProblemDetailsConfig(
        exception_to_problem_detail_map={
            DomainError: app_error,
            ApplicationError: app_error,
            HTTPException: http_error,
        }
    )
)
EXCEPTION_HANDLERS: dict[type[Exception] | int, Any] = {Exception: internal_error}
