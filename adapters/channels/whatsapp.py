"""WhatsApp Business Cloud API (Meta Graph): text messages to a phone number, answers mapped to our outcomes.

Shapes (``../shared/design/channels.md`` 3.1): a send is ``POST <base>/<version>/<phone number id>/messages``
with ``Authorization: Bearer <token>`` and the body::

    {"messaging_product": "whatsapp", "recipient_type": "individual", "to": "5511999998888",
     "type": "text", "text": {"preview_url": false, "body": "Olá!"},
     "biz_opaque_callback_data": "c4a:<message id>:<recipient key>:<channel>"}

``to`` is the E.164 number without its ``+``, as the platform writes it. Success is
``{"messaging_product": "whatsapp", "contacts": [...], "messages": [{"id": "wamid.…"}]}``: the
``wamid`` is the platform's id for the message, and its status webhooks name it. Failure is a Graph
error ``{"error": {"message": "(#131047) Re-engagement message", "type": "OAuthException",
"code": 131047, "error_data": {"details": "..."}, "fbtrace_id": "..."}}``, mapped on its ``code``
(a Graph rate limit may come as an HTTP 400):

- retried later: HTTP 429 and the rate limits 4 (app calls), 80007 (account), 130429 (throughput of
  the number), 131056 (pair rate: the same recipient too often), after ``Retry-After`` seconds when
  the answer carries that header (Graph errors carry no such field); the temporary errors 1, 2,
  131000 and 131016, and any error Graph marks ``"is_transient": true``; any 5xx; timeouts, broken
  connections and answers that are not Graph's.
- failed for good: every other 4xx Graph error, with the platform's message as the reason: 131047
  (the 24-hour window is closed, only a template may go), 131026 (undeliverable), 100 (invalid
  parameter), 190 (the access token is bad or expired) and so on.

Our delivery key travels in ``biz_opaque_callback_data`` (at most 512 bytes), which the platform
echoes in the status webhooks of the message: ``c4a:<message id>:<recipient key>:<channel>``, e.g.
``c4a:0b9e5c1e-6f1a-4d8e-9a53-1f0c2b7d9e11:user:5f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f:whatsapp``
(``adapters/channels/common.py``: ``delivery_tag``); ``delivery_from_callback`` reads it back. The
``wamid`` (kept in the send ledger) remains the primary way to match a receipt; the callback data
is a second one.

WhatsApp reports sent, delivered, read and failed through webhooks, so ``receipts`` is true. It
cannot be asked whether it already has a message, but it ``echoes``: the ``sent`` status carries
the wamid with our delivery key, a sent confirmation that settles a send whose answer was lost
(its worker died) without sending it again (see ``ChannelCapabilities``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import quote

import httpx

from adapters.channels.common import delivery_of_tag, delivery_tag, file_to_send, json_object, post_json, text_to_send
from adapters.channels.graph import GRAPH_API_VERSION, GRAPH_BASE_URL, graph_client, graph_code, retry_after
from adapters.channels.meta_webhook import MetaWebhook, address, from_epoch, json_body, objects
from application.inbound import Inbound, InboundMessage
from application.pipeline import Receipt
from application.ports import ChannelCapabilities, ChannelError, DeliveryKey, OutboundMessage
from domain.channels import Channel
from domain.deliveries import DeliveryStatus

CAPABILITIES = ChannelCapabilities(
    receipts=True,  # sent / delivered / read / failed status webhooks
    lookup=False,
    echoes=True,  # every status carries biz_opaque_callback_data
    files=True,
    max_attachment_bytes=100 * 1024 * 1024,  # documents up to 100 MB
    max_text_length=4096,
)

CALLBACK_MAX_BYTES: Final = 512
"""The platform's limit on ``biz_opaque_callback_data``."""

RATE_LIMITS: Final = frozenset({4, 80007, 130429, 131056})
"""Graph error codes that mean "too many, too fast": worth sending again later."""
TRANSIENT: Final = frozenset({1, 2, 131000, 131016})
"""Graph error codes for a platform fault (unknown error, service down or overloaded)."""


def callback_data(delivery: DeliveryKey) -> str:
    """The ``biz_opaque_callback_data`` of ``delivery``: ``c4a:<message id>:<recipient key>:<channel>``.

    Raises:
        ValueError: the text would exceed the platform's 512 bytes.
    """
    data = delivery_tag(delivery, max_bytes=CALLBACK_MAX_BYTES)
    if data is None:
        raise ValueError(f"callback data is limited to {CALLBACK_MAX_BYTES} bytes")
    return data


