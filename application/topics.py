"""The event log's topic names: one place, used by the use cases and the broker adapter alike.

Every event of a conversation is keyed by its conversation id, so one partition carries it and
consumers see it in order.
"""

from __future__ import annotations

from domain.channels import Channel

MESSAGES = "chat.messages"
"""``message.created``: accepted messages, from the outbox; the router consumes them."""

STATUS = "chat.status"
"""``message.status``: applied delivery changes, for real-time push and outbound webhooks."""

ACTIVITY = "chat.activity"
"""``conversation.created`` and ``file.completed``: what else outbound webhooks tell about, from the outbox."""

RECEIPTS = "chat.receipts"
"""Raw receipts from connectors and platform webhooks; the status worker applies them."""

DEAD_LETTERS = "chat.dlq"
"""Delivery jobs that exhausted their attempts; `chat4all dlq list|replay` reads them."""

OUTBOUND_PREFIX = "chat.outbound."


def outbound(channel: Channel) -> str:
    """The topic of delivery jobs for ``channel`` (one consumer group per channel)."""
    return f"{OUTBOUND_PREFIX}{channel.value}"


def all_topics() -> list[str]:
    """Every topic the platform uses."""
    platform = [outbound(ch) for ch in Channel if ch is not Channel.INTERNAL]
    return [MESSAGES, STATUS, ACTIVITY, RECEIPTS, DEAD_LETTERS, *platform]
