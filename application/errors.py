"""The root of every error the application layer raises."""

from __future__ import annotations


class ApplicationError(Exception):
    """A use case could not be carried out."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class NotFound(ApplicationError):
    """The resource does not exist, or the caller may not know that it does."""


class Forbidden(ApplicationError):
    """The caller is known but not allowed to do this."""


class Conflict(ApplicationError):
    """The request clashes with the current state (a taken name, a reused idempotency key)."""


class Busy(Conflict):
    """The same request is being handled right now (a retry racing its first attempt); retry shortly."""


class AuthenticationFailed(ApplicationError):
    """Credentials or a token were missing, wrong or expired."""


class Unavailable(ApplicationError):
    """A backing service is down; the request may be retried."""


class RateLimited(ApplicationError):
    """The caller went over a rate limit; ``retry_after`` seconds from now the call would be let through."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after
