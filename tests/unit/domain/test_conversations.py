"""Conversation rules: who is a member, how many members each type has."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.conversations import Conversation, ConversationType, Participant, ParticipantKind
from domain.errors import BusinessRuleViolation
from domain.ids import ConversationId, UserId
from tests.builders import T0, a_conversation, a_user_id, an_address


def users(n: int) -> list[Participant]:
    return [Participant.user(a_user_id()) for _ in range(n)]


# --- participants --------------------------------------------------------------------


def test_a_user_participant_has_a_user_id_and_no_address() -> None:
    uid = a_user_id()
    sut = Participant.user(uid)

    assert sut.kind is ParticipantKind.USER
    assert sut.key == f"user:{uid}"
    with pytest.raises(ValueError, match="user participant"):
        Participant(kind=ParticipantKind.USER, user_id=uid, address=an_address())
    with pytest.raises(ValueError, match="user participant"):
        Participant(kind=ParticipantKind.USER)


def test_a_contact_participant_has_an_address_and_no_user_id() -> None:
    sut = Participant.contact(an_address("telegram:42"))

    assert sut.kind is ParticipantKind.CONTACT
    assert sut.key == "telegram:42"
    with pytest.raises(ValueError, match="contact participant"):
        Participant(kind=ParticipantKind.CONTACT, user_id=a_user_id(), address=an_address())
    with pytest.raises(ValueError, match="contact participant"):
        Participant(kind=ParticipantKind.CONTACT)


@pytest.mark.parametrize(
    "participant",
    [
        Participant.user(UserId(uuid.UUID(int=7))),
        Participant.contact(an_address("whatsapp:+5511999998888")),
        Participant.contact(an_address("instagram:ana.silva")),
        Participant.contact(an_address("telegram:-100200")),
    ],
)
def test_a_participant_key_round_trips(participant: Participant) -> None:
    assert Participant.from_key(participant.key) == participant


# --- starting a conversation ---------------------------------------------------------


def test_a_private_conversation_is_the_creator_and_one_other() -> None:
    creator, other = a_user_id(), Participant.user(a_user_id())

    sut = a_conversation(creator=creator, others=[other], type=ConversationType.PRIVATE)

    assert sut.members == (Participant.user(creator), other)
    assert sut.created_by == creator
    assert sut.last_seq == 0
    assert sut.last_activity_at == sut.created_at == T0


@pytest.mark.parametrize("others", [0, 2, 3])
def test_a_private_conversation_has_exactly_two_members(others: int) -> None:
    with pytest.raises(BusinessRuleViolation, match="exactly 2") as raised:
        a_conversation(others=users(others), type=ConversationType.PRIVATE)

    assert raised.value.field == "members"


def test_a_private_conversation_with_yourself_is_refused() -> None:
    me = a_user_id()

    with pytest.raises(BusinessRuleViolation, match="got 1"):
        a_conversation(creator=me, others=[Participant.user(me)], type=ConversationType.PRIVATE)


def test_naming_yourself_among_the_members_does_not_count_twice() -> None:
    me, other = a_user_id(), Participant.user(a_user_id())

    sut = a_conversation(creator=me, others=[Participant.user(me), other], type=ConversationType.PRIVATE)

    assert sut.members == (Participant.user(me), other)


def test_a_private_conversation_may_be_with_a_contact() -> None:
    contact = Participant.contact(an_address())

    sut = a_conversation(others=[contact], type=ConversationType.PRIVATE)

    assert sut.members[1] == contact


@pytest.mark.parametrize("others", [0, 1])
def test_a_group_has_at_least_three_members(others: int) -> None:
    with pytest.raises(BusinessRuleViolation, match="3 to") as raised:
        a_conversation(others=users(others), type=ConversationType.GROUP)

    assert raised.value.field == "members"


def test_a_group_may_have_exactly_three_members() -> None:
    sut = a_conversation(others=users(2), type=ConversationType.GROUP)

    assert len(sut.members) == 3


def test_a_group_may_have_group_max_members_and_no_more() -> None:
    assert len(a_conversation(others=users(4), type=ConversationType.GROUP, group_max=5).members) == 5

    with pytest.raises(BusinessRuleViolation, match="3 to 5 members"):
        a_conversation(others=users(5), type=ConversationType.GROUP, group_max=5)


def test_the_default_group_limit_is_one_hundred() -> None:
    assert len(a_conversation(others=users(99), type=ConversationType.GROUP).members) == 100

    with pytest.raises(BusinessRuleViolation):
        a_conversation(others=users(100), type=ConversationType.GROUP)


def test_duplicate_members_are_collapsed_before_counting() -> None:
    bruno, carla = users(2)

    # Two distinct others plus the creator: a valid group even though five names were given.
    sut = a_conversation(others=[bruno, carla, bruno, carla, bruno], type=ConversationType.GROUP)
    assert sut.members[1:] == (bruno, carla)

    # One distinct other named twice is not a group.
    with pytest.raises(BusinessRuleViolation, match="got 2"):
        a_conversation(others=[bruno, bruno], type=ConversationType.GROUP)


def test_metadata_is_limited_in_size_and_copied() -> None:
    metadata = {f"k{i}": i for i in range(Conversation.MAX_METADATA_KEYS)}
    sut = a_conversation(metadata=metadata)
    metadata["extra"] = 1

    assert "extra" not in sut.metadata
    with pytest.raises(BusinessRuleViolation) as raised:
        a_conversation(metadata={f"k{i}": i for i in range(Conversation.MAX_METADATA_KEYS + 1)})
    assert raised.value.field == "metadata"


pool = [Participant.user(UserId(uuid.UUID(int=i))) for i in range(1, 6)] + [
    Participant.contact(an_address("telegram:1")),
    Participant.contact(an_address("whatsapp:+5511999998888")),
]
CREATOR = UserId(uuid.UUID(int=1))


@given(st.lists(st.sampled_from(pool), max_size=12), st.sampled_from(ConversationType), st.integers(3, 8))
def test_membership_is_the_creator_then_each_other_once_in_order(
    others: list[Participant], kind: ConversationType, group_max: int
) -> None:
    expected = [Participant.user(CREATOR)]
    for p in others:
        if p not in expected:
            expected.append(p)
    n = len(expected)
    fits = n == 2 if kind is ConversationType.PRIVATE else 3 <= n <= group_max

    try:
        sut = Conversation.start(
            id=ConversationId(uuid.uuid4()),
            type=kind,
            creator=CREATOR,
            others=others,
            metadata={},
            at=T0,
            group_max=group_max,
        )
    except BusinessRuleViolation:
        assert not fits
    else:
        assert fits
        assert list(sut.members) == expected
        assert sut.has_member(Participant.user(CREATOR))
        assert all(sut.has_member(p) for p in others)


def test_others_than_keeps_membership_order() -> None:
    bruno, carla, dora = users(3)
    sut = a_conversation(others=[bruno, carla, dora])

    assert sut.others_than(carla) == (sut.members[0], bruno, dora)
    assert not sut.has_member(Participant.user(a_user_id()))


def test_conversations_are_equal_by_id() -> None:
    one = a_conversation()
    other = a_conversation(id=one.id)

    assert one == other
    assert hash(one) == hash(other)
    assert one != a_conversation()
