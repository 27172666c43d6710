"""Telegram Bot API: ``sendMessage`` and ``sendDocument`` to a chat, with the platform's answers mapped to our outcomes.

Shapes (``../shared/design/channels.md`` 3.2): requests go to ``<base>/bot<token>/<method>``;
success is ``{"ok": true, "result": {...}}``, failure ``{"ok": false, "error_code": N,
"description": "...", "parameters": {"retry_after": S}}``. Flood control is a 429 with
``parameters.retry_after``; a blocked bot, an unknown chat or a bad request are 400/403 and will
not succeed if repeated; 5xx, timeouts and broken connections are worth retrying.

Bots get no delivery or read receipts: a delivery handed to Telegram stays SENT, and that is
final. Telegram can neither be asked whether it already has a message nor echoes a bot's sends,
so a send whose answer was lost (its worker died mid-send) is sent again once the claim's lease
has run out: at least once. Such a message may reach the chat twice; none is lost.
"""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any

import httpx

from adapters.channels.common import SEND_LIMITS, FileToSend, file_to_send, json_object, post_json, text_to_send
from adapters.channels.meta_webhook import address, from_epoch, json_body
from application.inbound import Inbound, InboundMessage
from application.ports import ChannelCapabilities, ChannelError, DeliveryKey, OutboundMessage
from domain.channels import Channel

CAPABILITIES = ChannelCapabilities(
    receipts=False,
    lookup=False,
    echoes=False,  # a send in doubt waits out the lease, then goes again (at least once)
    files=True,
    max_attachment_bytes=50 * 1024 * 1024,  # bots upload documents up to 50 MB
    max_text_length=4096,
)


