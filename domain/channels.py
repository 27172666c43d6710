"""Channels and the addresses of people on them."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import ClassVar, Final

import attrs

from domain.errors import BusinessRuleViolation


class Channel(StrEnum):
    """A way to reach a person: Chat4All's own clients or one of the platforms."""

    INTERNAL = "internal"
    WHATSAPP = "whatsapp"
    INSTAGRAM = "instagram"
    MESSENGER = "messenger"
    TELEGRAM = "telegram"

    @property
    def is_platform(self) -> bool:
        """True for the external platforms, False for Chat4All's own clients."""
        return self is not Channel.INTERNAL


PLATFORMS: Final = frozenset(c for c in Channel if c.is_platform)

_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
_INSTAGRAM = re.compile(r"^[a-z0-9._]{1,30}$")
_DIGITS = re.compile(r"^[0-9]{1,20}$")
_TELEGRAM = re.compile(r"^-?[0-9]{1,20}$")


def _normalise(channel: Channel, external_id: str) -> str:
    raw = external_id.strip()
    if channel is Channel.WHATSAPP:
        if not _E164.fullmatch(raw):
            raise BusinessRuleViolation(
                "a WhatsApp id is an E.164 phone number such as +5511999998888", field="external_id"
            )
        return raw
    if channel is Channel.INSTAGRAM:
        handle = raw.removeprefix("@").lower()
        if not _INSTAGRAM.fullmatch(handle) or handle.startswith(".") or handle.endswith("."):
            raise BusinessRuleViolation(
                "an Instagram id is a handle of 1-30 letters, digits, '.' or '_'", field="external_id"
            )
        return handle
    if channel is Channel.MESSENGER:
        if not _DIGITS.fullmatch(raw):
            raise BusinessRuleViolation("a Messenger id is a page-scoped id of digits", field="external_id")
        return raw
    if channel is Channel.TELEGRAM:
        if not _TELEGRAM.fullmatch(raw):
            raise BusinessRuleViolation("a Telegram id is a numeric chat id", field="external_id")
        return raw
    raise BusinessRuleViolation("internal is not an addressable platform channel", field="channel")


def parse_channel(value: str, *, field: str = "channel") -> Channel:
    """Return the Channel named ``value`` or raise BusinessRuleViolation."""
    try:
        return Channel(value)
    except ValueError:
        names = ", ".join(c.value for c in Channel)
        raise BusinessRuleViolation(f"unknown channel {value!r}; expected one of {names}", field=field) from None


@attrs.frozen(order=True)
class ChannelAddress:
    """Where a person is on a platform: ``<channel>:<external_id>``, normalised."""

    SEPARATOR: ClassVar[str] = ":"

    channel: Channel
    external_id: str

    @classmethod
    def of(cls, channel: str | Channel, external_id: str) -> ChannelAddress:
        """Build a validated, normalised address.

        Raises:
            BusinessRuleViolation: the channel is unknown or the id does not fit it.
        """
        ch = channel if isinstance(channel, Channel) else parse_channel(channel)
        return cls(channel=ch, external_id=_normalise(ch, external_id))

    @classmethod
    def parse(cls, text: str) -> ChannelAddress:
        """Parse ``<channel>:<external_id>``.

        Raises:
            BusinessRuleViolation: the text is not a valid address.
        """
        channel, sep, external_id = text.partition(cls.SEPARATOR)
        if not sep:
            raise BusinessRuleViolation(f"{text!r} is not an address of the form channel:id", field="address")
        return cls.of(channel, external_id)

    @staticmethod
    def looks_like_address(text: str) -> bool:
        """True when ``text`` starts with a platform channel name and a colon."""
        channel, sep, _ = text.partition(":")
        return bool(sep) and channel in {c.value for c in PLATFORMS}

    def __str__(self) -> str:
        return f"{self.channel.value}{self.SEPARATOR}{self.external_id}"
