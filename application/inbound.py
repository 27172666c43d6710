"""What the platforms send us: messages from their users, and receipts of what we sent.

The webhook and polling adapters verify and parse each platform's payload into the shapes here;
the use cases decide what becomes of them, the same way whatever the platform:

- An inbound message becomes a message of the conversation its sender's address belongs to: the
  conversation of the message it replies to (a platform reply context), else the one the address
  is bound to (the last that sent to it, or that it last wrote in), else a private conversation
  with the channel's inbox owner. It comes from the user whose identity the address is, or else
  from the address as a contact; from there it is delivered like any other message, which is
  what bridges channels: a WhatsApp contact's message reaches an Instagram member on Instagram.
- Platforms redeliver webhooks and do not keep their order. A message's id is derived from the
  platform's own id, so a copy, even one arriving concurrently, is the same message: the second
  insert clashes and is answered as a duplicate.
- Receipts go to the status worker through the outbox (durable before the platform is answered).
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from abc import abstractmethod
from collections.abc import Callable, Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any, Final, Protocol
from uuid import UUID

import attrs

from application.accepting import Acceptance, accept_messages
from application.events import emit_conversation_created
from application.pipeline import Receipt, Watermark
from application.ports import Clock, DuplicateMessage, UnitOfWork
from domain.channels import Channel, ChannelAddress
from domain.conversations import Conversation, ConversationType, Participant
from domain.ids import ConversationId, MessageId, UserId
from domain.messages import TextContent, plan_deliveries

log = logging.getLogger("chat4all.inbound")

INBOUND_NAMESPACE: Final = UUID("5b0c6f0e-3a2d-4f57-9d0e-6c1f4b8a2e71")
"""Namespace of the UUIDv5 ids of inbound messages and inbox conversations (never change it)."""

_ATTEMPTS = 3


def inbound_message_id(channel: Channel, platform_message_id: str) -> MessageId:
    """The id of the message a platform knows as ``platform_message_id``: the same for every copy."""
    return MessageId(uuid.uuid5(INBOUND_NAMESPACE, f"message:{channel.value}:{platform_message_id}"))


def inbox_conversation_id(owner: UserId, address: ChannelAddress) -> ConversationId:
    """The id of the private conversation between an inbox owner and an address: one per pair."""
    return ConversationId(uuid.uuid5(INBOUND_NAMESPACE, f"inbox:{owner}:{address}"))


@attrs.frozen(kw_only=True)
class InboundMessage:
    """A message a platform user sent to one of our accounts (a business number, a Page, a bot)."""

    channel: Channel
    platform_message_id: str
    sender: ChannelAddress
    text: str
    at: datetime
    reply_to: str | None = None
    """The platform's id of the message this one replies to, when the platform says."""
    sender_name: str | None = None


@attrs.frozen
class Inbound:
    """Everything one webhook call (or one getUpdates answer) carried, parsed."""

    messages: tuple[InboundMessage, ...] = ()
    receipts: tuple[Receipt, ...] = ()
    watermarks: tuple[Watermark, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.messages or self.receipts or self.watermarks)


class ChannelWebhook(Protocol):
    """A platform's inbound side: how its webhook calls are verified and what they carry.

    A channel module provides one next to its ``ChannelConnector``; the HTTP entrypoint serves it
    at ``/webhooks/<channel>``.
    """

    channel: Channel
    signature_header: str
    """The request header that proves a call came from the platform (lower case)."""

    @abstractmethod
    def handshake(self, params: Mapping[str, str]) -> str | None:
        """The answer to the platform's subscription check (Meta's ``hub.challenge``), None to refuse it."""

    @abstractmethod
    def verify(self, body: bytes, headers: Mapping[str, str]) -> bool:
        """True when ``headers`` prove that the platform sent ``body`` (checked in constant time)."""

    @abstractmethod
    def parse(self, body: bytes) -> Inbound:
        """What a verified call carries; parts the hub does not use are skipped.

        Raises:
            ValueError: the body is not the platform's JSON.
        """


class Received(StrEnum):
    """What became of one inbound message."""

    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    """A copy of a message already accepted (platforms redeliver)."""
    UNROUTED = "unrouted"
    """No conversation takes it: the address is bound to none and the channel has no inbox owner."""


@attrs.frozen
class InboundDeps:
    uow: Callable[[], UnitOfWork]
    clock: Clock
    inbox_owners: Mapping[Channel, str] = attrs.field(factory=dict)
    """The username whose inbox takes each channel's messages from unknown addresses."""


async def receive(d: InboundDeps, inbound: Inbound) -> list[Received]:
    """Accept the messages and queue the receipts; return what became of each message, in order.

    Everything accepted is durable when this returns, so the platform may then be answered.
    """
    outcomes = [await receive_message(d, m) for m in inbound.messages]
    events = [
        *(r.to_event(f"{r.channel.value}:{r.platform_message_id or r.delivery}") for r in inbound.receipts),
        *(w.to_event() for w in inbound.watermarks),
    ]
    if events:
        async with d.uow() as uow:
            for e in events:
                await uow.outbox.add(e.topic, e.key, e.payload)
            await uow.commit()
    return outcomes


