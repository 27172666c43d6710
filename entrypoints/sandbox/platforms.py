"""The four platforms the channel sandbox plays: what they accept, what they remember, what they send back.

Shapes follow ``../shared/design/channels.md`` 3.1-3.4, so that Chat4All's connectors and webhook
handlers cannot tell the sandbox from WhatsApp, Messenger, Instagram or Telegram. No web framework
here: ``app.py`` turns requests into calls on ``Sandbox`` and delivers the ``Webhook``s it builds;
a refusal is a ``PlatformError`` carrying the platform's own status, body and headers.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import math
import random
import re
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import attrs

from domain.channels import Channel
from entrypoints.sandbox.config import SandboxConfig

# Ids the sandbox uses for the business side when the configuration names none (``me``).
MESSENGER_PAGE_ID: Final = "100000000000001"
INSTAGRAM_ACCOUNT_ID: Final = "17841400000000001"
WHATSAPP_BUSINESS_ACCOUNT_ID: Final = "102290129340398"
WHATSAPP_DISPLAY_NUMBER: Final = "15550783881"
META_APP_ID: Final = 100000000000007
"""The ``app_id`` in Messenger's and Instagram's echoes of Chat4All's sends: the app that sent them."""
TELEGRAM_BOT_ID: Final = 7000000001
"""The bot's id when its token does not start with one (real tokens are ``<bot id>:<secret>``)."""
TELEGRAM_FIRST_UPDATE_ID: Final = 100000001
DEFAULT_NAME: Final = "Sandbox User"

SERVED: Final = (Channel.WHATSAPP, Channel.MESSENGER, Channel.INSTAGRAM, Channel.TELEGRAM)

RECEIPTS_SENT, RECEIPTS_DELIVERED, RECEIPTS_READ = "sent", "delivered", "read"
ECHO: Final = "echo"
"""Messenger's ``message_echoes`` (Instagram: an ``is_echo`` message) of a send that carried ``metadata``."""
INBOUND: Final = "inbound"
BATCH: Final = "batch"
"""The kind of a webhook that carries several updates (``Sandbox.merge``)."""
BATCHED: Final = frozenset({Channel.WHATSAPP, Channel.MESSENGER, Channel.INSTAGRAM})
"""Meta's webhooks carry many updates per POST; Telegram's carry one."""

_WA_NUMBER = re.compile(r"\+?([1-9][0-9]{6,14})")  # E.164, the "+" optional as Meta allows
_SCOPED_ID = re.compile(r"[0-9]{1,64}")  # PSIDs and IGSIDs
_CHAT_ID = re.compile(r"-?[0-9]{1,20}")
_SECRET_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,256}")
_MESSAGING_TYPES = frozenset({"RESPONSE", "UPDATE", "MESSAGE_TAG"})
_META_ATTACHMENTS = frozenset({"image", "audio", "video", "file"})
_TEXT_LIMITS: Final = {Channel.WHATSAPP: 4096, Channel.MESSENGER: 2000, Channel.INSTAGRAM: 1000}
_METADATA_LIMIT: Final = 1000  # characters of the Send API's message.metadata
_TELEGRAM_TEXT: Final = 4096
_TELEGRAM_CAPTION: Final = 1024


