"""Meta's webhooks (WhatsApp, Messenger, Instagram): the subscription handshake, the payload signature,
and the ``messaging`` events Messenger and Instagram share.

Handshake (``../shared/design/channels.md`` 3.1): Meta calls ``GET <url>?hub.mode=subscribe&
hub.challenge=<n>&hub.verify_token=<ours>``; we answer the challenge when the token is ours.

Signature: every POST carries ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app secret, raw
body)>``. It is computed over the bytes as sent (Meta escapes non-ASCII characters), so it is
checked on the raw body, never on re-serialised JSON, and compared in constant time.

Messenger and Instagram events (3.3, 3.4) arrive as ``entry[].messaging[]``, each with a
``sender`` (the person's scoped id, or ours for an echo) and one of:

- ``message`` ``{"mid", "text"?, "attachments"?, "reply_to"?: {"mid"}}``: a message from the person;
- ``message`` ``{"is_echo": true, "app_id", "metadata"?, "mid", ...}`` from our page or account to the
  person (Messenger's ``message_echoes``, Instagram's ``messages`` echoes): a message the page sent.
  One whose ``metadata`` is our delivery key is a sent confirmation (a SENT ``Receipt`` naming the
  delivery and the ``mid``); other echoes (sent from the page's inbox, by other apps) are skipped;
- ``delivery`` ``{"mids"?, "watermark"}``: the named messages, and everything we sent the person
  up to the watermark (ms since the epoch), were delivered;
- ``read`` ``{"watermark"}`` (Messenger) or ``{"mid"}`` (Instagram's ``messaging_seen``): read.

Instagram with Instagram Login may also wrap an event as ``entry[].changes[].value``; both are read.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from adapters.channels.common import delivery_of_tag
from application.inbound import Inbound, InboundMessage
from application.pipeline import Receipt, Watermark
from domain.channels import Channel, ChannelAddress
from domain.deliveries import DeliveryStatus
from domain.errors import BusinessRuleViolation

log = logging.getLogger("chat4all.webhooks")

SIGNATURE_HEADER = "x-hub-signature-256"
_CHALLENGE = re.compile(r"[0-9A-Za-z_-]{1,128}")


def signature(app_secret: str, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value Meta sends with ``body``."""
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def json_body(body: bytes) -> dict[str, Any]:
    """The webhook's JSON object.

    Raises:
        ValueError: the body is not a JSON object.
    """
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError("the body is not JSON") from exc
    if not isinstance(payload, dict):
        raise ValueError("the body is not a JSON object")
    return payload


def objects(value: Any) -> Iterator[dict[str, Any]]:
    """The JSON objects in ``value`` when it is a list; nothing otherwise (a malformed part is skipped)."""
    if isinstance(value, list):
        yield from (item for item in value if isinstance(item, dict))


def from_epoch(value: Any, *, millis: bool = False) -> datetime | None:
    """A platform timestamp (seconds or milliseconds since the epoch, as a number or digits) as UTC."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    try:
        return datetime.fromtimestamp(number / 1000 if millis else number, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def address(channel: Channel, external_id: Any) -> ChannelAddress | None:
    """The address of a platform user, or None (logged) when the platform's id does not fit the channel."""
    try:
        return ChannelAddress.of(channel, str(external_id))
    except BusinessRuleViolation:
        log.warning("%s: skipping an event from an id that is not one (%r)", channel.value, str(external_id)[:40])
        return None


class MetaWebhook:
    """What every Meta webhook does alike: the handshake and the signature; subclasses parse."""

    channel: Channel
    signature_header = SIGNATURE_HEADER

    def __init__(self, app_secret: str, verify_token: str | None = None) -> None:
        if not app_secret:
            raise ValueError(f"a {self.channel.value} webhook needs the Meta app secret")
        self._secret = app_secret
        self._verify_token = verify_token

    def handshake(self, params: Mapping[str, str]) -> str | None:
        token = params.get("hub.verify_token", "")
        challenge = params.get("hub.challenge")
        if params.get("hub.mode") != "subscribe" or not self._verify_token:
            return None
        if challenge is None or not _CHALLENGE.fullmatch(challenge):
            return None  # Meta's challenge is a number: echo nothing else back
        return challenge if hmac.compare_digest(token.encode(), self._verify_token.encode()) else None

    def verify(self, body: bytes, headers: Mapping[str, str]) -> bool:
        given = headers.get(SIGNATURE_HEADER, "")
        return hmac.compare_digest(given.encode(), signature(self._secret, body).encode())

    def parse(self, body: bytes) -> Inbound:
        raise NotImplementedError


