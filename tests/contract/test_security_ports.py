"""PasswordHasher, TokenIssuer and Clock: the fakes the unit tests use behave like the real adapters."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import argon2
import jwt
import pytest

from adapters.security import Argon2PasswordHasher, JwtTokenIssuer, TokenSettings
from adapters.system import SystemClock, UuidGenerator
from application.ports import Clock, PasswordHasher
from domain.ids import UserId
from tests.builders import FakeClock, FakePasswordHasher

pytestmark = pytest.mark.contract


@pytest.fixture(params=["fake", "argon2id"])
def hasher(request: pytest.FixtureRequest) -> PasswordHasher:
    if request.param == "fake":
        return FakePasswordHasher()
    return Argon2PasswordHasher(argon2.PasswordHasher.from_parameters(argon2.profiles.CHEAPEST))


async def test_a_hash_verifies_its_password_only(hasher: PasswordHasher) -> None:
    encoded = await hasher.hash("correct horse")
    assert "correct horse" not in encoded
    assert await hasher.verify(encoded, "correct horse")
    assert not await hasher.verify(encoded, "correct horsE")
    assert not await hasher.verify(encoded, "")


async def test_a_garbage_hash_is_a_mismatch_not_an_error(hasher: PasswordHasher) -> None:
    assert not await hasher.verify("not a hash at all", "correct horse")


async def test_real_hashes_are_argon2id_and_salted() -> None:
    real = Argon2PasswordHasher(argon2.PasswordHasher.from_parameters(argon2.profiles.CHEAPEST))
    a, b = await real.hash("same password"), await real.hash("same password")
    assert a.startswith("$argon2id$")
    assert a != b


@pytest.fixture(params=["fake", "system"])
def clock(request: pytest.FixtureRequest) -> Clock:
    return FakeClock() if request.param == "fake" else SystemClock()


def test_clocks_tell_aware_utc_time(clock: Clock) -> None:
    now = clock.now()
    assert now.tzinfo is not None
    assert now.utcoffset() == timedelta(0)


def test_ids_are_unique_uuids() -> None:
    ids = UuidGenerator()
    drawn = {ids.new() for _ in range(1000)}
    assert len(drawn) == 1000
    assert all(isinstance(i, uuid.UUID) for i in drawn)


class TestJwtTokenIssuer:
    secret = "s" * 40

    def sut(self, **overrides: object) -> JwtTokenIssuer:
        return JwtTokenIssuer(TokenSettings(secret=self.secret, **overrides))  # type: ignore[arg-type]

    def test_a_token_names_its_user_and_lives_an_hour(self) -> None:
        user = UserId(uuid.uuid4())
        token = self.sut().issue_access(user, at=datetime.now(UTC))
        assert token.expires_in == 3600
        assert self.sut().verify(token.token) == user

    def test_expired_foreign_and_tampered_tokens_are_refused(self) -> None:
        user = UserId(uuid.uuid4())
        old = self.sut().issue_access(user, at=datetime.now(UTC) - timedelta(hours=2)).token
        assert self.sut().verify(old) is None
        other_key = JwtTokenIssuer(TokenSettings(secret="o" * 40)).issue_access(user, at=datetime.now(UTC)).token
        assert self.sut().verify(other_key) is None
        other_audience = self.sut(audience="elsewhere").issue_access(user, at=datetime.now(UTC)).token
        assert self.sut().verify(other_audience) is None
        good = self.sut().issue_access(user, at=datetime.now(UTC)).token
        head, body, sig = good.split(".")
        assert self.sut().verify(f"{head}.{body}.{sig[::-1]}") is None

    def test_alg_none_is_refused(self) -> None:
        now = datetime.now(UTC)
        claims = {
            "sub": str(uuid.uuid4()),
            "iss": "chat4all",
            "aud": "chat4all",
            "iat": int(now.timestamp()),
            "exp": int((now + timedelta(hours=1)).timestamp()),
        }
        unsigned = jwt.encode(claims, key=None, algorithm="none")
        assert self.sut().verify(unsigned) is None

    def test_secrets_are_long_and_unique(self) -> None:
        drawn = {self.sut().new_secret() for _ in range(200)}
        assert len(drawn) == 200
        assert min(len(s) for s in drawn) >= 43  # 32 random bytes, URL-safe base64
