"""File messages on the platforms: sent as the platform's attachment, or as a text with a download link.

A file message's job names the file (``file_id``, filename, size, content type, caption). Before a
channel worker hands it to a connector, ``Attachments.prepare`` decides by the platform's
capabilities (``ChannelCapabilities.attaches``: does it take files, up to what size, of which
types): a file it takes goes as ``{"type": "file", "url", ...}`` with a short-lived link the
platform fetches at once; any other file (2 GiB is allowed here, 25 MB on Messenger) goes as a
text with the caption, the file's name and size, and a link that stays valid for days, since a
person follows it whenever they read the message.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import attrs

from application.ports import ChannelCapabilities, ChannelError, Clock, ObjectStore, OutboundMessage, UnitOfWork
from domain.ids import FileId
from domain.uploads import UploadStatus


@attrs.frozen
class AttachmentSettings:
    attachment_link_ttl: timedelta = timedelta(hours=1)
    """How long the platform has to fetch a file sent as an attachment."""
    text_link_ttl: timedelta = timedelta(days=7)
    """How long a link sent in a text works (S3 presigns at most 7 days)."""


@attrs.frozen
class Attachments:
    """Turns a file job into what a connector sends (see the module's docstring)."""

    uow: Callable[[], UnitOfWork]
    store: ObjectStore
    clock: Clock
    settings: AttachmentSettings = AttachmentSettings()

    async def prepare(self, message: OutboundMessage, capabilities: ChannelCapabilities) -> OutboundMessage:
        """The message as the connector sends it: texts as they are, files as an attachment or a link.

        Raises:
            ChannelError: permanent, when the file is no longer there to send.
        """
        payload = message.payload
        if payload.get("type") != "file":
            return message
        try:
            file_id = FileId(UUID(str(payload.get("file_id"))))
        except ValueError:
            raise ChannelError("the job names no file", permanent=True) from None
        async with self.uow() as uow:
            upload = await uow.uploads.get(file_id)
        if upload is None or upload.status is not UploadStatus.COMPLETED or upload.blob_key is None:
            raise ChannelError("the file is no longer stored", permanent=True)
        caption = payload.get("caption") if isinstance(payload.get("caption"), str) else None
        attach = capabilities.attaches(upload.content_type, upload.size)
        ttl = self.settings.attachment_link_ttl if attach else self.settings.text_link_ttl
        url = await self.store.download_url(
            upload.blob_key, filename=upload.filename, content_type=upload.content_type, expires_in=ttl
        )
        if attach:
            sent: dict[str, Any] = {
                "type": "file",
                "url": url,
                "filename": upload.filename,
                "size": upload.size,
                "content_type": upload.content_type,
            }
            if caption:
                sent["caption"] = caption
            return attrs.evolve(message, payload=sent)
        text = link_text(
            caption,
            filename=upload.filename,
            size=upload.size,
            url=url,
            until=self.clock.now() + ttl,
            limit=capabilities.max_text_length,
        )
        return attrs.evolve(message, payload={"type": "text", "text": text})


def link_text(caption: str | None, *, filename: str, size: int, url: str, until: datetime, limit: int) -> str:
    """The text that carries a file as a link, at most ``limit`` UTF-8 bytes (so also characters).

    The caption is shortened first, then the filename; the link never is.

    Raises:
        ChannelError: permanent, when the link alone does not fit.
    """
    tail = f" ({human_size(size)}, link valid until {until:%Y-%m-%d %H:%M} UTC): {url}"
    room = limit - len(tail.encode())
    if room < 1:
        raise ChannelError(f"a download link does not fit in a text of {limit}", permanent=True)
    name = shortened(filename, room)
    room -= len(name.encode())
    head = shortened(caption, room - 1) + "\n" if caption and room > 1 else ""
    return head + name + tail


def shortened(text: str, limit: int, *, in_bytes: bool = True) -> str:
    """``text`` within ``limit`` UTF-8 bytes (or characters), ending in an ellipsis when cut."""
    if len(text.encode() if in_bytes else text) <= limit:
        return text
    if not in_bytes:
        return text[: max(limit - 1, 0)] + "…" if limit >= 1 else ""
    cut = text.encode()[: max(limit - 3, 0)].decode(errors="ignore")  # the ellipsis is 3 bytes
    return cut + "…" if limit >= 3 else cut


def human_size(size: int) -> str:
    """1536 -> "1.5 KB", in powers of 1024 as file managers show them."""
    if size < 1024:
        return f"{size} bytes"
    value = size / 1024
    for unit in ("KB", "MB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"