class PlatformError(Exception):
    """A platform's refusal, as it answers it: status, body (JSON, or text for a dead server) and headers."""

    def __init__(self, status: int, body: Mapping[str, Any] | str, *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.body = body
        self.headers = dict(headers or {})


class InvalidControl(Exception):
    """A control-API request the sandbox cannot carry out (answered as a 400 problem)."""


def graph_error(
    status: int,
    code: int,
    message: str,
    *,
    subcode: int | None = None,
    transient: bool | None = None,
    error_data: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> PlatformError:
    """A Graph API error: ``{"error": {"message", "type": "OAuthException", "code", ..., "fbtrace_id"}}``."""
    error: dict[str, Any] = {"message": message, "type": "OAuthException", "code": code}
    if subcode is not None:
        error["error_subcode"] = subcode
    if transient is not None:
        error["is_transient"] = transient
    if error_data is not None:
        error["error_data"] = dict(error_data)
    error["fbtrace_id"] = _b64(9)
    return PlatformError(status, {"error": error}, headers=headers)


def invalid_parameter(message: str, *, subcode: int | None = None) -> PlatformError:
    """Graph's answer to a request it cannot make sense of: HTTP 400, code 100."""
    return graph_error(400, 100, f"(#100) {message}", subcode=subcode)


def telegram_error(code: int, description: str, *, retry_after: int | None = None) -> PlatformError:
    """A Bot API failure: ``{"ok": false, "error_code", "description", "parameters"?}``."""
    body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
    headers = None
    if retry_after is not None:
        body["parameters"] = {"retry_after": retry_after}
        headers = {"Retry-After": str(retry_after)}
    return PlatformError(code, body, headers=headers)


def bad_request(description: str) -> PlatformError:
    return telegram_error(400, f"Bad Request: {description}")


def _b64(n: int) -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(n)).decode().rstrip("=")


def iso(at: float) -> str:
    return datetime.fromtimestamp(at, tz=UTC).isoformat()


@attrs.define
class Behaviour:
    """How the people on the platforms react to what Chat4All sends them (``/sandbox/settings``)."""

    auto_deliver: bool = True
    auto_read: bool = False
    delay_ms: int = 50
    """Between an accepted send and its first receipt, and between one receipt and the next."""

    def as_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.define
class Faults:
    """How badly one platform's API behaves (``/sandbox/faults``)."""

    error_rate: float = 0.0
    rate_limit_per_s: float | None = None
    latency_ms: int = 0
    down: bool = False

    def as_json(self, channel: Channel) -> dict[str, Any]:
        return {"channel": channel.value, **attrs.asdict(self)}


@attrs.define
class TokenBucket:
    """``rate`` sends a second with bursts of one second's worth, like a platform's throughput limit."""

    rate: float
    tokens: float
    updated: float

    @classmethod
    def full(cls, rate: float, now: float) -> TokenBucket:
        return cls(rate, max(1.0, rate), now)

    def take(self, now: float) -> float:
        """Take a token: 0.0 when there was one, else the seconds until there will be."""
        capacity = max(1.0, self.rate)
        self.tokens = min(capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


@attrs.frozen
class Upload:
    """A file posted in a multipart request (Telegram's sendDocument)."""

    filename: str
    content_type: str
    size: int


@attrs.frozen(kw_only=True)
class Message:
    """A message one of the platforms carried, either way.

    ``peer`` is the external person as the platform names them (WhatsApp digits without "+", a
    PSID, an IGSID, a Telegram chat id); ``outbound`` is True for what Chat4All sent them.
    """

    channel: Channel
    platform_message_id: str
    peer: str
    outbound: bool
    type: str
    text: str | None
    at: float
    document_url: str | None = None
    file_name: str | None = None
    file_size: int | None = None
    """The bytes of a file uploaded with the send (Telegram's multipart ``sendDocument``)."""
    callback_data: str | None = None
    """What the sender asked the platform to echo: WhatsApp's ``biz_opaque_callback_data`` (in the message's
    status webhooks), or the Send API's ``message.metadata`` (in the echo of the message)."""

    @property
    def to(self) -> str:
        """The recipient as Chat4All writes the address: WhatsApp in E.164 with its "+", the others as-is."""
        return f"+{self.peer}" if self.channel is Channel.WHATSAPP else self.peer

    def as_json(self) -> dict[str, Any]:
        item: dict[str, Any] = {
            "channel": self.channel.value,
            "direction": "outbound" if self.outbound else "inbound",
            ("to" if self.outbound else "from"): self.to,
            "type": self.type,
            "text": self.text,
            "platform_message_id": self.platform_message_id,
            "received_at": iso(self.at),
        }
        if self.document_url is not None:
            item["document_url"] = self.document_url
        if self.file_name is not None:
            item["file_name"] = self.file_name
        if self.file_size is not None:
            item["file_size"] = self.file_size
        return item


@attrs.frozen
class Webhook:
    """One call a platform makes to Chat4All: the exact bytes, and the headers that vouch for them.

    Built for one update; ``Sandbox.merge`` puts several Meta updates into one call, as Meta batches them.
    """

    channel: Channel
    kind: str
    """``inbound``, ``echo``, or the receipt it carries: ``sent``, ``delivered``, ``read`` (``batch``: merged)."""
    url: str
    body: bytes
    headers: Mapping[str, str]
    peer: str = ""
    """The person the update is about (the recipient of a send, the sender of an inbound message): updates
    about one person reach Chat4All in the order they happened."""
    envelope: Mapping[str, Any] | None = attrs.field(default=None, eq=False, repr=False)
    """The JSON ``body`` encodes (Meta's ``{"object", "entry": [...]}``), kept so that updates can be merged."""


def meta_signature(app_secret: str, body: bytes) -> str:
    """``X-Hub-Signature-256``: ``sha256=`` and the hex HMAC-SHA256 of the raw body under the app secret."""
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


class TelegramBot:
    """The Bot API as seen by one bot: its chats' message numbering, its pending updates, its webhook.

    Message ids count per chat, both directions together, as in a private chat; update ids only
    grow. Neither restarts on ``reset``: Chat4All deduplicates on them.
    """

    def __init__(self, config: SandboxConfig, clock: Callable[[], float]) -> None:
        self.token = config.telegram_bot_token
        self._config = config
        self._clock = clock
        prefix = (self.token or "").partition(":")[0]
        self.user = {
            "id": int(prefix) if prefix.isdigit() else TELEGRAM_BOT_ID,
            "is_bot": True,
            "first_name": "Chat4All Sandbox",
            "username": "chat4all_sandbox_bot",
        }
        self._next_update_id = TELEGRAM_FIRST_UPDATE_ID
        self._last_message_id: dict[int, int] = {}
        self._messages: dict[str, dict[str, Any]] = {}  # "<chat>:<message_id>" -> its Bot API Message JSON
        self._names: dict[int, str] = {}
        self._files: dict[str, dict[str, Any]] = {}
        self._pending: list[dict[str, Any]] = []
        self._arrived = asyncio.Event()
        self.webhook_url: str | None = None
        self.secret_token: str | None = None
        self.reset()

    def reset(self) -> None:
        """Drop pending updates and go back to the configured way of receiving them."""
        self._pending.clear()
        self._messages.clear()
        webhook = self._config.telegram_updates == "webhook" and bool(self._config.telegram_webhook_secret)
        self.webhook_url = f"{self._config.chat4all_url.rstrip('/')}/webhooks/telegram" if webhook else None
        self.secret_token = self._config.telegram_webhook_secret if webhook else None

    def authorize(self, token: str) -> None:
        if self.token is None:
            raise telegram_error(404, "Not Found")  # what the Bot API answers a token it never issued
        if not hmac.compare_digest(token.encode(), self.token.encode()):
            raise telegram_error(401, "Unauthorized")

    # --- what Chat4All calls -------------------------------------------------------------------

    def send_message(self, params: Mapping[str, Any]) -> tuple[dict[str, Any], Message]:
        chat = _chat_id(params)
        text = params.get("text")
        if not isinstance(text, str) or not text.strip():
            raise bad_request("message text is empty")
        if len(text) > _TELEGRAM_TEXT:
            raise bad_request("message is too long")
        result = self._new_message(chat, outbound=True, content={"text": text})
        return result, self._record(result, outbound=True, type_="text", text=text)

    def send_document(self, params: Mapping[str, Any], uploads: Mapping[str, Upload]) -> tuple[dict[str, Any], Message]:
        chat = _chat_id(params)
        caption = params.get("caption")
        if caption is not None and (not isinstance(caption, str) or len(caption) > _TELEGRAM_CAPTION):
            raise bad_request("message caption is too long")
        document, url = self._document(params.get("document"), uploads)
        content: dict[str, Any] = {"document": document}
        if caption:
            content["caption"] = caption
        result = self._new_message(chat, outbound=True, content=content)
        name = document.get("file_name")
        record = self._record(
            result,
            outbound=True,
            type_="document",
            text=caption or None,
            url=url,
            name=name,
            size=document.get("file_size"),
        )
        return result, record

    def get_me(self) -> dict[str, Any]:
        return {**self.user, "can_join_groups": True, "can_read_all_group_messages": False}

    def set_webhook(self, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Point updates at ``url`` (an empty one removes the webhook); returns the pending updates it now gets."""
        url = str(params.get("url") or "")
        secret = params.get("secret_token")
        if secret is not None and (not isinstance(secret, str) or not _SECRET_TOKEN.fullmatch(secret)):
            raise bad_request("secret token contains unallowed characters")
        if url and not url.startswith(("http://", "https://")):
            raise bad_request("bad webhook: An HTTPS URL must be provided for webhook")
        if _flag(params.get("drop_pending_updates")):
            self._pending.clear()
        self.webhook_url, self.secret_token = (url or None), (secret if url else None)
        if not url:
            return []
        pending, self._pending = self._pending, []
        return pending

    def delete_webhook(self, params: Mapping[str, Any]) -> None:
        if _flag(params.get("drop_pending_updates")):
            self._pending.clear()
        self.webhook_url = self.secret_token = None

    def webhook_info(self) -> dict[str, Any]:
        return {
            "url": self.webhook_url or "",
            "has_custom_certificate": False,
            "pending_update_count": len(self._pending),
        }

    async def get_updates(self, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Updates from ``offset`` on, waiting up to ``timeout`` s for one; those below ``offset`` are confirmed."""
        if self.webhook_url is not None:
            raise telegram_error(
                409,
                "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the "
                "webhook first",
            )
        offset = _int_param(params, "offset", None)
        limit = min(max(_int_param(params, "limit", 100) or 100, 1), 100)
        timeout = min(max(_int_param(params, "timeout", 0) or 0, 0), 50)
        self._confirm(offset)
        deadline = time.monotonic() + timeout
        while not self._pending and (left := deadline - time.monotonic()) > 0:
            arrived = self._arrived
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(arrived.wait(), left)
            self._confirm(offset)
        return self._pending[:limit]

    # --- what the external person does ---------------------------------------------------------

    def inbound(
        self, sender: str, text: str, *, reply_to: str | None, name: str | None
    ) -> tuple[dict[str, Any], Message]:
        """An Update for a text from ``sender`` in their private chat with the bot."""
        if not sender.isdigit() or not 0 < int(sender) < 10**20:
            raise InvalidControl("a Telegram sender is a positive numeric user id")
        chat = int(sender)
        if name:
            self._names[chat] = name
        content: dict[str, Any] = {"text": text}
        if reply_to is not None:
            content["reply_to_message"] = self._replied(chat, reply_to)
        message = self._new_message(chat, outbound=False, content=content)
        update = {"update_id": self._next_update_id, "message": message}
        self._next_update_id += 1
        return update, self._record(message, outbound=False, type_="text", text=text)

    def webhook(self, update: Mapping[str, Any]) -> Webhook | None:
        """The POST that carries ``update`` to the webhook, or None (queued) when there is none."""
        if self.webhook_url is None:
            self._pending.append(dict(update))
            self._arrived.set()
            self._arrived = asyncio.Event()
            return None
        headers = {"Content-Type": "application/json"}
        if self.secret_token:
            headers["X-Telegram-Bot-Api-Secret-Token"] = self.secret_token
        body = json.dumps(update, ensure_ascii=False, separators=(",", ":")).encode()
        chat = update.get("message", {}).get("chat", {}).get("id", "")
        return Webhook(Channel.TELEGRAM, INBOUND, self.webhook_url, body, headers, peer=str(chat), envelope=update)

    # --- helpers ---------------------------------------------------------------------------------

    def _confirm(self, offset: int | None) -> None:
        if offset is None:
            return
        if offset < 0:  # the last -offset updates; everything before them is forgotten
            self._pending = self._pending[offset:]
        else:
            self._pending = [u for u in self._pending if u["update_id"] >= offset]

    def _chat(self, chat: int) -> dict[str, Any]:
        if chat < 0:
            return {"id": chat, "type": "group", "title": "Sandbox group"}
        return {"id": chat, "first_name": self._names.get(chat, DEFAULT_NAME), "type": "private"}

    def _person(self, chat: int) -> dict[str, Any]:
        return {"id": chat, "is_bot": False, "first_name": self._names.get(chat, DEFAULT_NAME)}

    def _new_message(self, chat: int, *, outbound: bool, content: Mapping[str, Any]) -> dict[str, Any]:
        message_id = self._last_message_id.get(chat, 0) + 1
        self._last_message_id[chat] = message_id
        message = {
            "message_id": message_id,
            "from": self.user if outbound else self._person(chat),
            "chat": self._chat(chat),
            "date": int(self._clock()),
            **content,
        }
        self._messages[f"{chat}:{message_id}"] = message
        return message

    @staticmethod
    def _record(
        message: Mapping[str, Any],
        *,
        outbound: bool,
        type_: str,
        text: str | None,
        url: str | None = None,
        name: Any = None,
        size: Any = None,
    ) -> Message:
        chat = message["chat"]["id"]
        return Message(
            channel=Channel.TELEGRAM,
            platform_message_id=f"{chat}:{message['message_id']}",  # what Chat4All's connector records
            peer=str(chat),
            outbound=outbound,
            type=type_,
            text=text,
            at=float(message["date"]),
            document_url=url,
            file_name=name if isinstance(name, str) else None,
            file_size=size if isinstance(size, int) else None,
        )

    def _replied(self, chat: int, reply_to: str) -> dict[str, Any]:
        replied = self._messages.get(reply_to)
        if replied is None or replied["chat"]["id"] != chat:
            raise InvalidControl(f"reply_to {reply_to!r} is no message of telegram chat {chat}")
        return {k: v for k, v in replied.items() if k != "reply_to_message"}  # Telegram nests one level only

    def _document(self, value: Any, uploads: Mapping[str, Upload]) -> tuple[dict[str, Any], str | None]:
        if isinstance(value, str) and value.startswith("attach://"):
            upload = uploads.get(value.removeprefix("attach://"))
        else:
            upload = uploads.get("document")
        if upload is not None:
            return self._new_file(upload.filename, upload.content_type, upload.size), None
        if isinstance(value, str) and value.startswith(("http://", "https://")):
            name = value.rsplit("/", 1)[-1].split("?", 1)[0] or "document"
            return self._new_file(name, "application/octet-stream", None), value
        if isinstance(value, str) and value in self._files:
            return self._files[value], None
        raise bad_request("wrong file identifier/HTTP URL specified")

    def _new_file(self, name: str, mime: str, size: int | None) -> dict[str, Any]:
        document: dict[str, Any] = {
            "file_name": name,
            "mime_type": mime,
            "file_id": "BQACAgEAAxkBAAI" + _b64(24),
            "file_unique_id": "AgAD" + _b64(8),
        }
        if size is not None:
            document["file_size"] = size
        self._files[document["file_id"]] = document
        return document


def _flag(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() in {"true", "1"})


def _int_param(params: Mapping[str, Any], name: str, default: int | None) -> int | None:
    value = params.get(name)
    if value is None or value == "":
        return default
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise bad_request(f"invalid {name} specified")
    try:
        return int(value)
    except ValueError:
        raise bad_request(f"invalid {name} specified") from None


def _chat_id(params: Mapping[str, Any]) -> int:
    value = params.get("chat_id")
    if value is None or value == "":
        raise bad_request("chat_id is empty")
    if isinstance(value, bool) or not isinstance(value, int | str) or not _CHAT_ID.fullmatch(str(value)):
        raise bad_request("chat not found")  # a @username: the sandbox knows no public chats
    return int(value)


# --- Graph (WhatsApp, Messenger, Instagram) request checks ---------------------------------------


def _required(body: Mapping[str, Any], name: str) -> Any:
    value = body.get(name)
    if value is None or value in ("", {}):
        raise invalid_parameter(f"The parameter {name} is required.")
    return value


def _whatsapp_number(value: Any) -> str:
    match = _WA_NUMBER.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise invalid_parameter("Param to must be a valid WhatsApp phone number (E.164 digits).")
    return match.group(1)


def _whatsapp_text(value: Any) -> str:
    body = value.get("body") if isinstance(value, dict) else None
    if not isinstance(body, str) or not body:
        raise invalid_parameter("The parameter text['body'] is required.")
    if len(body) > _TEXT_LIMITS[Channel.WHATSAPP]:
        raise invalid_parameter("Param text['body'] must be at most 4096 characters long.")
    return body


def _whatsapp_document(value: Any) -> tuple[str | None, str | None, str | None]:
    """(caption, link, filename) of a ``document`` object that names its file by ``link`` or ``id``."""
    if not isinstance(value, dict):
        raise invalid_parameter("The parameter document is required.")
    link, media_id = value.get("link"), value.get("id")
    if not (isinstance(link, str) and link.startswith(("http://", "https://"))) and not (
        isinstance(media_id, str) and media_id
    ):
        raise invalid_parameter("Param document must have a link (an HTTP(S) URL) or an id.")
    caption, filename = value.get("caption"), value.get("filename")
    return (
        caption if isinstance(caption, str) and caption else None,
        link if isinstance(link, str) else None,
        filename if isinstance(filename, str) else None,
    )


def _callback_data(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value.encode()) > 512:
        raise invalid_parameter("Param biz_opaque_callback_data must be a string of at most 512 bytes.")
    return value


def _meta_metadata(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > _METADATA_LIMIT:
        raise invalid_parameter(f"Param message[metadata] must be a string of at most {_METADATA_LIMIT} characters.")
    return value


def _meta_recipient(body: Mapping[str, Any]) -> str:
    recipient = _required(body, "recipient")
    scoped = recipient.get("id") if isinstance(recipient, dict) else None
    scoped = str(scoped) if isinstance(scoped, int) and not isinstance(scoped, bool) else scoped
    if not isinstance(scoped, str) or not _SCOPED_ID.fullmatch(scoped):
        raise graph_error(400, 100, "(#100) No matching user found", subcode=2018001)
    return scoped


def _meta_messaging_type(body: Mapping[str, Any]) -> None:
    kind = body.get("messaging_type")
    if kind is not None and kind not in _MESSAGING_TYPES:
        raise invalid_parameter("Param messaging_type must be one of {RESPONSE, UPDATE, MESSAGE_TAG}.")
    if kind == "MESSAGE_TAG" and not body.get("tag"):
        raise invalid_parameter("Param tag is required when messaging_type is MESSAGE_TAG.")


def _meta_text(channel: Channel, text: Any) -> str:
    if not isinstance(text, str) or not text:
        raise invalid_parameter("param message[text] must be non-empty.")
    limit = _TEXT_LIMITS[channel]
    if (len(text.encode()) if channel is Channel.INSTAGRAM else len(text)) > limit:  # Instagram counts bytes
        raise invalid_parameter(f"Length of param message[text] must be less than or equal to {limit}")
    return text


def _meta_attachment(value: Any) -> tuple[str, str | None]:
    """(type, url) of ``message.attachment``; a reusable ``attachment_id`` names no URL."""
    kind = value.get("type") if isinstance(value, dict) else None
    payload = value.get("payload") if isinstance(value, dict) else None
    if kind not in _META_ATTACHMENTS or not isinstance(payload, dict):
        raise invalid_parameter("param message[attachment] must have a type (image, audio, video, file) and payload.")
    url, attachment_id = payload.get("url"), payload.get("attachment_id")
    if isinstance(url, str) and url.startswith(("http://", "https://")):
        return ("document" if kind == "file" else str(kind)), url
    if isinstance(attachment_id, str | int) and str(attachment_id):
        return ("document" if kind == "file" else str(kind)), None
    raise invalid_parameter("param message[attachment][payload] must have a url or an attachment_id.")


class Sandbox:
    """Everything the sandbox remembers, and the platforms' rules for what may come in and what goes out.

    The app calls it from one event loop, so plain dicts and lists suffice.
    """

    def __init__(
        self,
        config: SandboxConfig,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._clock = clock
        self._monotonic = monotonic
        self.telegram = TelegramBot(config, clock)
        self.behaviour = Behaviour()
        self._faults: dict[Channel, Faults] = {}
        self._buckets: dict[Channel, TokenBucket] = {}
        self._rng = random.Random(config.seed)  # noqa: S311 - fault draws, not secrets: seedable on purpose
        self._messages: list[Message] = []
        self._index: dict[tuple[Channel, str], Message] = {}
        self.reset()

    # --- the control API --------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget every message and pending update; faults and behaviour back to their defaults."""
        self.behaviour = Behaviour()
        self._faults = {channel: Faults() for channel in SERVED}
        self._buckets.clear()
        self._rng.seed(self.config.seed)
        self._messages.clear()
        self._index.clear()
        self.telegram.reset()

    def configured(self, channel: Channel) -> bool:
        c = self.config
        return bool(
            {
                Channel.WHATSAPP: c.whatsapp_access_token and c.whatsapp_phone_number_id,
                Channel.MESSENGER: c.messenger_page_token,
                Channel.INSTAGRAM: c.instagram_access_token,
                Channel.TELEGRAM: c.telegram_bot_token,
            }.get(channel)
        )

    def account_id(self, channel: Channel) -> str:
        """The business side's id in webhooks: the page, Instagram account or phone number id (or the bot's id)."""
        c = self.config
        if channel is Channel.WHATSAPP:
            return c.whatsapp_phone_number_id or ""
        if channel is Channel.MESSENGER:
            return MESSENGER_PAGE_ID if c.messenger_page_id == "me" else c.messenger_page_id
        if channel is Channel.INSTAGRAM:
            return INSTAGRAM_ACCOUNT_ID if c.instagram_account_id == "me" else c.instagram_account_id
        return str(self.telegram.user["id"])

    def messages(
        self, channel: Channel | None = None, to: str | None = None, *, inbound: bool = False
    ) -> list[Message]:
        """What the platforms accepted from Chat4All (with ``inbound``, also what people wrote), oldest first.

        ``to`` names the person either way: the recipient of a send, the sender of an inbound message.
        """
        return [
            m
            for m in self._messages
            if (m.outbound or inbound) and (channel is None or m.channel is channel) and (to is None or m.to == to)
        ]

    def faults(self, channel: Channel) -> Faults:
        return self._faults[channel]

    def set_faults(self, channel: Channel, changes: Mapping[str, Any]) -> Faults:
        faults = attrs.evolve(self._faults[channel], **changes)
        self._faults[channel] = faults
        if "rate_limit_per_s" in changes:
            self._buckets.pop(channel, None)  # a new limit starts with a full bucket
        return faults

    def set_behaviour(self, changes: Mapping[str, Any]) -> Behaviour:
        self.behaviour = attrs.evolve(self.behaviour, **changes)
        return self.behaviour

    # --- faults on the platform APIs --------------------------------------------------------------

    def check_faults(self, channel: Channel, *, send: bool) -> None:
        """Raise what a down, throttling or flaky platform answers; only sends are throttled or fail at random."""
        faults = self._faults[channel]
        if faults.down:
            raise PlatformError(503, "Service Unavailable")
        if not send:
            return
        if faults.rate_limit_per_s is not None:
            now = self._monotonic()
            bucket = self._buckets.setdefault(channel, TokenBucket.full(faults.rate_limit_per_s, now))
            wait = bucket.take(now)
            if wait > 0:
                raise _rate_limited(channel, max(1, math.ceil(wait)))
        if faults.error_rate > 0 and self._rng.random() < faults.error_rate:
            raise _platform_fault(channel)

    # --- Graph: WhatsApp Cloud API and the Send API -----------------------------------------------

    def graph_channel(self, token: str | None, node: str) -> Channel:
        """Which platform a ``POST /<version>/<node>/messages`` with ``token`` talks to (the token tells)."""
        c = self.config
        known_token = False
        if self.configured(Channel.WHATSAPP) and token == c.whatsapp_access_token:
            known_token = True
            if node == c.whatsapp_phone_number_id:
                return Channel.WHATSAPP
        for channel, channel_token in (
            (Channel.MESSENGER, c.messenger_page_token),
            (Channel.INSTAGRAM, c.instagram_access_token),
        ):
            if channel_token and token == channel_token:
                known_token = True
                if node in self._graph_nodes(channel):
                    return channel
        if known_token:
            raise invalid_parameter(
                f"Unsupported post request. Object with ID '{node}' does not exist, cannot be loaded due to "
                "missing permissions, or does not support this operation.",
                subcode=33,
            )
        raise graph_error(401, 190, "Invalid OAuth access token - Cannot parse access token")

    def whatsapp_send(self, body: Mapping[str, Any]) -> tuple[dict[str, Any], Message | None]:
        """A Cloud API ``/messages`` call: a text or document send, or marking an inbound message read."""
        if body.get("messaging_product") != "whatsapp":
            raise invalid_parameter("The parameter messaging_product is required and must be 'whatsapp'.")
        if "status" in body:
            return self._whatsapp_mark_read(body), None
        number = _whatsapp_number(_required(body, "to"))
        if body.get("recipient_type", "individual") != "individual":
            raise invalid_parameter("Param recipient_type must be 'individual' in the sandbox.")
        kind = body.get("type", "text")
        document_url = file_name = None
        if kind == "text":
            text: str | None = _whatsapp_text(body.get("text"))
        elif kind == "document":
            text, document_url, file_name = _whatsapp_document(body.get("document"))
        else:
            raise invalid_parameter(f"Param type {kind!r} is not supported by the sandbox (text, document).")
        message = self._remember(
            Message(
                channel=Channel.WHATSAPP,
                platform_message_id="wamid.HBgM" + _b64(30),
                peer=number,
                outbound=True,
                type=str(kind),
                text=text,
                at=self._clock(),
                document_url=document_url,
                file_name=file_name,
                callback_data=_callback_data(body.get("biz_opaque_callback_data")),
            )
        )
        answer = {
            "messaging_product": "whatsapp",
            "contacts": [{"input": body["to"], "wa_id": number}],
            "messages": [{"id": message.platform_message_id}],
        }
        return answer, message

    def meta_send(self, channel: Channel, body: Mapping[str, Any]) -> tuple[dict[str, Any], Message]:
        """A Send API call (Messenger or Instagram): a text or an attachment to a scoped id."""
        scoped = _meta_recipient(body)
        _meta_messaging_type(body)
        content = _required(body, "message")
        if not isinstance(content, dict) or ("text" in content) == ("attachment" in content):
            raise invalid_parameter("param message must have exactly one of text or attachment.")
        document_url = None
        if "text" in content:
            kind, text = "text", _meta_text(channel, content["text"])
        else:
            (kind, document_url), text = _meta_attachment(content["attachment"]), None
        metadata = _meta_metadata(content.get("metadata"))
        message = self._remember(
            Message(
                channel=channel,
                platform_message_id=self._meta_mid(channel),
                peer=scoped,
                outbound=True,
                type=kind,
                text=text,
                at=self._clock(),
                document_url=document_url,
                callback_data=metadata,
            )
        )
        return {"recipient_id": scoped, "message_id": message.platform_message_id}, message

    # --- Telegram ---------------------------------------------------------------------------------

    async def telegram_call(
        self, method: str, params: Mapping[str, Any], uploads: Mapping[str, Upload]
    ) -> tuple[dict[str, Any], list[Webhook]]:
        """A Bot API method (lower-cased name): its answer, and updates a new webhook now receives."""
        bot = self.telegram
        if method == "sendmessage":
            result, message = bot.send_message(params)
            self._remember(message)
        elif method == "senddocument":
            result, message = bot.send_document(params, uploads)
            self._remember(message)
        elif method == "getupdates":
            return {"ok": True, "result": await bot.get_updates(params)}, []
        elif method == "getme":
            return {"ok": True, "result": bot.get_me()}, []
        elif method == "setwebhook":
            pending = bot.set_webhook(params)
            hooks = [hook for update in pending if (hook := bot.webhook(update)) is not None]
            said = "Webhook was set" if bot.webhook_url else "Webhook was deleted"
            return {"ok": True, "result": True, "description": said}, hooks
        elif method == "deletewebhook":
            bot.delete_webhook(params)
            return {"ok": True, "result": True, "description": "Webhook was deleted"}, []
        elif method == "getwebhookinfo":
            return {"ok": True, "result": bot.webhook_info()}, []
        else:
            raise telegram_error(404, "Not Found")
        return {"ok": True, "result": result}, []

    # --- the external person's side ---------------------------------------------------------------

    def inbound(
        self, channel: Channel, sender: str, text: str, *, reply_to: str | None = None, name: str | None = None
    ) -> tuple[Message, Webhook | None]:
        """A text from ``sender`` to the business; the webhook that tells Chat4All (None: queued for getUpdates)."""
        if not self.configured(channel):
            raise InvalidControl(f"{channel.value} is not configured in the sandbox (its credentials are not set)")
        if not text.strip() or len(text) > 4096:
            raise InvalidControl("text must be 1 to 4096 characters")
        if channel is Channel.TELEGRAM:
            update, message = self.telegram.inbound(sender, text, reply_to=reply_to, name=name)
            self._remember(message)
            return message, self.telegram.webhook(update)
        if channel is Channel.WHATSAPP:
            return self._whatsapp_inbound(sender, text, reply_to, name or DEFAULT_NAME)
        return self._meta_inbound(channel, sender, text, reply_to)

    # --- receipts ---------------------------------------------------------------------------------

    def receipt_kinds(self, message: Message) -> tuple[str, ...]:
        """The receipts a platform reports for an accepted send, as the current behaviour says people act."""
        b = self.behaviour
        delivered = (RECEIPTS_DELIVERED,) if b.auto_deliver else ()
        read = (RECEIPTS_READ,) if b.auto_read else ()
        # Meta echoes every send of the page; the sandbox echoes those that asked for it (with metadata).
        echo = (ECHO,) if message.callback_data is not None else ()
        if message.channel is Channel.WHATSAPP:
            return (RECEIPTS_SENT, *delivered, *read)  # a read alone implies delivered (channels.md 3.1)
        if message.channel is Channel.MESSENGER:
            return (*echo, *delivered, *read)
        if message.channel is Channel.INSTAGRAM:
            return (*echo, *read)  # Instagram has no delivery webhooks
        return ()  # Telegram bots get no receipts

    def receipt(self, message: Message, kind: str) -> Webhook:
        """The webhook that reports ``kind`` for ``message``, timed now."""
        now = self._clock()
        if message.channel is Channel.WHATSAPP:
            status = self._whatsapp_status(message, kind, now)
            return self._whatsapp_webhook(kind, {"statuses": [status]}, message.peer)
        if kind == ECHO:
            return self._messaging_webhook(message.channel, kind, self._echo(message), now)
        sender, page = {"id": message.peer}, {"id": self.account_id(message.channel)}
        event: dict[str, Any] = {"sender": sender, "recipient": page, "timestamp": int(now * 1000)}
        if message.channel is Channel.INSTAGRAM:
            event["read"] = {"mid": message.platform_message_id}  # messaging_seen
        elif kind == RECEIPTS_DELIVERED:
            event["delivery"] = {"mids": [message.platform_message_id], "watermark": int(message.at * 1000)}
        else:
            event["read"] = {"watermark": int(message.at * 1000)}
        return self._messaging_webhook(message.channel, kind, event, now)

    def merge(self, hooks: Sequence[Webhook]) -> Webhook:
        """One POST that carries ``hooks`` (one channel, one URL), as Meta batches its webhooks.

        The entries of their envelopes follow one another in one ``entry`` array, in the order given, and the
        signature covers the merged bytes. Telegram does not batch: the Bot API posts one update per call.
        """
        first = hooks[0]
        if len(hooks) == 1:
            return first
        if first.channel not in BATCHED:
            raise ValueError(f"{first.channel.value} posts one update per webhook")
        if any(h.channel is not first.channel or h.url != first.url or h.envelope is None for h in hooks):
            raise ValueError("only updates of one channel, to one URL, can share a webhook")
        entries = [entry for hook in hooks for entry in (hook.envelope or {})["entry"]]
        merged = self._signed(
            first.channel, BATCH, {"object": (first.envelope or {})["object"], "entry": entries}, peer=""
        )
        return attrs.evolve(merged, url=first.url)

    # --- helpers ----------------------------------------------------------------------------------

    def _graph_nodes(self, channel: Channel) -> set[str]:
        """The path ids that name the page (or Instagram account): ``me``, the configured id and the one in webhooks."""
        configured = self.config.messenger_page_id if channel is Channel.MESSENGER else self.config.instagram_account_id
        return {"me", configured, self.account_id(channel)}

    def _remember(self, message: Message) -> Message:
        self._messages.append(message)
        self._index[(message.channel, message.platform_message_id)] = message
        return message

    def _meta_mid(self, channel: Channel) -> str:
        if channel is Channel.MESSENGER:
            return "m_" + _b64(48)
        item = f"ig_item:1:IGMessageID:{self.account_id(channel)}:{secrets.randbelow(10**38)}"
        return base64.urlsafe_b64encode(item.encode()).decode().rstrip("=")

    def _whatsapp_mark_read(self, body: Mapping[str, Any]) -> dict[str, Any]:
        if body.get("status") != "read":
            raise invalid_parameter("Param status must be 'read'.")
        message_id = body.get("message_id")
        if not isinstance(message_id, str) or not message_id:
            raise invalid_parameter("The parameter message_id is required.")
        return {"success": True}

    def _replied(self, channel: Channel, reply_to: str | None, peer: str) -> Message | None:
        if reply_to is None:
            return None
        replied = self._index.get((channel, reply_to))
        if replied is None or replied.peer != peer:
            raise InvalidControl(f"reply_to {reply_to!r} is no {channel.value} message of this conversation")
        return replied

    def _whatsapp_inbound(
        self, sender: str, text: str, reply_to: str | None, name: str
    ) -> tuple[Message, Webhook | None]:
        match = _WA_NUMBER.fullmatch(sender)
        if match is None:
            raise InvalidControl("a WhatsApp sender is an E.164 number such as +5511999998888")
        number = match.group(1)
        replied = self._replied(Channel.WHATSAPP, reply_to, number)
        now = self._clock()
        message = self._remember(
            Message(
                channel=Channel.WHATSAPP,
                platform_message_id="wamid.HBgM" + _b64(30),
                peer=number,
                outbound=False,
                type="text",
                text=text,
                at=now,
            )
        )
        said: dict[str, Any] = {
            "from": number,
            "id": message.platform_message_id,
            "timestamp": str(int(now)),
            "type": "text",
            "text": {"body": text},
        }
        if replied is not None:
            said["context"] = {
                "from": WHATSAPP_DISPLAY_NUMBER if replied.outbound else replied.peer,
                "id": replied.platform_message_id,
            }
        value = {"contacts": [{"profile": {"name": name}, "wa_id": number}], "messages": [said]}
        return message, self._whatsapp_webhook(INBOUND, value, number)

    def _meta_inbound(
        self, channel: Channel, sender: str, text: str, reply_to: str | None
    ) -> tuple[Message, Webhook | None]:
        if not _SCOPED_ID.fullmatch(sender):
            raise InvalidControl(f"a {channel.value} sender is a numeric scoped id (PSID or IGSID)")
        replied = self._replied(channel, reply_to, sender)
        now = self._clock()
        message = self._remember(
            Message(
                channel=channel,
                platform_message_id=self._meta_mid(channel),
                peer=sender,
                outbound=False,
                type="text",
                text=text,
                at=now,
            )
        )
        content: dict[str, Any] = {"mid": message.platform_message_id, "text": text}
        if replied is not None:
            content["reply_to"] = {"mid": replied.platform_message_id}
        event = {
            "sender": {"id": sender},
            "recipient": {"id": self.account_id(channel)},
            "timestamp": int(now * 1000),
            "message": content,
        }
        return message, self._messaging_webhook(channel, INBOUND, event, now)

    def _echo(self, message: Message) -> dict[str, Any]:
        """The echo of a send: from the page (or account) to the person, as sent, with the sender's ``metadata``."""
        content: dict[str, Any] = {
            "is_echo": True,
            "app_id": META_APP_ID,
            "metadata": message.callback_data,
            "mid": message.platform_message_id,
        }
        if message.type == "text":
            content["text"] = message.text
        else:
            payload = {"url": message.document_url} if message.document_url is not None else {}
            content["attachments"] = [
                {"type": "file" if message.type == "document" else message.type, "payload": payload}
            ]
        return {
            "sender": {"id": self.account_id(message.channel)},
            "recipient": {"id": message.peer},
            "timestamp": int(message.at * 1000),
            "message": content,
        }

    def _whatsapp_status(self, message: Message, kind: str, now: float) -> dict[str, Any]:
        status: dict[str, Any] = {
            "id": message.platform_message_id,
            "status": kind,
            "timestamp": str(int(now)),
            "recipient_id": message.peer,
        }
        if kind != RECEIPTS_READ:
            status["conversation"] = {
                "id": hashlib.sha256(f"conversation:{message.peer}".encode()).hexdigest()[:32],
                "expiration_timestamp": str(int(message.at) + 86400),
                "origin": {"type": "service"},
            }
            status["pricing"] = {"billable": True, "pricing_model": "CBP", "category": "service"}
        if message.callback_data is not None:
            status["biz_opaque_callback_data"] = message.callback_data
        return status

    def _whatsapp_webhook(self, kind: str, value: Mapping[str, Any], peer: str) -> Webhook:
        metadata = {
            "display_phone_number": WHATSAPP_DISPLAY_NUMBER,
            "phone_number_id": self.account_id(Channel.WHATSAPP),
        }
        change = {"field": "messages", "value": {"messaging_product": "whatsapp", "metadata": metadata, **value}}
        envelope = {
            "object": "whatsapp_business_account",
            "entry": [{"id": WHATSAPP_BUSINESS_ACCOUNT_ID, "changes": [change]}],
        }
        return self._signed(Channel.WHATSAPP, kind, envelope, peer=peer)

    def _messaging_webhook(self, channel: Channel, kind: str, event: Mapping[str, Any], now: float) -> Webhook:
        """Messenger's and Instagram's envelope: one entry per event, as Meta sends them (its ``messaging`` array
        holds a single event), so that a batch is the entries of its updates one after another."""
        entry = {"id": self.account_id(channel), "time": int(now * 1000), "messaging": [event]}
        envelope = {"object": "page" if channel is Channel.MESSENGER else "instagram", "entry": [entry]}
        person = event["recipient"] if kind == ECHO else event["sender"]
        return self._signed(channel, kind, envelope, peer=str(person["id"]))

    def _signed(self, channel: Channel, kind: str, payload: Mapping[str, Any], *, peer: str) -> Webhook:
        # Meta escapes non-ASCII characters (\u00e1) and signs those bytes: Chat4All must hash what it got.
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json"}
        secret = {
            Channel.WHATSAPP: self.config.whatsapp_app_secret,
            Channel.MESSENGER: self.config.messenger_app_secret,
            Channel.INSTAGRAM: self.config.instagram_app_secret,
        }.get(channel)
        if secret:
            headers["X-Hub-Signature-256"] = meta_signature(secret, body)
        url = f"{self.config.chat4all_url.rstrip('/')}/webhooks/{channel.value}"
        return Webhook(channel, kind, url, body, headers, peer=peer, envelope=payload)


def _rate_limited(channel: Channel, seconds: int) -> PlatformError:
    headers = {"Retry-After": str(seconds)}
    if channel is Channel.TELEGRAM:
        return telegram_error(429, f"Too Many Requests: retry after {seconds}", retry_after=seconds)
    if channel is Channel.WHATSAPP:
        return graph_error(
            429,
            130429,
            "(#130429) Rate limit hit",
            error_data={"messaging_product": "whatsapp", "details": "Cloud API message throughput has been reached."},
            headers=headers,
        )
    return graph_error(429, 613, "(#613) Calls to this api have exceeded the rate limit.", headers=headers)


def _platform_fault(channel: Channel) -> PlatformError:
    if channel is Channel.TELEGRAM:
        return telegram_error(500, "Internal Server Error")
    return graph_error(500, 2, "An unexpected error has occurred. Please retry your request later.", transient=True)
