"""The delivery state machine: SENT -> DELIVERED -> READ, or FAILED, only ever forward."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import Final

import attrs

from domain.channels import Channel
from domain.conversations import Participant
from domain.ids import MessageId


class DeliveryStatus(StrEnum):
    """Where one delivery of a message to one recipient on one channel stands."""

    SENT = "SENT"
    FAILED = "FAILED"
    DELIVERED = "DELIVERED"
    READ = "READ"


# Receipts arrive late, twice and out of order (multi-device, webhook retries), so the
# statuses form a chain and a delivery only ever moves up it: FAILED sits above SENT
# (a send can fail) and below DELIVERED (a device may still report it delivered or read).
RANK: Final = {
    DeliveryStatus.SENT: 0,
    DeliveryStatus.FAILED: 1,
    DeliveryStatus.DELIVERED: 2,
    DeliveryStatus.READ: 3,
}

IMPLIED_BY_READ: Final = "implied by read"
"""The detail of a DELIVERED history entry added because a READ skipped it."""

_NEXT: Final = {status: frozenset(s for s in DeliveryStatus if RANK[s] > RANK[status]) for status in DeliveryStatus}


def can_move(current: DeliveryStatus, target: DeliveryStatus) -> bool:
    """True when moving from ``current`` to ``target`` changes anything."""
    return target in _NEXT[current]


@attrs.frozen
class StatusChange:
    """One entry of a delivery's history."""

    status: DeliveryStatus
    at: datetime
    detail: str | None = None


@attrs.define(kw_only=True, eq=False)
class Delivery:
    """One (message, recipient, channel) delivery and its history."""

    message_id: MessageId
    recipient: Participant
    channel: Channel
    status: DeliveryStatus = DeliveryStatus.SENT
    updated_at: datetime
    error: str | None = None
    history: list[StatusChange] = attrs.field(factory=list)

    @classmethod
    def accepted(cls, *, message_id: MessageId, recipient: Participant, channel: Channel, at: datetime) -> Delivery:
        """A new delivery, SENT at ``at``: the server has accepted the message."""
        return cls(
            message_id=message_id,
            recipient=recipient,
            channel=channel,
            updated_at=at,
            history=[StatusChange(DeliveryStatus.SENT, at)],
        )

    def advance(self, to: DeliveryStatus, *, at: datetime, error: str | None = None) -> bool:
        """Move forward to ``to``; a READ that skips DELIVERED adds DELIVERED to the history first.

        Returns:
            True if the status changed; False for a late or repeated event, which is not an error.
        """
        if not can_move(self.status, to):
            return False
        if self.history and at < self.history[-1].at:
            # Platforms stamp receipts with their own, coarser clocks (WhatsApp in whole seconds):
            # a change is never recorded before the one it follows.
            at = self.history[-1].at
        if to is DeliveryStatus.READ and RANK[self.status] < RANK[DeliveryStatus.DELIVERED]:
            # What was read was delivered: platforms that report both may skip DELIVERED (WhatsApp
            # sends no delivered webhook when both happen at once), so the history fills it in.
            self.history.append(StatusChange(DeliveryStatus.DELIVERED, at, IMPLIED_BY_READ))
        self.status = to
        self.updated_at = at
        self.error = error if to is DeliveryStatus.FAILED else None
        self.history.append(StatusChange(to, at, error))
        return True

    def record_handoff(self, platform_message_id: str, *, at: datetime) -> None:
        """Keep in the history that the platform accepted this delivery under ``platform_message_id``.

        The status does not move: the platform has it, the recipient's device may not yet.
        """
        self.history.append(StatusChange(self.status, at, f"{self.channel.value} accepted it as {platform_message_id}"))

    @property
    def key(self) -> tuple[MessageId, str, Channel]:
        """What makes a delivery unique."""
        return (self.message_id, self.recipient.key, self.channel)


LAST_REPORTED: Final = {
    Channel.INTERNAL: DeliveryStatus.READ,  # a client receives it, its user reads it
    Channel.WHATSAPP: DeliveryStatus.READ,  # sent, delivered, read and failed webhooks
    Channel.MESSENGER: DeliveryStatus.READ,  # delivery and read watermarks
    Channel.INSTAGRAM: DeliveryStatus.READ,  # reads only (messaging_seen); no delivery events
    Channel.TELEGRAM: DeliveryStatus.SENT,  # bots get no receipts: handed over is as far as it goes
}
"""The furthest status each channel can report: where a delivery's status stops by design."""


def is_final(dl: Delivery, *, handed_over: bool) -> bool:
    """Will nothing more move ``dl``? READ or FAILED, or handed to a platform that reports nothing further.

    A Telegram delivery handed to Telegram stays SENT: that is final, not stuck.
    """
    if dl.status in (DeliveryStatus.READ, DeliveryStatus.FAILED):
        return True
    return handed_over and RANK[dl.status] >= RANK[LAST_REPORTED[dl.channel]]


def overall_status(statuses: Iterable[DeliveryStatus]) -> DeliveryStatus:
    """A message's status: the lowest over its deliveries; FAILED only when every one failed."""
    values = list(statuses)
    live = [s for s in values if s is not DeliveryStatus.FAILED]
    if not values:
        return DeliveryStatus.SENT
    if not live:
        return DeliveryStatus.FAILED
    return min(live, key=RANK.__getitem__)
