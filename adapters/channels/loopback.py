"""The loopback platform: accepts every send, logs it, and reports it delivered.

It stands in for the platforms until their real clients are plugged in, and serves the
benchmarks and the failure drills: every accepted send is appended to a JSON-lines log (one
``write`` per line on an ``O_APPEND`` file, so several processes can share it), which is what
the drills count to prove that no delivery reached a platform twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from application.pipeline import Receipt
from application.ports import ChannelCapabilities, ChannelError, DeliveryKey, EventPublisher, OutboundMessage
from domain.channels import Channel
from domain.deliveries import DeliveryStatus

log = logging.getLogger(__name__)


class LoopbackConnector:
    """A platform on this machine.

    Faults for drills come from ``faults_path``, a JSON file read again when it changes:
    ``{"telegram": {"down": true}}`` fails every send transiently (the platform is away),
    ``{"telegram": {"error_rate": 0.2}}`` a fifth of them.
    """

    def __init__(
        self,
        channel: Channel,
        *,
        receipts: EventPublisher | None,
        now: Callable[[], datetime],
        log_path: Path | None = None,
        faults_path: Path | None = None,
        flush_every: float = 0.02,
    ) -> None:
        self.channel = channel
        # With a log it can say what it already accepted, as a platform with a lookup API would.
        self.capabilities = ChannelCapabilities(receipts=receipts is not None, lookup=log_path is not None)
        self._log_path = log_path
        self._receipts = receipts
        self._now = now
        self._log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600) if log_path else None
        self._pending: list[tuple[Receipt, str]] = []  # with the conversation id, their key
        self._flush_every = flush_every
        self._flusher: asyncio.Task[None] | None = None
        self._faults_path = faults_path
        self._faults_seen: float | None = None
        self._faults: dict[str, Any] = {}

    def _current_faults(self) -> dict[str, Any]:
        if self._faults_path is None:
            return {}
        try:
            mtime = self._faults_path.stat().st_mtime
        except FileNotFoundError:
            self._faults_seen, self._faults = None, {}
            return {}
        if mtime != self._faults_seen:
            self._faults_seen = mtime
            try:
                every = json.loads(self._faults_path.read_text() or "{}")
                self._faults = dict(every.get(self.channel.value) or {})
            except (ValueError, AttributeError):
                log.warning("loopback: ignoring unreadable faults file %s", self._faults_path)
                self._faults = {}
        return self._faults

    async def send(self, message: OutboundMessage) -> str:
        faults = self._current_faults()
        if faults.get("down"):
            raise ChannelError(f"{self.channel.value} is down")
        if random.random() < float(faults.get("error_rate", 0.0)):  # noqa: S311 - fault injection, not security
            raise ChannelError(f"{self.channel.value} answered 503")
        if message.to.channel is not self.channel:
            raise ChannelError(f"{message.to} is not a {self.channel.value} address", permanent=True)
        platform_id = f"{self.channel.value}-{uuid.uuid4().hex}"
        if self._log_fd is not None:
            message_id, recipient, _ = message.delivery
            line = {
                "channel": self.channel.value,
                "platform_message_id": platform_id,
                "message_id": str(message_id),
                "recipient": recipient,
                "to": str(message.to),
                "conversation_id": str(message.conversation_id),
                "seq": message.seq,
                "type": message.payload.get("type"),
                "at": self._now().isoformat(),
            }
            os.write(self._log_fd, (json.dumps(line) + "\n").encode())
        if self._receipts is not None:
            receipt = Receipt(
                self.channel, DeliveryStatus.DELIVERED, self._now(), platform_id, delivery=message.delivery
            )
            self._pending.append((receipt, str(message.conversation_id)))
            if self._flusher is None or self._flusher.done():
                self._flusher = asyncio.create_task(self._flush_soon())
        return platform_id

    async def find_sent(self, delivery: DeliveryKey) -> str | None:
        if self._log_path is None or not self._log_path.exists():
            return None
        message_id, recipient, channel = delivery
        needle = str(message_id)
        with self._log_path.open() as log_file:
            for line in log_file:
                if needle not in line:
                    continue
                entry = json.loads(line)
                if entry["recipient"] == recipient and entry["channel"] == channel.value:
                    return str(entry["platform_message_id"])
        return None

    async def _flush_soon(self) -> None:
        await asyncio.sleep(self._flush_every)
        await self.flush()

    async def flush(self) -> None:
        """Publish the receipts gathered so far (a platform's webhooks arrive in batches too).

        Receipts added while a batch is being published go out in the next round of the loop:
        no send is left without its receipt.
        """
        while self._pending:
            pending, self._pending = self._pending, []
            if self._receipts is None:
                return
            try:
                await self._receipts.publish([r.to_event(key) for r, key in pending])
            except Exception:  # a platform whose webhook is lost: the delivery stays handed over
                log.exception("loopback: %d receipts lost", len(pending))

    async def close(self) -> None:
        if self._flusher is not None:
            with contextlib.suppress(Exception):
                await self._flusher
        await self.flush()
        if self._log_fd is not None:
            os.close(self._log_fd)
            self._log_fd = None