def delivery_from_callback(data: str) -> DeliveryKey | None:
    """The delivery that ``callback_data`` wrote into ``data``; None when ``data`` is not of that form."""
    return delivery_of_tag(data)


class WhatsAppConnector:
    """Sends from one business phone number, through ``base_url`` (the Graph API or the sandbox)."""

    channel = Channel.WHATSAPP
    capabilities = CAPABILITIES

    def __init__(
        self,
        access_token: str,
        phone_number_id: str,
        *,
        base_url: str = GRAPH_BASE_URL,
        api_version: str = GRAPH_API_VERSION,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not access_token:
            raise ValueError("a WhatsApp connector needs an access token")
        if not phone_number_id:
            raise ValueError("a WhatsApp connector needs a phone number id")
        self._token = access_token
        self._path = f"/{quote(phone_number_id, safe='')}/messages"
        self._client = graph_client(
            access_token, base_url=base_url, api_version=api_version, timeout=timeout, transport=transport
        )

    async def send(self, message: OutboundMessage) -> str:
        if message.to.channel is not Channel.WHATSAPP:
            raise ChannelError(f"whatsapp: cannot send to a {message.to.channel.value} address", permanent=True)
        body: dict[str, Any] = {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": message.to.external_id.removeprefix("+"),  # E.164 digits, as the platform writes them
        }
        if (file := file_to_send(message, "whatsapp")) is not None:
            # Every file goes as a document: any type up to 100 MB, shown with its name and caption.
            document = {"link": file.url, "filename": file.filename}
            body |= {"type": "document", "document": document | ({"caption": file.caption} if file.caption else {})}
        else:
            text = text_to_send(message, "whatsapp", self.capabilities.max_text_length)
            body |= {"type": "text", "text": {"preview_url": False, "body": text}}
        with contextlib.suppress(ValueError):  # too long to carry: the wamid alone will match the receipts
            body["biz_opaque_callback_data"] = callback_data(message.delivery)
        answer = await self._post(body)
        messages = answer.get("messages")
        first = messages[0] if isinstance(messages, list) and messages else None
        wamid = first.get("id") if isinstance(first, dict) else None
        if not isinstance(wamid, str) or not wamid:
            raise ChannelError("whatsapp: the answer carried no message id")
        return wamid

    async def find_sent(self, delivery: DeliveryKey) -> str | None:
        return None  # the Cloud API cannot look a sent message up

    async def close(self) -> None:
        await self._client.aclose()

    async def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        response = await post_json(self._client, self._path, body, what="whatsapp: send")
        status = response.status_code
        wait = retry_after(response)
        answer = json_object(response)
        error = answer.get("error") if answer is not None else None
        if isinstance(error, dict):
            raise self._graph_error(status, error, wait)
        if answer is None or not 200 <= status < 300:
            # Not Graph speaking (a proxy's error page): worth another try.
            raise ChannelError(f"whatsapp: HTTP {status} without a Graph answer", retry_after=wait)
        return answer

    def _graph_error(self, status: int, error: dict[str, Any], retry_after: float | None) -> ChannelError:
        code = graph_code(error.get("code"))
        message = str(error.get("message") or f"error {code if code is not None else status}")
        error_data = error.get("error_data")
        details = error_data.get("details") if isinstance(error_data, dict) else None
        if details and str(details) not in message:
            message = f"{message}: {details}"
        reason = f"whatsapp: {message}".replace(self._token, "<token>")  # never echo the credential
        later = status == 429 or code in RATE_LIMITS or code in TRANSIENT or error.get("is_transient") is True
        if 400 <= status < 500 and not later:
            return ChannelError(reason, permanent=True)  # refused: repeating cannot help
        return ChannelError(reason, retry_after=retry_after)  # a rate limit, a platform fault, a 5xx


# --- inbound: the Cloud API's webhooks ------------------------------------------------------------

STATUSES: Final = {
    "sent": DeliveryStatus.SENT,
    "delivered": DeliveryStatus.DELIVERED,
    "read": DeliveryStatus.READ,
    "failed": DeliveryStatus.FAILED,
}
"""Status webhooks. ``sent`` moves nothing: with our delivery key it is a sent confirmation (the platform
has the send: its record may be lost with its worker), without it there is nothing to learn."""


class WhatsAppWebhook(MetaWebhook):
    """``/webhooks/whatsapp``: messages from WhatsApp users and the statuses of what we sent.

    Shapes (``../shared/design/channels.md`` 3.1): ``{"object": "whatsapp_business_account",
    "entry": [{"changes": [{"field": "messages", "value": {...}}]}]}`` where ``value`` holds
    ``messages[]`` (``{"from": "<digits>", "id": "wamid…", "timestamp": "<s>", "type": "text",
    "text": {"body"}, "context"?: {"id": "<wamid replied to>"}}``) with ``contacts[]`` (the
    senders' profile names), or ``statuses[]`` (``{"id": "<wamid>", "status", "timestamp",
    "recipient_id", "biz_opaque_callback_data"?, "errors"?}``). A ``read`` may come without its
    ``delivered``; the delivery state machine fills that in. A ``sent`` carrying our delivery key
    becomes a sent confirmation (a SENT ``Receipt`` naming the delivery and the wamid).
    """

    channel = Channel.WHATSAPP

    def parse(self, body: bytes) -> Inbound:
        payload = json_body(body)
        if payload.get("object") != "whatsapp_business_account":
            return Inbound()
        messages: list[InboundMessage] = []
        receipts: list[Receipt] = []
        for entry in objects(payload.get("entry")):
            for change in objects(entry.get("changes")):
                value = change.get("value")
                if change.get("field") != "messages" or not isinstance(value, dict):
                    continue
                names = {
                    str(c.get("wa_id")): c["profile"].get("name")
                    for c in objects(value.get("contacts"))
                    if isinstance(c.get("profile"), dict)
                }
                messages.extend(m for m in (_message(raw, names) for raw in objects(value.get("messages"))) if m)
                receipts.extend(r for r in (_receipt(raw) for raw in objects(value.get("statuses"))) if r)
        return Inbound(tuple(messages), tuple(receipts))


def _message(m: dict[str, Any], names: Mapping[str, Any]) -> InboundMessage | None:
    sender = address(Channel.WHATSAPP, f"+{m.get('from', '')}")
    wamid = m.get("id")
    if sender is None or not isinstance(wamid, str) or not wamid:
        return None
    context = m.get("context")
    replied = context.get("id") if isinstance(context, dict) else None
    name = names.get(str(m.get("from")))
    return InboundMessage(
        channel=Channel.WHATSAPP,
        platform_message_id=wamid,
        sender=sender,
        text=_text(m),
        at=from_epoch(m.get("timestamp")) or datetime.now(UTC),
        reply_to=replied if isinstance(replied, str) and replied else None,
        sender_name=name if isinstance(name, str) else None,
    )


def _text(m: dict[str, Any]) -> str:
    """A message's words: its text, a button's or list reply's title, a media caption, or what it is."""
    kind = str(m.get("type") or "message")
    part = m.get(kind)
    if isinstance(part, dict):
        reply = part.get("button_reply") or part.get("list_reply")
        for said in (part.get("body"), part.get("text"), part.get("caption"), (reply or {}).get("title")):
            if isinstance(said, str) and said.strip():
                return said
    return f"(whatsapp {kind} without text)"


def _receipt(s: dict[str, Any]) -> Receipt | None:
    status = STATUSES.get(str(s.get("status")))
    wamid = s.get("id")
    if status is None or not isinstance(wamid, str) or not wamid:
        return None
    callback = s.get("biz_opaque_callback_data")
    delivery = delivery_from_callback(callback) if isinstance(callback, str) else None
    if delivery is not None and delivery[2] is not Channel.WHATSAPP:
        delivery = None
    if status is DeliveryStatus.SENT and delivery is None:
        return None
    return Receipt(
        Channel.WHATSAPP,
        status,
        from_epoch(s.get("timestamp")) or datetime.now(UTC),
        platform_message_id=wamid,
        delivery=delivery,
        error=_failure(s) if status is DeliveryStatus.FAILED else None,
    )


def _failure(s: dict[str, Any]) -> str:
    for e in objects(s.get("errors")):
        details = e.get("error_data", {}).get("details") if isinstance(e.get("error_data"), dict) else None
        said = e.get("message") or e.get("title") or "failed"
        return f"whatsapp: ({e.get('code')}) {said}" + (f": {details}" if details else "")
    return "whatsapp: failed"
