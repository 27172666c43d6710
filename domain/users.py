"""Users: internal accounts, their linked platform identities and API clients."""

from __future__ import annotations

import re
from datetime import datetime
from typing import ClassVar

import attrs

from domain.channels import Channel, ChannelAddress
from domain.errors import BusinessRuleViolation, check_json_value
from domain.ids import ClientId, UserId

_USERNAME = re.compile(r"^[a-z0-9_.-]{3,32}$")


def validate_username(username: str) -> str:
    """Return ``username`` if it is 3-32 of ``a-z 0-9 _ . -``.

    Raises:
        BusinessRuleViolation: it is not.
    """
    if not _USERNAME.fullmatch(username):
        raise BusinessRuleViolation("a username is 3-32 characters of a-z, 0-9, '_', '.' or '-'", field="username")
    return username


def is_username(text: str) -> bool:
    """True when ``text`` has the shape of a username."""
    return bool(_USERNAME.fullmatch(text))


def validate_password(password: str) -> str:
    """Return ``password`` if it is long enough to be accepted.

    Raises:
        BusinessRuleViolation: it is shorter than ``MIN_PASSWORD`` or absurdly long.
    """
    if len(password) < User.MIN_PASSWORD:
        raise BusinessRuleViolation(f"a password has at least {User.MIN_PASSWORD} characters", field="password")
    if len(password) > User.MAX_PASSWORD:
        raise BusinessRuleViolation(f"a password has at most {User.MAX_PASSWORD} characters", field="password")
    return password


@attrs.frozen
class ChannelIdentity:
    """A user's account on one platform."""

    user_id: UserId
    address: ChannelAddress
    linked_at: datetime

    @property
    def channel(self) -> Channel:
        """The platform this identity lives on."""
        return self.address.channel


@attrs.define(kw_only=True, eq=False)
class User:
    """An internal Chat4All account."""

    MIN_PASSWORD: ClassVar[int] = 8
    MAX_PASSWORD: ClassVar[int] = 1024
    MAX_DISPLAY_NAME: ClassVar[int] = 100

    id: UserId
    username: str
    password_hash: str
    display_name: str
    created_at: datetime

    @classmethod
    def register(cls, *, id: UserId, username: str, password_hash: str, display_name: str | None, at: datetime) -> User:
        """Create a new account; the password arrives already hashed.

        Raises:
            BusinessRuleViolation: the username or display name is not acceptable.
        """
        validate_username(username)
        name = (display_name if display_name is not None else username).strip()
        check_json_value(name, field="display_name")
        if not name or len(name) > cls.MAX_DISPLAY_NAME:
            raise BusinessRuleViolation(f"a display name has 1-{cls.MAX_DISPLAY_NAME} characters", field="display_name")
        return cls(id=id, username=username, password_hash=password_hash, display_name=name, created_at=at)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, User) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)


@attrs.frozen
class ApiClient:
    """Credentials an application uses to act as the user who owns them."""

    id: ClientId
    owner_id: UserId
    name: str
    secret_hash: str
    created_at: datetime