class TelegramConnector:
    """Sends as one bot, through ``base_url`` (Telegram itself, a local Bot API server or the sandbox)."""

    channel = Channel.TELEGRAM
    capabilities = CAPABILITIES

    def __init__(
        self,
        bot_token: str,
        *,
        base_url: str = "https://api.telegram.org",
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not bot_token:
            raise ValueError("a Telegram connector needs a bot token")
        self._client = httpx.AsyncClient(
            base_url=f"{base_url.rstrip('/')}/bot{bot_token}", timeout=timeout, transport=transport, limits=SEND_LIMITS
        )

    async def send(self, message: OutboundMessage) -> str:
        chat = message.to.external_id
        if (file := file_to_send(message, "telegram")) is not None:
            result = await self._send_document(chat, file)
        else:
            text = text_to_send(message, "telegram", self.capabilities.max_text_length)
            result = await self._call("sendMessage", {"chat_id": chat, "text": text})
        message_id = result.get("message_id") if isinstance(result, dict) else None
        if message_id is None:
            raise ChannelError("telegram: the answer carried no message_id")
        # Telegram numbers messages per chat: the chat makes the id unique.
        return f"{message.to.external_id}:{message_id}"

    async def find_sent(self, delivery: DeliveryKey) -> str | None:
        return None  # the Bot API cannot look a message up

    async def close(self) -> None:
        await self._client.aclose()

    async def _call(self, method: str, body: dict[str, Any]) -> Any:
        return self._result(await post_json(self._client, f"/{method}", body, what=f"telegram: {method}"))

    async def _send_document(self, chat: str, file: FileToSend) -> Any:
        """``sendDocument`` as a multipart upload, the file's bytes streamed from its link to Telegram.

        Telegram fetches a document by URL only up to 20 MB and only as PDF or ZIP; an upload takes
        any file up to 50 MB. A block at a time is held, whatever the file's size.
        """
        boundary = secrets.token_hex(16)
        fields = {"chat_id": chat} | ({"caption": file.caption} if file.caption else {})
        head = b"".join(_form_field(boundary, name, value) for name, value in fields.items())
        head += _file_part_header(boundary, "document", file.filename, file.content_type)
        tail = f"\r\n--{boundary}--\r\n".encode()
        try:
            async with self._client.stream("GET", file.url) as source:
                if source.status_code != 200:
                    raise ChannelError(
                        f"telegram: the file's link answered HTTP {source.status_code}",
                        permanent=source.status_code in (403, 404, 410),
                    )

                async def body() -> AsyncIterator[bytes]:
                    yield head
                    passed = 0
                    async for block in source.aiter_bytes():
                        passed += len(block)
                        yield block
                    if passed != file.size:
                        raise ChannelError(f"telegram: the file's link served {passed} of {file.size} bytes")
                    yield tail

                response = await self._client.post(
                    "/sendDocument",
                    content=body(),
                    headers={
                        "content-type": f"multipart/form-data; boundary={boundary}",
                        "content-length": str(len(head) + file.size + len(tail)),
                    },
                )
        except httpx.TimeoutException as e:
            raise ChannelError("telegram: sendDocument timed out") from e
        except httpx.HTTPError as e:
            raise ChannelError(f"telegram: sendDocument failed: {type(e).__name__}") from e
        return self._result(response)

    def _result(self, response: httpx.Response) -> Any:
        answer = json_object(response)
        if answer is None:
            # Not the Bot API speaking (a proxy's error page): retry unless the request was refused.
            raise ChannelError(f"telegram: HTTP {response.status_code} without a Bot API answer")
        if answer.get("ok") is True:
            return answer.get("result")
        code = answer.get("error_code", response.status_code)
        reason = f"telegram: {answer.get('description') or f'error {code}'}"
        parameters = answer.get("parameters") or {}
        if code == 429:
            retry_after = parameters.get("retry_after")
            raise ChannelError(reason, retry_after=float(retry_after) if retry_after is not None else None)
        if isinstance(code, int) and 400 <= code < 500:
            raise ChannelError(reason, permanent=True)
        raise ChannelError(reason)


def _form_field(boundary: str, name: str, value: str) -> bytes:
    return f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()


def _file_part_header(boundary: str, name: str, filename: str, content_type: str) -> bytes:
    # Quotes and line breaks cannot be escaped in a multipart header: they are replaced.
    safe = "".join("_" if c in '"\\\r\n' else c for c in filename)
    return (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{safe}"\r\n'
        f"Content-Type: {content_type}\r\n\r\n"
    ).encode()


# --- inbound: updates, by webhook or by getUpdates ---------------------------------------------

SECRET_HEADER = "x-telegram-bot-api-secret-token"  # noqa: S105 - a header's name
_SECRET_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,256}")


def parse_update(update: Any) -> InboundMessage | None:
    """The message an Update carries, or None for what the hub does not take (edits, bots, channel posts).

    Shape (``../shared/design/channels.md`` 3.2): ``{"update_id", "message": {"message_id", "from":
    {"id", "is_bot", "first_name", "last_name"?}, "chat": {"id", "type"}, "date", "text"?,
    "caption"?, "document"?, "reply_to_message"?: {"message_id", ...}}}``. The platform's id of a
    message is ``<chat id>:<message id>`` (ids are numbered per chat), as the connector records it.
    """
    message = update.get("message") if isinstance(update, dict) else None
    if not isinstance(message, dict):
        return None
    chat, sender = message.get("chat"), message.get("from")
    if not isinstance(chat, dict) or (isinstance(sender, dict) and sender.get("is_bot") is True):
        return None
    who = address(Channel.TELEGRAM, chat.get("id"))
    message_id = message.get("message_id")
    if who is None or not isinstance(message_id, int):
        return None
    replied = message.get("reply_to_message")
    replied_id = replied.get("message_id") if isinstance(replied, dict) else None
    return InboundMessage(
        channel=Channel.TELEGRAM,
        platform_message_id=f"{who.external_id}:{message_id}",
        sender=who,
        text=_words(message),
        at=from_epoch(message.get("date")) or datetime.now(UTC),
        reply_to=f"{who.external_id}:{replied_id}" if isinstance(replied_id, int) else None,
        sender_name=_name(sender),
    )