async def receive_message(d: InboundDeps, m: InboundMessage) -> Received:
    """Accept one inbound message once, however often the platform delivers it."""
    message_id = inbound_message_id(m.channel, m.platform_message_id)
    for _ in range(_ATTEMPTS):
        try:
            return await _accept(d, m, message_id)
        except DuplicateMessage:
            continue  # a concurrent copy committed first: the next look finds it
    return Received.DUPLICATE


def text_of(m: InboundMessage) -> TextContent:
    """The message's text as we store it: cut to our limit, control characters but newlines and tabs dropped."""
    text = "".join(ch for ch in m.text if ch in "\n\t" or ch.isprintable())[: TextContent.MAX_LENGTH]
    if not text.strip():
        text = f"(an empty {m.channel.value} message)"
    return TextContent(text)


async def _accept(d: InboundDeps, m: InboundMessage, message_id: MessageId) -> Received:
    async with d.uow() as uow:
        if await uow.messages.origins_of([message_id]):
            return Received.DUPLICATE
        now = d.clock.now()
        identity = await uow.identities.find_by_address(m.sender)
        sender = Participant.user(identity.user_id) if identity is not None else Participant.contact(m.sender)
        conversation = await _destination(uow, d, m, sender, at=now)
        if conversation is None:
            log.warning("%s: no conversation takes a message from %s; set an inbox owner", m.channel.value, m.sender)
            return Received.UNROUTED
        recipients = conversation.others_than(sender)
        linked: dict[UserId, set[Channel]] = {}
        users = [r.user_id for r in recipients if r.user_id is not None]
        for i in await uow.identities.list_for_users(users):
            linked.setdefault(i.user_id, set()).add(i.channel)
        source: dict[str, Any] = {"channel": m.channel.value, "platform_message_id": m.platform_message_id}
        if m.sender_name:
            source["name"] = m.sender_name[:100]
        await accept_messages(
            uow,
            [
                Acceptance(
                    message_id=message_id,
                    conversation=conversation,
                    sender=sender,
                    content=text_of(m),
                    recipients=recipients,
                    channels=None,
                    metadata={"source": source},
                    fingerprint=hashlib.sha256(f"{m.channel.value}:{m.platform_message_id}".encode()).hexdigest(),
                    deliveries=plan_deliveries(
                        message_id=message_id, recipients=recipients, channels=None, identities=linked, at=now
                    ),
                )
            ],
            at=now,
        )
        await uow.bindings.bind({m.sender: conversation.id}, at=now)
        await uow.commit()
    return Received.ACCEPTED


async def _destination(
    uow: UnitOfWork, d: InboundDeps, m: InboundMessage, sender: Participant, *, at: datetime
) -> Conversation | None:
    """Where ``m`` goes: its reply context's conversation, the address's, or the channel's inbox."""
    for conversation_id in [await _replied_in(uow, m), await uow.bindings.bound(m.sender)]:
        if conversation_id is None:
            continue
        conversation = await uow.conversations.get(conversation_id)
        if conversation is not None and conversation.has_member(sender):
            return conversation
    return await _inbox(uow, d, m.channel, m.sender, sender, at=at)


async def _replied_in(uow: UnitOfWork, m: InboundMessage) -> ConversationId | None:
    """The conversation of the message ``m`` replies to: one we sent, or one that came in from the platform."""
    if m.reply_to is None:
        return None
    sent = (await uow.sends.find(m.channel, [m.reply_to])).get(m.reply_to)
    message_id = sent[0] if sent is not None else inbound_message_id(m.channel, m.reply_to)
    origin = (await uow.messages.origins_of([message_id])).get(message_id)
    return origin.conversation_id if origin is not None else None


async def _inbox(
    uow: UnitOfWork, d: InboundDeps, channel: Channel, address: ChannelAddress, sender: Participant, *, at: datetime
) -> Conversation | None:
    """The private conversation of the channel's inbox owner with ``address``, started on first contact."""
    username = d.inbox_owners.get(channel)
    owner = await uow.users.get_by_username(username) if username else None
    if owner is None or Participant.user(owner.id) == sender:
        return None
    conversation_id = inbox_conversation_id(owner.id, address)
    existing = await uow.conversations.get(conversation_id)
    if existing is not None:
        return existing if existing.has_member(sender) else None
    conversation = Conversation.start(
        id=conversation_id,
        type=ConversationType.PRIVATE,
        creator=owner.id,
        others=[sender],
        metadata={"inbox": channel.value},
        at=at,
    )
    if await uow.conversations.add_if_absent(conversation):
        await emit_conversation_created(uow.outbox, conversation)
        return conversation
    return await uow.conversations.get(conversation_id)  # a concurrent first message started it
