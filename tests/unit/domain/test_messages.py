"""Messages: content bounds, who receives a message, and on which channels each copy goes."""

from __future__ import annotations

import uuid
from collections.abc import Collection

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.channels import PLATFORMS, Channel
from domain.conversations import Participant
from domain.deliveries import DeliveryStatus
from domain.errors import BusinessRuleViolation
from domain.ids import FileId, UserId
from domain.messages import ContentType, FileContent, Message, TextContent, plan_deliveries
from tests.builders import T0, a_conversation, a_message, a_message_id, a_user_id, an_address

# --- content -------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["a", "hello, world", " padded ", "x" * TextContent.MAX_LENGTH, "olá 👋"])
def test_text_of_one_to_max_characters_is_accepted(text: str) -> None:
    sut = TextContent(text)

    assert sut.text == text
    assert sut.type is ContentType.TEXT


@pytest.mark.parametrize("text", ["", " ", "\n\t ", "x" * (TextContent.MAX_LENGTH + 1)])
def test_empty_blank_or_too_long_text_is_refused(text: str) -> None:
    with pytest.raises(BusinessRuleViolation) as raised:
        TextContent(text)

    assert raised.value.field == "payload.text"


def test_a_file_caption_is_optional_and_bounded() -> None:
    file_id = FileId(uuid.uuid4())

    assert FileContent(file_id).caption is None
    assert FileContent(file_id, "c" * FileContent.MAX_CAPTION).type is ContentType.FILE
    with pytest.raises(BusinessRuleViolation) as raised:
        FileContent(file_id, "c" * (FileContent.MAX_CAPTION + 1))
    assert raised.value.field == "payload.caption"


# --- recipients ----------------------------------------------------------------------


@pytest.fixture
def group() -> tuple[Participant, ...]:
    return (
        Participant.user(a_user_id()),
        Participant.user(a_user_id()),
        Participant.contact(an_address("telegram:42")),
    )


def test_without_to_every_other_member_receives(group: tuple[Participant, ...]) -> None:
    conv = a_conversation(others=group)
    sender = conv.members[0]

    assert Message.resolve_recipients(conv, sender, None) == group


def test_to_picks_a_subset_of_the_other_members(group: tuple[Participant, ...]) -> None:
    conv = a_conversation(others=group)

    recipients = Message.resolve_recipients(conv, group[0], [group[2], conv.members[0], group[2]])

    assert recipients == (group[2], conv.members[0])  # order kept, duplicates collapsed


def test_to_cannot_name_a_non_member(group: tuple[Participant, ...]) -> None:
    conv = a_conversation(others=group)
    stranger = Participant.user(a_user_id())

    with pytest.raises(BusinessRuleViolation, match=stranger.key) as raised:
        Message.resolve_recipients(conv, conv.members[0], [group[0], stranger])

    assert raised.value.field == "to"


def test_to_cannot_name_the_sender(group: tuple[Participant, ...]) -> None:
    conv = a_conversation(others=group)

    with pytest.raises(BusinessRuleViolation, match="not another member") as raised:
        Message.resolve_recipients(conv, conv.members[0], [conv.members[0]])

    assert raised.value.field == "to"


def test_to_cannot_be_empty(group: tuple[Participant, ...]) -> None:
    conv = a_conversation(others=group)

    with pytest.raises(BusinessRuleViolation, match="at least one") as raised:
        Message.resolve_recipients(conv, conv.members[0], [])

    assert raised.value.field == "to"


# --- deliveries ----------------------------------------------------------------------


def plan(
    recipients: list[Participant],
    channels: Collection[Channel] | None = None,
    identities: dict[UserId, Collection[Channel]] | None = None,
) -> list[tuple[str, Channel]]:
    deliveries = plan_deliveries(
        message_id=a_message_id(), recipients=recipients, channels=channels, identities=identities or {}, at=T0
    )
    assert all(dl.status is DeliveryStatus.SENT and dl.updated_at == T0 for dl in deliveries)
    return [(dl.recipient.key, dl.channel) for dl in deliveries]


def test_a_user_without_identities_is_reached_on_internal_only() -> None:
    bruno = Participant.user(a_user_id())

    assert plan([bruno]) == [(bruno.key, Channel.INTERNAL)]


def test_a_user_is_reached_on_internal_and_every_linked_platform() -> None:
    bruno = Participant.user(a_user_id())
    assert bruno.user_id is not None

    planned = plan([bruno], identities={bruno.user_id: {Channel.WHATSAPP, Channel.TELEGRAM}})

    assert planned == [(bruno.key, Channel.INTERNAL), (bruno.key, Channel.TELEGRAM), (bruno.key, Channel.WHATSAPP)]