def _words(message: dict[str, Any]) -> str:
    for said in (message.get("text"), message.get("caption")):
        if isinstance(said, str) and said.strip():
            return said
    kind = next(
        (k for k in ("document", "photo", "video", "voice", "audio", "sticker", "location") if k in message), None
    )
    return f"(telegram {kind or 'message'} without text)"


def _name(sender: Any) -> str | None:
    if not isinstance(sender, dict):
        return None
    parts = [sender.get("first_name"), sender.get("last_name")]
    name = " ".join(p for p in parts if isinstance(p, str) and p)
    return name or None


class TelegramWebhook:
    """``/webhooks/telegram``: the Updates Telegram POSTs once ``setWebhook`` named our URL and secret token.

    Every call carries ``X-Telegram-Bot-Api-Secret-Token: <the secret_token given to setWebhook>``;
    there is no GET handshake. Telegram bots get no receipts, so updates only carry messages.
    """

    channel = Channel.TELEGRAM
    signature_header = SECRET_HEADER

    def __init__(self, secret_token: str) -> None:
        if not _SECRET_TOKEN.fullmatch(secret_token):
            raise ValueError("a Telegram webhook secret token is 1-256 of A-Z a-z 0-9 _ -")
        self._secret = secret_token.encode()

    def handshake(self, params: Mapping[str, str]) -> str | None:
        return None  # Telegram has no subscription check

    def verify(self, body: bytes, headers: Mapping[str, str]) -> bool:
        return hmac.compare_digest(headers.get(SECRET_HEADER, "").encode(), self._secret)

    def parse(self, body: bytes) -> Inbound:
        message = parse_update(json_body(body))
        return Inbound(messages=(message,) if message is not None else ())


class TelegramUpdates:
    """``getUpdates`` long polling, for bots without a public URL (mutually exclusive with a webhook).

    An update counts as confirmed once a later call asks for a higher offset, so the caller stores
    what a batch brought before it asks for the next one: a crash in between only brings the same
    updates again, and their platform ids make that harmless.
    """

    def __init__(
        self,
        bot_token: str,
        *,
        base_url: str = "https://api.telegram.org",
        poll_seconds: int = 25,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not bot_token:
            raise ValueError("Telegram updates need a bot token")
        self._poll = poll_seconds
        self._client = httpx.AsyncClient(
            base_url=f"{base_url.rstrip('/')}/bot{bot_token}", timeout=poll_seconds + 10.0, transport=transport
        )

    async def next_batch(self, offset: int | None) -> list[dict[str, Any]]:
        """The updates from ``offset`` on (confirming those below it), waiting up to the poll time for one.

        Raises:
            ChannelError: Telegram refused (a webhook is set: 409) or could not be reached.
        """
        body: dict[str, Any] = {"timeout": self._poll, "allowed_updates": ["message"]}
        if offset is not None:
            body["offset"] = offset
        response = await post_json(self._client, "/getUpdates", body, what="telegram: getUpdates")
        answer = json_object(response)
        if answer is None or answer.get("ok") is not True:
            said = answer.get("description") if answer is not None else None
            parameters = answer.get("parameters") if answer is not None else None
            retry = parameters.get("retry_after") if isinstance(parameters, dict) else None
            raise ChannelError(
                f"telegram: getUpdates: {said or f'HTTP {response.status_code}'}",
                permanent=response.status_code in (401, 404, 409),
                retry_after=float(retry) if isinstance(retry, int | float) else None,
            )
        result = answer.get("result")
        return [u for u in result if isinstance(u, dict)] if isinstance(result, list) else []

    async def close(self) -> None:
        await self._client.aclose()


def next_offset(updates: list[dict[str, Any]], current: int | None) -> int | None:
    """The offset that confirms ``updates``: one past the highest ``update_id`` seen."""
    ids = [u["update_id"] for u in updates if isinstance(u.get("update_id"), int)]
    return max(ids) + 1 if ids else current
