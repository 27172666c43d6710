"""Usernames, passwords, accounts and linked identities."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.channels import Channel
from domain.errors import BusinessRuleViolation
from domain.users import ChannelIdentity, User, validate_password, validate_username
from tests.builders import T0, a_user_id, an_address


@pytest.mark.parametrize("username", ["ana", "bruno_99", "c.lima", "d-e-f", "x" * 32, "007"])
def test_a_valid_username_is_returned_unchanged(username: str) -> None:
    assert validate_username(username) == username


@pytest.mark.parametrize(
    "username",
    [
        "ab",  # too short
        "x" * 33,  # too long
        "Ana",  # upper case
        "ana silva",
        "ana@example",
        "anã",
        "",
        " ana",
        "ana ",
    ],
)
def test_an_invalid_username_is_refused(username: str) -> None:
    with pytest.raises(BusinessRuleViolation) as raised:
        validate_username(username)

    assert raised.value.field == "username"


def test_a_username_with_a_trailing_line_break_is_refused() -> None:
    # ``$`` in a Python regex also matches just before a final "\n": unless the whole string is matched,
    # "alice\n" is accepted and becomes a second account that looks exactly like "alice".
    with pytest.raises(BusinessRuleViolation):
        validate_username("alice\n")


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_.-", min_size=3, max_size=32))
def test_every_username_of_the_allowed_alphabet_and_length_is_valid(username: str) -> None:
    assert validate_username(username) == username


@pytest.mark.parametrize(
    ("length", "ok"),
    [(0, False), (User.MIN_PASSWORD - 1, False), (User.MIN_PASSWORD, True), (User.MAX_PASSWORD, True)],
)
def test_password_length_bounds(length: int, ok: bool) -> None:
    password = "p" * length
    if ok:
        assert validate_password(password) == password
    else:
        with pytest.raises(BusinessRuleViolation) as raised:
            validate_password(password)
        assert raised.value.field == "password"


def test_an_absurdly_long_password_is_refused() -> None:
    with pytest.raises(BusinessRuleViolation, match="at most"):
        validate_password("p" * (User.MAX_PASSWORD + 1))


def test_register_defaults_the_display_name_to_the_username() -> None:
    sut = User.register(id=a_user_id(), username="ana", password_hash="h", display_name=None, at=T0)

    assert sut.display_name == "ana"
    assert sut.created_at == T0


def test_register_strips_the_display_name() -> None:
    sut = User.register(id=a_user_id(), username="ana", password_hash="h", display_name="  Ana Lima  ", at=T0)

    assert sut.display_name == "Ana Lima"


@pytest.mark.parametrize("display_name", ["", "   ", "x" * (User.MAX_DISPLAY_NAME + 1)])
def test_register_refuses_a_blank_or_long_display_name(display_name: str) -> None:
    with pytest.raises(BusinessRuleViolation) as raised:
        User.register(id=a_user_id(), username="ana", password_hash="h", display_name=display_name, at=T0)

    assert raised.value.field == "display_name"


def test_register_refuses_an_invalid_username() -> None:
    with pytest.raises(BusinessRuleViolation) as raised:
        User.register(id=a_user_id(), username="A", password_hash="h", display_name=None, at=T0)

    assert raised.value.field == "username"


def test_users_are_equal_by_id() -> None:
    uid = a_user_id()
    one = User.register(id=uid, username="ana", password_hash="h1", display_name=None, at=T0)
    same = User.register(id=uid, username="other", password_hash="h2", display_name="X", at=T0)
    different = User.register(id=a_user_id(), username="ana", password_hash="h1", display_name=None, at=T0)

    assert one == same
    assert hash(one) == hash(same)
    assert one != different


def test_an_identity_lives_on_its_address_channel() -> None:
    sut = ChannelIdentity(user_id=a_user_id(), address=an_address("telegram:42"), linked_at=T0)

    assert sut.channel is Channel.TELEGRAM