def test_an_internal_entry_among_identities_is_not_doubled() -> None:
    bruno = Participant.user(a_user_id())
    assert bruno.user_id is not None

    planned = plan([bruno], identities={bruno.user_id: {Channel.INTERNAL, Channel.MESSENGER}})

    assert planned == [(bruno.key, Channel.INTERNAL), (bruno.key, Channel.MESSENGER)]


def test_requested_channels_filter_where_a_user_is_reached() -> None:
    bruno = Participant.user(a_user_id())
    assert bruno.user_id is not None
    identities: dict[UserId, Collection[Channel]] = {bruno.user_id: {Channel.WHATSAPP, Channel.TELEGRAM}}

    assert plan([bruno], {Channel.WHATSAPP}, identities) == [(bruno.key, Channel.WHATSAPP)]
    assert plan([bruno], {Channel.INTERNAL, Channel.TELEGRAM}, identities) == [
        (bruno.key, Channel.INTERNAL),
        (bruno.key, Channel.TELEGRAM),
    ]


def test_a_contact_is_reached_only_on_its_own_channel() -> None:
    contact = Participant.contact(an_address("whatsapp:+5511999998888"))

    assert plan([contact]) == [(contact.key, Channel.WHATSAPP)]
    assert plan([contact], {Channel.WHATSAPP, Channel.TELEGRAM}) == [(contact.key, Channel.WHATSAPP)]


def test_an_unreachable_recipient_is_refused_by_name() -> None:
    bruno = Participant.user(a_user_id())
    contact = Participant.contact(an_address("telegram:42"))
    reachable = Participant.contact(an_address("whatsapp:+5511999998888"))

    with pytest.raises(BusinessRuleViolation) as raised:
        plan([bruno, reachable, contact], {Channel.WHATSAPP})

    assert raised.value.field == "channels"
    assert bruno.key in raised.value.message
    assert contact.key in raised.value.message
    assert reachable.key not in raised.value.message


def test_a_contact_cannot_be_reached_on_internal() -> None:
    contact = Participant.contact(an_address("instagram:ana"))

    with pytest.raises(BusinessRuleViolation, match="instagram:ana"):
        plan([contact], {Channel.INTERNAL})


@given(
    linked=st.frozensets(st.sampled_from(sorted(PLATFORMS))),
    requested=st.none() | st.frozensets(st.sampled_from(list(Channel)), min_size=1),
)
def test_a_user_gets_one_delivery_per_reachable_requested_channel(
    linked: frozenset[Channel], requested: frozenset[Channel] | None
) -> None:
    bruno = Participant.user(UserId(uuid.UUID(int=2)))
    assert bruno.user_id is not None
    reachable = {Channel.INTERNAL} | linked
    expected = reachable if requested is None else reachable & requested

    try:
        planned = plan([bruno], requested, {bruno.user_id: linked})
    except BusinessRuleViolation:
        assert not expected
    else:
        channels = [ch for _, ch in planned]
        assert len(channels) == len(set(channels))
        assert set(channels) == expected
        assert channels[0] is Channel.INTERNAL or Channel.INTERNAL not in expected


# --- accepting -----------------------------------------------------------------------


def test_accept_records_the_message_at_its_seq() -> None:
    conv = a_conversation()

    sut = a_message(conv, seq=7, metadata={"k": "v"})

    assert sut.seq == 7
    assert sut.conversation_id == conv.id
    assert sut.sender == conv.members[0]
    assert sut.recipients == (conv.members[1],)
    assert sut.metadata == {"k": "v"}
    assert sut.created_at == T0


def test_a_non_member_cannot_send() -> None:
    with pytest.raises(BusinessRuleViolation) as raised:
        a_message(a_conversation(), sender=Participant.user(a_user_id()))

    assert raised.value.field == "from"


def test_message_metadata_is_limited() -> None:
    with pytest.raises(BusinessRuleViolation) as raised:
        a_message(a_conversation(), metadata={f"k{i}": i for i in range(Message.MAX_METADATA_KEYS + 1)})

    assert raised.value.field == "metadata"


def test_messages_are_equal_by_id() -> None:
    conv = a_conversation()
    one = a_message(conv)

    assert one == a_message(conv, id=one.id, seq=2)
    assert hash(one) == hash(a_message(conv, id=one.id))
    assert one != a_message(conv)
