"""Accepting messages into conversations: what every way in (the API, the platforms' webhooks) shares.

A message's position (seq), its deliveries and its ``message.created`` event are written in the
caller's unit of work, so they commit together or not at all.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import attrs

from application import topics
from application.events import payload_of
from application.pipeline import jobs_for
from application.ports import UnitOfWork
from domain.channels import Channel
from domain.conversations import Conversation, Participant
from domain.deliveries import Delivery
from domain.ids import ConversationId, MessageId
from domain.messages import Content, Message


@attrs.frozen(kw_only=True)
class Acceptance:
    """A message that passed every check, with its deliveries planned: what ``accept_messages`` stores."""

    message_id: MessageId
    conversation: Conversation
    sender: Participant
    content: Content
    recipients: tuple[Participant, ...]
    channels: tuple[Channel, ...] | None
    metadata: Mapping[str, Any]
    fingerprint: str
    deliveries: Sequence[Delivery]
    trace: Mapping[str, str] | None = None
    """The trace context of the request that sent it: its events carry it to the log (None: the current one)."""


def message_event(m: Message, deliveries: Sequence[Delivery]) -> dict[str, Any]:
    """The ``message.created`` event of an accepted message."""
    return {
        "type": "message.created",
        "message_id": str(m.id),
        "conversation_id": str(m.conversation_id),
        "seq": m.seq,
        "from": m.sender.key,
        "payload": payload_of(m.content),
        "metadata": dict(m.metadata),
        "created_at": m.created_at.isoformat(),
        "deliveries": [{"recipient": dl.recipient.key, "channel": dl.channel.value} for dl in deliveries],
    }


async def accept_messages(uow: UnitOfWork, acceptances: Sequence[Acceptance], *, at: datetime) -> list[Message]:
    """Give each message the next positions of its conversation and store it with its deliveries and event.

    Messages of one conversation take consecutive seqs in the order given. The caller commits;
    a message id that is taken raises ``DuplicateMessage`` here or at that commit.
    """
    if not acceptances:
        return []
    seqs = dict(await uow.conversations.reserve_seqs(Counter(a.conversation.id for a in acceptances), at=at))
    stored: list[tuple[Message, Sequence[Delivery]]] = []
    for a in acceptances:
        conv = a.conversation
        seq, seqs[conv.id] = seqs[conv.id], seqs[conv.id] + 1
        message = Message.accept(
            id=a.message_id,
            conversation=conv,
            sender=a.sender,
            seq=seq,
            content=a.content,
            recipients=a.recipients,
            channels=a.channels,
            metadata=a.metadata,
            at=at,
            fingerprint=a.fingerprint,
        )
        stored.append((message, a.deliveries))
        await uow.outbox.add(topics.MESSAGES, str(conv.id), message_event(message, a.deliveries), headers=a.trace)
    await uow.messages.add_many(stored)
    traces = {a.message_id: a.trace for a in acceptances}
    await _queue_delivery_jobs(uow, stored, at=at, traces=traces)
    return [m for m, _ in stored]


async def _queue_delivery_jobs(
    uow: UnitOfWork,
    stored: Sequence[tuple[Message, Sequence[Delivery]]],
    *,
    at: datetime,
    traces: Mapping[MessageId, Mapping[str, str] | None],
) -> None:
    """Queue the platform deliveries' jobs with the messages, and mark the messages routed (ADR 004).

    The jobs reach the channel workers through the outbox, in the same transaction as the message,
    so the router has nothing left to do for them.
    """
    messages = [m for m, _ in stored]
    keys = [dl.key for _, deliveries in stored for dl in deliveries if dl.channel.is_platform]
    for job in await jobs_for(uow, messages, keys, at=at) if keys else []:
        event = job.to_event()
        await uow.outbox.add(event.topic, event.key, event.payload, headers=traces.get(job.message_id))
    routed: dict[ConversationId, int] = {}
    for m in messages:
        routed[m.conversation_id] = max(m.seq, routed.get(m.conversation_id, 0))
    await uow.routing.advance(routed, at=at)
