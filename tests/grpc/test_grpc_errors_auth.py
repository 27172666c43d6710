"""Every core error has a gRPC status; bearer tokens are checked once and remembered only until they expire."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from adapters.security import JwtTokenIssuer, TokenSettings
from application.errors import ApplicationError, Busy, Conflict, Forbidden, NotFound, RateLimited, Unavailable
from application.ports import StorageUnavailable
from domain.errors import BusinessRuleViolation, DomainError, InvalidTransition
from domain.ids import UserId
from domain.uploads import MissingChunks, UploadTooLarge
from entrypoints.grpc.auth import BearerAuth
from entrypoints.grpc.errors import ERROR_TABLE, mapped
from tests.builders import core_error_classes

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("cls", core_error_classes(), ids=lambda c: c.__qualname__)
def test_every_core_error_maps_to_a_client_status(cls: type[Exception]) -> None:
    assert any(issubclass(cls, known) for known, _, _ in ERROR_TABLE)
    instance = cls.__new__(cls)
    Exception.__init__(instance, "boom")
    instance.message = "boom"  # type: ignore[attr-defined]
    instance.field = None  # type: ignore[attr-defined]
    m = mapped(instance)  # type: ignore[arg-type]
    assert m.status not in {Status.OK, Status.UNKNOWN, Status.INTERNAL}
    assert m.message == "boom"


@pytest.mark.parametrize(
    ("error", "status", "problem", "field"),
    [
        (NotFound("no such message"), Status.NOT_FOUND, "not-found", None),
        (Forbidden("not a member"), Status.PERMISSION_DENIED, "forbidden", None),
        (Conflict("reused", field="message_id"), Status.ALREADY_EXISTS, "conflict", "message_id"),
        (Busy("in use; retry", field="message_id"), Status.ABORTED, "busy", "message_id"),
        (BusinessRuleViolation("too long", field="payload.text"), Status.INVALID_ARGUMENT, "invalid", "payload.text"),
        (InvalidTransition("upload is completed"), Status.FAILED_PRECONDITION, "conflict", None),
        (MissingChunks([1, 2]), Status.FAILED_PRECONDITION, "missing-chunks", "chunks"),
        (UploadTooLarge("over 2 GiB"), Status.RESOURCE_EXHAUSTED, "too-large", "size"),
        (StorageUnavailable("disk on fire"), Status.UNAVAILABLE, "storage-unavailable", None),
        (Unavailable("the database is unavailable"), Status.UNAVAILABLE, "unavailable", None),
        (
            RateLimited("too many messages; retry in 2 s", retry_after=1.2),
            Status.RESOURCE_EXHAUSTED,
            "rate-limited",
            None,
        ),
    ],
)
def test_the_mapping_mirrors_rest(
    error: ApplicationError | DomainError, status: Status, problem: str, field: str | None
) -> None:
    m = mapped(error)
    assert (m.status, m.problem, m.field) == (status, problem, field)
    retry = {"chat4all-retry-after": "2"} if isinstance(error, RateLimited) else {}
    assert m.metadata == {"chat4all-problem": problem, **({"chat4all-field": field} if field else {}), **retry}


def test_a_token_is_verified_once_and_remembered_until_it_expires() -> None:
    issuer = JwtTokenIssuer(TokenSettings(secret="s" * 40, ttl=timedelta(minutes=5)))
    user = UserId(uuid.uuid4())
    token = issuer.issue_access(user, at=datetime.now(UTC)).token
    calls: list[str] = []

    def verify(t: str) -> UserId | None:
        calls.append(t)
        return issuer.verify(t)

    now = [datetime.now(UTC).timestamp()]
    auth = BearerAuth(verify, clock=lambda: now[0])
    for _ in range(3):
        assert auth.user({"authorization": f"Bearer {token}"}) == user
    assert calls == [token]
    now[0] += 301  # past its exp
    with pytest.raises(GRPCError) as caught:
        auth.user({"authorization": f"Bearer {token}"})
    assert caught.value.status is Status.UNAUTHENTICATED


def test_the_remembered_tokens_are_bounded() -> None:
    issuer = JwtTokenIssuer(TokenSettings(secret="s" * 40))
    auth = BearerAuth(issuer.verify, size=2)
    tokens = [issuer.issue_access(UserId(uuid.uuid4()), at=datetime.now(UTC)).token for _ in range(3)]
    for t in tokens:
        auth.user({"authorization": f"Bearer {t}"})
    assert len(auth._known) == 2
