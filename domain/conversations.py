"""Conversations and their participants."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar

import attrs

from domain.channels import ChannelAddress
from domain.errors import BusinessRuleViolation, check_json_value
from domain.ids import ConversationId, UserId


class ParticipantKind(StrEnum):
    """Who a participant is: an internal user or an external contact."""

    USER = "user"
    CONTACT = "contact"


@attrs.frozen(order=True)
class Participant:
    """A member of a conversation: a User, or a Contact known only by a channel address."""

    kind: ParticipantKind
    user_id: UserId | None = None
    address: ChannelAddress | None = None

    def __attrs_post_init__(self) -> None:
        if self.kind is ParticipantKind.USER and (self.user_id is None or self.address is not None):
            raise ValueError("a user participant has a user_id and no address")
        if self.kind is ParticipantKind.CONTACT and (self.address is None or self.user_id is not None):
            raise ValueError("a contact participant has an address and no user_id")

    @classmethod
    def user(cls, user_id: UserId) -> Participant:
        """The participant that is the internal user ``user_id``."""
        return cls(kind=ParticipantKind.USER, user_id=user_id)

    @classmethod
    def contact(cls, address: ChannelAddress) -> Participant:
        """The participant that is the external contact at ``address``."""
        return cls(kind=ParticipantKind.CONTACT, address=address)

    @property
    def key(self) -> str:
        """A stable text form: ``user:<uuid>`` or ``<channel>:<external id>``."""
        return f"user:{self.user_id}" if self.user_id is not None else str(self.address)

    @classmethod
    def from_key(cls, key: str) -> Participant:
        """Inverse of ``key``."""
        from uuid import UUID

        prefix, _, rest = key.partition(":")
        if prefix == "user":
            return cls.user(UserId(UUID(rest)))
        return cls.contact(ChannelAddress.parse(key))


class ConversationType(StrEnum):
    """Private (exactly two members) or group (three or more)."""

    PRIVATE = "private"
    GROUP = "group"


@attrs.define(kw_only=True, eq=False)
class Conversation:
    """A private or group conversation; messages in it are ordered by ``last_seq``."""

    PRIVATE_SIZE: ClassVar[int] = 2
    GROUP_MIN: ClassVar[int] = 3
    DEFAULT_GROUP_MAX: ClassVar[int] = 100
    MAX_METADATA_KEYS: ClassVar[int] = 50

    id: ConversationId
    type: ConversationType
    members: tuple[Participant, ...]
    created_by: UserId
    created_at: datetime
    metadata: Mapping[str, Any] = attrs.field(factory=dict)
    last_seq: int = 0
    last_activity_at: datetime | None = None

    @classmethod
    def start(
        cls,
        *,
        id: ConversationId,
        type: ConversationType,
        creator: UserId,
        others: Sequence[Participant],
        metadata: Mapping[str, Any],
        at: datetime,
        group_max: int = DEFAULT_GROUP_MAX,
    ) -> Conversation:
        """Start a conversation; the creator is always a member.

        Raises:
            BusinessRuleViolation: the member count does not fit the type.
        """
        me = Participant.user(creator)
        members: list[Participant] = [me]
        for p in others:
            if p not in members:
                members.append(p)
        n = len(members)
        if type is ConversationType.PRIVATE and n != cls.PRIVATE_SIZE:
            raise BusinessRuleViolation(
                f"a private conversation has exactly 2 members (you and one other); got {n}", field="members"
            )
        if type is ConversationType.GROUP and not cls.GROUP_MIN <= n <= group_max:
            raise BusinessRuleViolation(
                f"a group has {cls.GROUP_MIN} to {group_max} members including you; got {n}", field="members"
            )
        if len(metadata) > cls.MAX_METADATA_KEYS:
            raise BusinessRuleViolation(f"metadata has at most {cls.MAX_METADATA_KEYS} keys", field="metadata")
        check_json_value(metadata, field="metadata")
        return cls(
            id=id,
            type=type,
            members=tuple(members),
            created_by=creator,
            created_at=at,
            metadata=dict(metadata),
            last_activity_at=at,
        )

    def has_member(self, participant: Participant) -> bool:
        """True when ``participant`` belongs to this conversation."""
        return participant in self.members

    def others_than(self, participant: Participant) -> tuple[Participant, ...]:
        """Every member except ``participant``, in membership order."""
        return tuple(m for m in self.members if m != participant)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Conversation) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)
