"""Channels and addresses: what each platform accepts, how ids are normalised, parse/str round trip."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.channels import PLATFORMS, Channel, ChannelAddress, parse_channel
from domain.errors import BusinessRuleViolation


@pytest.mark.parametrize(
    ("channel", "raw", "normalised"),
    [
        (Channel.WHATSAPP, "+5511999998888", "+5511999998888"),
        (Channel.WHATSAPP, "  +14155550123\n", "+14155550123"),
        (Channel.WHATSAPP, "+1234567", "+1234567"),  # 7 digits: the shortest E.164 accepted
        (Channel.WHATSAPP, "+123456789012345", "+123456789012345"),  # 15 digits: the longest
        (Channel.INSTAGRAM, "@Ana.Silva", "ana.silva"),
        (Channel.INSTAGRAM, "under_score_99", "under_score_99"),
        (Channel.INSTAGRAM, "a", "a"),
        (Channel.INSTAGRAM, "x" * 30, "x" * 30),
        (Channel.MESSENGER, "1234567890123", "1234567890123"),
        (Channel.MESSENGER, " 42 ", "42"),
        (Channel.TELEGRAM, "123456789", "123456789"),
        (Channel.TELEGRAM, "-1001234567890", "-1001234567890"),
    ],
)
def test_a_valid_id_is_accepted_and_normalised(channel: Channel, raw: str, normalised: str) -> None:
    sut = ChannelAddress.of(channel, raw)

    assert sut.channel is channel
    assert sut.external_id == normalised


@pytest.mark.parametrize(
    ("channel", "raw"),
    [
        (Channel.WHATSAPP, "5511999998888"),  # no +
        (Channel.WHATSAPP, "+0511999998888"),  # country code cannot start with 0
        (Channel.WHATSAPP, "+123456"),  # too short
        (Channel.WHATSAPP, "+1234567890123456"),  # too long
        (Channel.WHATSAPP, "+55 11 99999 8888"),  # spaces inside
        (Channel.WHATSAPP, ""),
        (Channel.INSTAGRAM, ".ana"),
        (Channel.INSTAGRAM, "ana."),
        (Channel.INSTAGRAM, "x" * 31),
        (Channel.INSTAGRAM, "ana silva"),
        (Channel.INSTAGRAM, "ana!"),
        (Channel.INSTAGRAM, "@"),
        (Channel.MESSENGER, "12a"),
        (Channel.MESSENGER, "-12"),
        (Channel.MESSENGER, "1" * 21),
        (Channel.MESSENGER, ""),
        (Channel.TELEGRAM, "abc"),
        (Channel.TELEGRAM, "--1"),
        (Channel.TELEGRAM, "1.5"),
        (Channel.TELEGRAM, "-"),
    ],
)
def test_an_id_that_does_not_fit_the_platform_is_refused(channel: Channel, raw: str) -> None:
    with pytest.raises(BusinessRuleViolation) as raised:
        ChannelAddress.of(channel, raw)

    assert raised.value.field == "external_id"


def test_internal_is_not_an_addressable_channel() -> None:
    with pytest.raises(BusinessRuleViolation) as raised:
        ChannelAddress.of("internal", "anything")

    assert raised.value.field == "channel"


def test_an_unknown_channel_is_refused_and_the_error_lists_the_known_ones() -> None:
    with pytest.raises(BusinessRuleViolation) as raised:
        ChannelAddress.of("sms", "+5511999998888")

    assert raised.value.field == "channel"
    assert all(ch.value in raised.value.message for ch in Channel)


def test_parse_channel_uses_the_given_field_name() -> None:
    with pytest.raises(BusinessRuleViolation) as raised:
        parse_channel("fax", field="channels")

    assert raised.value.field == "channels"
    assert parse_channel("telegram") is Channel.TELEGRAM


def test_only_internal_is_not_a_platform() -> None:
    assert not Channel.INTERNAL.is_platform
    assert {Channel.WHATSAPP, Channel.INSTAGRAM, Channel.MESSENGER, Channel.TELEGRAM} == PLATFORMS


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("whatsapp:+5511999998888", ChannelAddress(Channel.WHATSAPP, "+5511999998888")),
        ("instagram:@Ana_Silva", ChannelAddress(Channel.INSTAGRAM, "ana_silva")),
        ("telegram:-100200", ChannelAddress(Channel.TELEGRAM, "-100200")),
        ("messenger:007", ChannelAddress(Channel.MESSENGER, "007")),
    ],
)
def test_parse_reads_channel_colon_id(text: str, expected: ChannelAddress) -> None:
    assert ChannelAddress.parse(text) == expected


@pytest.mark.parametrize("text", ["whatsapp", "+5511999998888", "", "sms:123", "internal:ana", "telegram:"])
def test_parse_refuses_text_that_is_not_an_address(text: str) -> None:
    with pytest.raises(BusinessRuleViolation):
        ChannelAddress.parse(text)


def test_parse_without_a_separator_names_the_address_field() -> None:
    with pytest.raises(BusinessRuleViolation) as raised:
        ChannelAddress.parse("whatsapp+5511999998888")

    assert raised.value.field == "address"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("whatsapp:+5511999998888", True),
        ("telegram:12", True),
        ("instagram:ana", True),
        ("messenger:1", True),
        ("whatsapp:not-valid-but-shaped-like-one", True),
        ("internal:ana", False),
        ("ana", False),
        ("telegram", False),
        ("sms:123", False),
        ("", False),
    ],
)
def test_looks_like_address_only_checks_for_a_platform_prefix(text: str, expected: bool) -> None:
    assert ChannelAddress.looks_like_address(text) is expected


_valid_ids = {
    Channel.WHATSAPP: st.from_regex(r"\A\+[1-9][0-9]{6,14}\Z"),
    Channel.INSTAGRAM: st.from_regex(r"\A@?[A-Za-z0-9_]([A-Za-z0-9._]{0,28}[A-Za-z0-9_])?\Z"),
    Channel.MESSENGER: st.from_regex(r"\A[0-9]{1,20}\Z"),
    Channel.TELEGRAM: st.from_regex(r"\A-?[0-9]{1,20}\Z"),
}
addresses = st.sampled_from(sorted(PLATFORMS)).flatmap(
    lambda ch: st.builds(ChannelAddress.of, st.just(ch), _valid_ids[ch])
)


@given(addresses)
def test_str_and_parse_round_trip(address: ChannelAddress) -> None:
    text = str(address)

    assert text.startswith(f"{address.channel.value}:")
    assert ChannelAddress.parse(text) == address
    assert ChannelAddress.looks_like_address(text)


@given(addresses, st.sampled_from(["", " ", "\t", "\n"]), st.sampled_from(["", " ", "\n"]))
def test_normalisation_is_idempotent_and_ignores_surrounding_blanks(
    address: ChannelAddress, before: str, after: str
) -> None:
    again = ChannelAddress.of(address.channel, before + address.external_id + after)

    assert again == address


@given(st.from_regex(r"\A@?[A-Za-z0-9_]{1,30}\Z"))
def test_instagram_handles_are_case_insensitive_and_lose_the_at_sign(handle: str) -> None:
    sut = ChannelAddress.of(Channel.INSTAGRAM, handle)

    assert sut.external_id == handle.removeprefix("@").lower()
    assert sut == ChannelAddress.of(Channel.INSTAGRAM, handle.upper())