class MetaMessagingWebhook(MetaWebhook):
    """Messenger's and Instagram's ``messaging`` events (see the module's docstring)."""

    object_name: str

    def parse(self, body: bytes) -> Inbound:
        payload = json_body(body)
        if payload.get("object") != self.object_name:
            return Inbound()
        messages: list[InboundMessage] = []
        receipts: list[Receipt] = []
        watermarks: list[Watermark] = []
        for entry in objects(payload.get("entry")):
            events = [*objects(entry.get("messaging")), *(c.get("value") for c in objects(entry.get("changes")))]
            for event in (e for e in events if isinstance(e, dict)):
                self._event(event, messages, receipts, watermarks)
        return Inbound(tuple(messages), tuple(receipts), tuple(watermarks))

    def _event(
        self,
        event: dict[str, Any],
        messages: list[InboundMessage],
        receipts: list[Receipt],
        watermarks: list[Watermark],
    ) -> None:
        at = from_epoch(event.get("timestamp"), millis=True) or datetime.now(UTC)
        message, delivery, read = event.get("message"), event.get("delivery"), event.get("read")
        if isinstance(message, dict) and message.get("is_echo"):  # from our page to the person
            confirmation = self._echo(message, at)
            if confirmation is not None:
                receipts.append(confirmation)
            return
        sender = event.get("sender")
        who = address(self.channel, sender.get("id")) if isinstance(sender, dict) else None
        if who is None:
            return
        if isinstance(message, dict) and isinstance(message.get("mid"), str):
            reply = message.get("reply_to")
            replied = reply.get("mid") if isinstance(reply, dict) else None
            messages.append(
                InboundMessage(
                    channel=self.channel,
                    platform_message_id=message["mid"],
                    sender=who,
                    text=_text_of(self.channel, message),
                    at=at,
                    reply_to=replied if isinstance(replied, str) and replied else None,
                )
            )
        for status, receipt in ((DeliveryStatus.DELIVERED, delivery), (DeliveryStatus.READ, read)):
            if not isinstance(receipt, dict):
                continue
            named = receipt.get("mids")
            mids: list[Any] = named if isinstance(named, list) else [receipt.get("mid")]
            for mid in (m for m in mids if isinstance(m, str) and m):
                receipts.append(Receipt(self.channel, status, at, platform_message_id=mid))
            up_to = from_epoch(receipt.get("watermark"), millis=True)
            if up_to is not None:
                watermarks.append(Watermark(channel=self.channel, reader=who, status=status, up_to=up_to, at=at))

    def _echo(self, message: dict[str, Any], at: datetime) -> Receipt | None:
        """The sent confirmation an echo of our send carries: our delivery key (``metadata``) and the ``mid``."""
        tag, mid = message.get("metadata"), message.get("mid")
        delivery = delivery_of_tag(tag) if isinstance(tag, str) else None
        if delivery is None or delivery[2] is not self.channel or not isinstance(mid, str) or not mid:
            return None  # not sent by Chat4All (the page's inbox, another app), or not for this channel
        return Receipt(self.channel, DeliveryStatus.SENT, at, platform_message_id=mid, delivery=delivery)


def _text_of(channel: Channel, message: dict[str, Any]) -> str:
    text = message.get("text")
    if isinstance(text, str) and text.strip():
        return text
    kinds = [a.get("type", "attachment") for a in objects(message.get("attachments"))]
    return f"({channel.value} {', '.join(map(str, kinds)) or 'message'} without text)"
