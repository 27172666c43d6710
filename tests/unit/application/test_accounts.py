"""Accounts and tokens: register, log in with a password or client credentials, refresh once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import jwt
import pytest
from argon2 import PasswordHasher, profiles

from adapters.security import Argon2PasswordHasher, JwtTokenIssuer, TokenSettings
from application import commands as c
from application import views as v
from application.errors import AuthenticationFailed, Conflict, NotFound
from application.handlers import Settings
from domain.errors import BusinessRuleViolation
from tests.builders import PASSWORD, T0, Chat4All, FakeClock, FakePasswordHasher, a_chat4all, a_user_id

TOKENS = JwtTokenIssuer(TokenSettings(secret="x" * 32))


# --- register ------------------------------------------------------------------------


async def test_register_creates_an_account_with_a_hashed_password(app: Chat4All) -> None:
    view = await app.handle(c.RegisterUser("ana", PASSWORD, "Ana Lima"))

    assert view == v.UserView(user_id=view.user_id, username="ana", display_name="Ana Lima", created_at=T0)
    stored = app.store.state.users[view.user_id]
    assert stored.password_hash != PASSWORD
    assert stored.password_hash == await FakePasswordHasher().hash(PASSWORD)


async def test_a_taken_username_is_a_conflict(app: Chat4All) -> None:
    await app.register("ana")

    with pytest.raises(Conflict) as raised:
        await app.handle(c.RegisterUser("ana", "another password"))

    assert raised.value.field == "username"
    assert len(app.store.state.users) == 1


@pytest.mark.parametrize("password", ["", "short", "x" * 7])
async def test_a_weak_password_is_refused(app: Chat4All, password: str) -> None:
    with pytest.raises(BusinessRuleViolation) as raised:
        await app.handle(c.RegisterUser("ana", password))

    assert raised.value.field == "password"
    assert app.store.state.users == {}


@pytest.mark.parametrize("username", ["Ana", "a", "ana lima", "ana@x"])
async def test_a_bad_username_is_refused(app: Chat4All, username: str) -> None:
    with pytest.raises(BusinessRuleViolation) as raised:
        await app.handle(c.RegisterUser(username, PASSWORD))

    assert raised.value.field == "username"
    assert app.store.state.users == {}


async def test_a_username_with_a_trailing_line_break_does_not_become_a_look_alike_account(app: Chat4All) -> None:
    await app.register("alice")

    with pytest.raises((BusinessRuleViolation, Conflict)):
        await app.handle(c.RegisterUser("alice\n", PASSWORD))

    assert [u.username for u in app.store.state.users.values()] == ["alice"]


async def test_a_bad_display_name_is_refused_and_nothing_is_stored(app: Chat4All) -> None:
    with pytest.raises(BusinessRuleViolation) as raised:
        await app.handle(c.RegisterUser("ana", PASSWORD, "   "))

    assert raised.value.field == "display_name"
    assert app.store.state.users == {}


async def test_get_user_returns_the_public_profile(app: Chat4All) -> None:
    ana = await app.register("ana", display_name="Ana")

    view = await app.handle(c.GetUser(ana))

    assert (view.user_id, view.username, view.display_name) == (ana, "ana", "Ana")
    with pytest.raises(NotFound):
        await app.handle(c.GetUser(a_user_id()))


# --- password login ------------------------------------------------------------------


async def test_password_login_issues_a_token_pair_for_the_user(app: Chat4All) -> None:
    ana = await app.register("ana")

    pair = await app.handle(c.IssueTokenForPassword("ana", PASSWORD))

    assert pair.token_type == "bearer"
    assert pair.expires_in == 3600
    claims = jwt.decode(
        pair.access_token, "x" * 32, algorithms=["HS256"], audience="chat4all", options={"verify_exp": False}
    )
    assert claims["sub"] == str(ana)
    assert claims["iat"] == int(T0.timestamp())  # issued by the application's clock
    assert claims["exp"] == int(T0.timestamp()) + 3600
    assert pair.refresh_token
    assert [owner for owner, _, _ in app.store.state.refresh_tokens.values()] == [ana]
    assert pair.refresh_token not in app.store.state.refresh_tokens  # stored as a digest only


async def test_a_fresh_access_token_verifies_as_the_user(clock: FakeClock) -> None:
    clock.set(datetime.now(UTC))
    app = a_chat4all(clock=clock)
    ana = await app.register("ana")

    pair = await app.handle(c.IssueTokenForPassword("ana", PASSWORD))

    assert TOKENS.verify(pair.access_token) == ana


async def test_a_wrong_password_fails_without_issuing_anything(app: Chat4All) -> None:
    await app.register("ana")

    with pytest.raises(AuthenticationFailed):
        await app.handle(c.IssueTokenForPassword("ana", "not the password"))

    assert app.store.state.refresh_tokens == {}


async def test_an_unknown_user_fails_the_same_way_and_still_spends_a_hash() -> None:
    hasher = FakePasswordHasher()
    app = a_chat4all(hasher=hasher)

    with pytest.raises(AuthenticationFailed, match="wrong username or password"):
        await app.handle(c.IssueTokenForPassword("nobody", PASSWORD))

    # Argon2 work was done anyway, so the response time does not tell which usernames exist.
    assert hasher.hashed == 1
    assert app.store.state.refresh_tokens == {}


async def test_register_and_login_with_real_argon2() -> None:
    hasher = Argon2PasswordHasher(PasswordHasher.from_parameters(profiles.CHEAPEST))
    app = a_chat4all(hasher=hasher)
    ana = await app.register("ana")

    assert app.store.state.users[ana].password_hash.startswith("$argon2id$")
    assert isinstance(await app.handle(c.IssueTokenForPassword("ana", PASSWORD)), v.TokenPair)
    with pytest.raises(AuthenticationFailed):
        await app.handle(c.IssueTokenForPassword("ana", PASSWORD + "!"))


# --- client credentials ----------------------------------------------------------------


async def test_a_client_logs_in_and_acts_as_its_owner(app: Chat4All) -> None:
    ana = await app.register("ana")

    created = await app.handle(c.CreateApiClient(ana, "  crm sync "))
    pair = await app.handle(c.IssueTokenForClient(created.client_id, created.client_secret))

    assert created.name == "crm sync"
    assert created.created_at == T0
    stored = next(iter(app.store.state.clients.values()))
    assert stored.owner_id == ana
    assert created.client_secret not in stored.secret_hash  # only a digest is kept
    assert next(iter(app.store.state.refresh_tokens.values()))[0] == ana
    assert pair.refresh_token


@pytest.mark.parametrize("name", ["", "   ", "x" * 101])
async def test_a_client_name_has_one_to_a_hundred_characters(app: Chat4All, name: str) -> None:
    with pytest.raises(BusinessRuleViolation) as raised:
        await app.handle(c.CreateApiClient(a_user_id(), name))

    assert raised.value.field == "name"
    assert app.store.state.clients == {}


async def test_a_wrong_client_secret_fails(app: Chat4All) -> None:
    created = await app.handle(c.CreateApiClient(await app.register("ana"), "crm"))

    with pytest.raises(AuthenticationFailed):
        await app.handle(c.IssueTokenForClient(created.client_id, created.client_secret + "x"))

    assert app.store.state.refresh_tokens == {}


@pytest.mark.parametrize("client_id", ["not-a-uuid", "", "00000000-0000-0000-0000-000000000000"])
async def test_an_unknown_client_fails(app: Chat4All, client_id: str) -> None:
    with pytest.raises(AuthenticationFailed):
        await app.handle(c.IssueTokenForClient(client_id, "secret"))


# --- refresh -------------------------------------------------------------------------


async def test_a_refresh_token_works_once(app: Chat4All) -> None:
    ana = await app.register("ana")
    first = await app.handle(c.IssueTokenForPassword("ana", PASSWORD))

    second = await app.handle(c.RefreshToken(first.refresh_token))

    assert second.refresh_token != first.refresh_token
    assert second.access_token
    with pytest.raises(AuthenticationFailed):
        await app.handle(c.RefreshToken(first.refresh_token))
    # The new refresh token still works, for the same user.
    third = await app.handle(c.RefreshToken(second.refresh_token))
    owners = {owner for owner, _, _ in app.store.state.refresh_tokens.values()}
    assert owners == {ana}
    assert third.refresh_token not in {first.refresh_token, second.refresh_token}


async def test_an_expired_refresh_token_fails(clock: FakeClock) -> None:
    app = a_chat4all(clock=clock, settings=Settings(refresh_ttl=timedelta(days=1)))
    await app.register("ana")
    pair = await app.handle(c.IssueTokenForPassword("ana", PASSWORD))

    clock.advance(timedelta(days=1))

    with pytest.raises(AuthenticationFailed):
        await app.handle(c.RefreshToken(pair.refresh_token))


async def test_a_refresh_token_just_before_expiry_works(clock: FakeClock) -> None:
    app = a_chat4all(clock=clock, settings=Settings(refresh_ttl=timedelta(days=1)))
    await app.register("ana")
    pair = await app.handle(c.IssueTokenForPassword("ana", PASSWORD))

    clock.advance(timedelta(days=1) - timedelta(seconds=1))

    assert isinstance(await app.handle(c.RefreshToken(pair.refresh_token)), v.TokenPair)


async def test_an_unknown_refresh_token_fails(app: Chat4All) -> None:
    with pytest.raises(AuthenticationFailed):
        await app.handle(c.RefreshToken("made-up"))
