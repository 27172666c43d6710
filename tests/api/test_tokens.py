"""Access tokens are verified once per process and remembered only while they are valid."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from litestar.exceptions import NotAuthorizedException
from litestar.security.jwt import Token

from entrypoints.http.tokens import CachedToken, VerifiedTokens

pytestmark = pytest.mark.unit

SECRET = "s" * 40


def a_token(**claims: Any) -> str:
    now = int(time.time())
    base = {"sub": str(uuid.uuid4()), "iss": "chat4all", "aud": "chat4all", "iat": now, "exp": now + 600}
    return jwt.encode({**base, **claims}, SECRET, algorithm="HS256")


def decode(token: str, *, secret: str = SECRET, audience: str = "chat4all") -> CachedToken:
    return CachedToken.decode(token, secret, "HS256", audience=audience, issuer="chat4all", require_claims=["exp"])


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The tokens whose signature PyJWT actually checked."""
    seen: list[str] = []
    original = Token.decode_payload.__func__  # type: ignore[attr-defined]

    def counting(cls: type[Token], encoded_token: str, **kwargs: Any) -> Any:
        seen.append(encoded_token)
        return original(cls, encoded_token=encoded_token, **kwargs)

    monkeypatch.setattr(Token, "decode_payload", classmethod(counting))
    return seen


def test_a_token_is_verified_once_then_remembered(verifications: list[str]) -> None:
    token = a_token()

    first, second = decode(token), decode(token)

    assert first.sub == second.sub
    assert verifications == [token]


def test_a_remembered_token_is_refused_once_it_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    token = a_token(exp=int(time.time()) + 2)
    decode(token)

    later = time.time() + 5
    monkeypatch.setattr("entrypoints.http.tokens.datetime", _FrozenDatetime(later))
    with pytest.raises(NotAuthorizedException):
        decode(token)


def test_other_checks_are_not_answered_from_memory(verifications: list[str]) -> None:
    token = a_token()
    decode(token)

    with pytest.raises(NotAuthorizedException):
        decode(token, secret="w" * 40)
    with pytest.raises(NotAuthorizedException):
        decode(token, audience="other")
    assert len(verifications) == 3


def test_a_refused_token_is_never_remembered(verifications: list[str]) -> None:
    forged = a_token()[:-4] + "AAAA"

    for _ in range(2):
        with pytest.raises(NotAuthorizedException):
            decode(forged)
    assert verifications == [forged, forged]


def test_memory_is_bounded_and_keeps_the_recently_used() -> None:
    memory = VerifiedTokens(size=2)
    tokens = {name: Token(exp=_in(60), sub=name) for name in "abc"}
    memory.put(("a",), tokens["a"])
    memory.put(("b",), tokens["b"])
    assert memory.get(("a",)) is tokens["a"]  # a is now the most recently used

    memory.put(("c",), tokens["c"])

    assert memory.get(("b",)) is None
    assert memory.get(("a",)) is tokens["a"] and memory.get(("c",)) is tokens["c"]


def _in(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


class _FrozenDatetime:
    def __init__(self, at: float) -> None:
        self.at = at

    def now(self, tz: Any) -> datetime:
        return datetime.fromtimestamp(self.at, tz)
