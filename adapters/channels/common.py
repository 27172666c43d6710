"""What every platform connector does the same way: check the text or file to send, post JSON, read the answer,
tag a send with its delivery key (for the platform to echo) and read that tag back."""

from __future__ import annotations

import uuid
from typing import Any, Final

import attrs
import httpx

from application.ports import ChannelError, DeliveryKey, OutboundMessage
from domain.channels import Channel
from domain.ids import MessageId

SEND_LIMITS = httpx.Limits(max_connections=32, max_keepalive_connections=32, keepalive_expiry=30.0)
"""A channel worker sends to up to 32 conversations at once (``ChannelDeps.concurrency``): as many connections,
all kept open. httpx's default keeps 20, so the rest were opened and closed for every send, and its pool spent
most of the worker's CPU churning them."""


DELIVERY_TAG_PREFIX: Final = "c4a:"


def delivery_tag(delivery: DeliveryKey, *, max_bytes: int) -> str | None:
    """``c4a:<message id>:<recipient key>:<channel>``: what a connector attaches to a send for the platform to echo.

    The message id is a canonical UUID and the channel a ``Channel`` value (neither holds a ``:``),
    so the recipient key (``user:<uuid>`` or an address, which do) is what lies between them. None
    when it would not fit the platform's field (``max_bytes`` of UTF-8): the send then goes untagged.
    """
    message_id, recipient_key, channel = delivery
    tag = f"{DELIVERY_TAG_PREFIX}{message_id}:{recipient_key}:{channel.value}"
    return tag if len(tag.encode()) <= max_bytes else None


def delivery_of_tag(tag: str) -> DeliveryKey | None:
    """The delivery ``delivery_tag`` wrote into ``tag``; None when ``tag`` is not of that form (not ours)."""
    if not tag.startswith(DELIVERY_TAG_PREFIX):
        return None
    message_id, sep, rest = tag.removeprefix(DELIVERY_TAG_PREFIX).partition(":")
    recipient_key, sep2, channel = rest.rpartition(":")
    if not (sep and sep2 and recipient_key):
        return None
    try:
        return (MessageId(uuid.UUID(message_id)), recipient_key, Channel(channel))
    except ValueError:
        return None


def text_to_send(message: OutboundMessage, name: str, limit: int, *, in_bytes: bool = False) -> str:
    """The message's text, or a permanent ``ChannelError`` (no call is made) if it cannot go.

    ``limit`` counts characters, or UTF-8 bytes with ``in_bytes``.
    """
    payload = message.payload
    if payload.get("type") != "text":
        raise ChannelError(f"{name}: a {payload.get('type')!r} message is not a text", permanent=True)
    text = payload.get("text")
    if not isinstance(text, str) or not text or len(text.encode() if in_bytes else text) > limit:
        unit = "UTF-8 bytes" if in_bytes else "characters"
        raise ChannelError(f"{name}: a text is 1 to {limit} {unit}", permanent=True)
    return text


@attrs.frozen
class FileToSend:
    """A file message as a connector gets it: a short-lived link to fetch the file from, and its description."""

    url: str
    filename: str
    size: int
    content_type: str
    caption: str | None


def file_to_send(message: OutboundMessage, name: str) -> FileToSend | None:
    """The file the message carries, None for a text, or a permanent ``ChannelError`` for a malformed one."""
    payload = message.payload
    if payload.get("type") != "file":
        return None
    url, filename, size = payload.get("url"), payload.get("filename"), payload.get("size")
    content_type, caption = payload.get("content_type"), payload.get("caption")
    if not (
        isinstance(url, str)
        and url.startswith(("http://", "https://"))
        and isinstance(filename, str)
        and filename
        and isinstance(size, int)
        and isinstance(content_type, str)
        and (caption is None or isinstance(caption, str))
    ):
        raise ChannelError(f"{name}: a file message needs a url, filename, size and content type", permanent=True)
    return FileToSend(url, filename, size, content_type, caption or None)


async def post_json(client: httpx.AsyncClient, path: str, body: dict[str, Any], *, what: str) -> httpx.Response:
    """POST ``body``; a timeout or a broken connection is a ``ChannelError`` worth retrying."""
    try:
        return await client.post(path, json=body)
    except httpx.TimeoutException as e:
        raise ChannelError(f"{what} timed out") from e
    except httpx.HTTPError as e:
        raise ChannelError(f"{what} failed: {type(e).__name__}") from e


def json_object(response: httpx.Response) -> dict[str, Any] | None:
    """The answer's JSON object, or None when it is not one (a proxy's error page)."""
    try:
        answer = response.json()
    except ValueError:
        return None
    return answer if isinstance(answer, dict) else None
