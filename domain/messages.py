"""Messages: content, per-conversation order and where each copy goes."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar

import attrs

from domain.channels import Channel
from domain.conversations import Conversation, Participant, ParticipantKind
from domain.deliveries import Delivery
from domain.errors import BusinessRuleViolation, check_json_value
from domain.ids import ConversationId, FileId, MessageId, UserId


class ContentType(StrEnum):
    """What a message carries."""

    TEXT = "text"
    FILE = "file"


@attrs.frozen
class TextContent:
    """A text message of 1 to MAX_LENGTH characters."""

    MAX_LENGTH: ClassVar[int] = 4096
    type: ClassVar[ContentType] = ContentType.TEXT

    text: str

    def __attrs_post_init__(self) -> None:
        if not 1 <= len(self.text) <= self.MAX_LENGTH or not self.text.strip():
            raise BusinessRuleViolation(
                f"text has 1-{self.MAX_LENGTH} characters and is not blank", field="payload.text"
            )
        check_json_value(self.text, field="payload.text")


@attrs.frozen
class FileInfo:
    """What a message says about the file it shares (copied from the completed upload when it is sent)."""

    filename: str
    size: int
    content_type: str


@attrs.frozen
class FileContent:
    """A message that shares a completed upload, with an optional caption.

    ``file`` is None only while a send is checked: an accepted file message always carries it.
    """

    MAX_CAPTION: ClassVar[int] = 1024
    type: ClassVar[ContentType] = ContentType.FILE

    file_id: FileId
    caption: str | None = None
    file: FileInfo | None = None

    def __attrs_post_init__(self) -> None:
        if self.caption is not None and len(self.caption) > self.MAX_CAPTION:
            raise BusinessRuleViolation(f"a caption has at most {self.MAX_CAPTION} characters", field="payload.caption")
        if self.caption is not None:
            check_json_value(self.caption, field="payload.caption")


Content = TextContent | FileContent


def plan_deliveries(
    *,
    message_id: MessageId,
    recipients: Sequence[Participant],
    channels: Collection[Channel] | None,
    identities: Mapping[UserId, Collection[Channel]],
    at: datetime,
) -> list[Delivery]:
    """One delivery per recipient and channel it can be reached on.

    A user is reachable on ``internal`` and on every platform where it has an identity; a
    contact only on its own channel. ``channels=None`` means every channel.

    Raises:
        BusinessRuleViolation: a recipient cannot be reached on any requested channel.
    """
    deliveries: list[Delivery] = []
    unreachable: list[str] = []
    for r in recipients:
        if r.kind is ParticipantKind.CONTACT:
            assert r.address is not None
            reachable: list[Channel] = [r.address.channel]
        else:
            assert r.user_id is not None
            linked = identities.get(r.user_id, ())
            reachable = [Channel.INTERNAL, *sorted(c for c in linked if c is not Channel.INTERNAL)]
        chosen = [c for c in reachable if channels is None or c in channels]
        if not chosen:
            unreachable.append(r.key)
        deliveries.extend(Delivery.accepted(message_id=message_id, recipient=r, channel=c, at=at) for c in chosen)
    if unreachable:
        raise BusinessRuleViolation("no requested channel reaches " + ", ".join(unreachable), field="channels")
    return deliveries


@attrs.define(kw_only=True, eq=False)
class Message:
    """A message accepted into a conversation at position ``seq``."""

    MAX_METADATA_KEYS: ClassVar[int] = 50

    id: MessageId
    conversation_id: ConversationId
    sender: Participant
    seq: int
    content: Content
    recipients: tuple[Participant, ...]
    channels: tuple[Channel, ...] | None  # None: every channel
    metadata: Mapping[str, Any]
    created_at: datetime
    fingerprint: str

    @staticmethod
    def resolve_recipients(
        conversation: Conversation, sender: Participant, to: Sequence[Participant] | None
    ) -> tuple[Participant, ...]:
        """The recipients: ``to`` if given (a subset of the other members), else every other member.

        Raises:
            BusinessRuleViolation: ``to`` names a non-member, the sender, or nobody.
        """
        others = conversation.others_than(sender)
        if to is None:
            return others
        chosen: list[Participant] = []
        for p in to:
            if p not in others:
                raise BusinessRuleViolation(f"{p.key} is not another member of this conversation", field="to")
            if p not in chosen:
                chosen.append(p)
        if not chosen:
            raise BusinessRuleViolation("'to' names at least one member", field="to")
        return tuple(chosen)

    @classmethod
    def accept(
        cls,
        *,
        id: MessageId,
        conversation: Conversation,
        sender: Participant,
        seq: int,
        content: Content,
        recipients: tuple[Participant, ...],
        channels: tuple[Channel, ...] | None,
        metadata: Mapping[str, Any],
        at: datetime,
        fingerprint: str,
    ) -> Message:
        """A message accepted at ``seq``.

        Raises:
            BusinessRuleViolation: the sender is not a member or the metadata is too large.
        """
        if not conversation.has_member(sender):
            raise BusinessRuleViolation("the sender is not a member of the conversation", field="from")
        if len(metadata) > cls.MAX_METADATA_KEYS:
            raise BusinessRuleViolation(f"metadata has at most {cls.MAX_METADATA_KEYS} keys", field="metadata")
        check_json_value(metadata, field="metadata")
        return cls(
            id=id,
            conversation_id=conversation.id,
            sender=sender,
            seq=seq,
            content=content,
            recipients=recipients,
            channels=channels,
            metadata=dict(metadata),
            created_at=at,
            fingerprint=fingerprint,
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Message) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)
