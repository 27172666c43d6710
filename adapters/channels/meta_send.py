"""Meta's Send API, shared by Messenger and Instagram: ``POST <base>/<version>/<id>/messages``.

Shapes (``../shared/design/channels.md`` 3.3 and 3.4): the body names the recipient by its
scoped id, ``{"recipient": {"id": "<PSID or IGSID>"}, "message": {"text": "..."}}`` or
``"message": {"attachment": {"type": "image|video|audio|file", "payload": {"url", "is_reusable"}}}``
(Messenger adds ``messaging_type``); success is ``{"recipient_id": "...", "message_id": "..."}``, failure a
Graph error ``{"error": {"message": "...", "type": "OAuthException", "code": N,
"error_subcode": M, "is_transient": bool, "fbtrace_id": "..."}}``.

Each send carries its delivery key in ``message.metadata`` (a string of at most 1000 characters,
``c4a:<message id>:<recipient key>:<channel>``, see ``adapters/channels/common.py``), which the
platform echoes back in the ``message_echoes`` webhook (Instagram: ``messages`` with ``is_echo``)
with its ``mid`` for the send: a sent confirmation, which settles a send whose answer was lost
(its worker died) without sending it again. A file with a caption goes as two messages; only the
last, the attachment whose ``mid`` is recorded, carries the key, so that an echoed caption never
passes for the whole delivery.

The token goes in an ``Authorization: Bearer`` header, which Graph accepts as it accepts the
``access_token`` query parameter of channels.md's Facebook-Login example: kept out of URLs, it
cannot leak through a logged URL, and it is blanked out of every error reason.

Graph reuses its error codes across products and often answers a rate limit with a 400 or a 403,
so the code decides before the HTTP status does:

- rate limits (HTTP 429; codes 4 application, 17 account, 32 page, 613 custom, 80001/80002/80006
  the Pages/Instagram/Messenger business-use-case limits) are retried, after ``Retry-After``
  seconds when the answer carries that header;
- temporary failures (code 2 "retry your request later", 1200 "temporary send message
  failure", or ``is_transient: true``) are retried;
- the recipient or the page cannot be messaged (10 permission, e.g. subcode 2018278 "sent
  outside of allowed window"; 100 invalid parameter, e.g. "no matching user"; 190 invalid
  token; 200-299 permissions, e.g. 200/1545041; 551 "this person isn't available") fail for
  good, as does any other 4xx: repeating the request cannot help;
- 5xx, timeouts, broken connections and answers that are not Graph's JSON are retried.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import httpx

from adapters.channels.common import FileToSend, delivery_tag, file_to_send, json_object, post_json, text_to_send
from adapters.channels.graph import GRAPH_API_VERSION, GRAPH_BASE_URL, graph_client, graph_code, retry_after
from application.attachments import shortened
from application.ports import ChannelCapabilities, ChannelError, DeliveryKey, OutboundMessage
from domain.channels import Channel

RATE_LIMIT_CODES = frozenset({4, 17, 32, 613, 80001, 80002, 80006})
"""Graph error codes of a throttled caller: retry later."""
TRANSIENT_CODES = frozenset({2, 1200})
"""Graph error codes that ask to retry the same request later."""
PERMANENT_CODES = frozenset({10, 100, 190, 551, *range(200, 300)})
"""Graph error codes of a send that cannot succeed if repeated (outside the window, unknown
recipient, unavailable person, missing permission, invalid token)."""

METADATA_MAX_CHARACTERS = 1000
"""The Send API's limit on ``message.metadata``, the string echoed back in ``message_echoes``."""

IMAGE_BY_URL_BYTES = 8 * 1024 * 1024
"""Images sent by URL are at most 8 MB; a larger one goes as a plain file."""

_ACCOUNT_ID = re.compile(r"[0-9A-Za-z_]+")  # numeric ids, or "me" for the token's own account
_SCOPED_ID = re.compile(r"[0-9]{1,64}")  # PSIDs and IGSIDs are numeric strings


class MetaSendConnector:
    """Sends as one Page (or Instagram professional account) through Graph's Send API.

    Subclasses set the channel, its capabilities and its platform's quirks; ``base_url`` points
    at Graph, the sandbox or a proxy, ``api_version`` at a Graph version such as ``v25.0``.
    """

    channel: Channel
    capabilities: ChannelCapabilities
    _account_kind = "page id"
    _recipient_kind = "a page-scoped id"
    _text_limit_in_bytes = False  # Messenger counts characters, Instagram UTF-8 bytes

    def __init__(
        self,
        page_access_token: str,
        page_id: str,
        *,
        base_url: str = GRAPH_BASE_URL,
        api_version: str = GRAPH_API_VERSION,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        title = self.channel.value.capitalize()
        if not page_access_token:
            raise ValueError(f"a {title} connector needs a page access token")
        if not page_id or not _ACCOUNT_ID.fullmatch(page_id):
            raise ValueError(f"a {title} connector needs a {self._account_kind} (letters and digits only)")
        version = api_version.strip("/")
        if not version:
            raise ValueError(f"a {title} connector needs a Graph API version such as {GRAPH_API_VERSION}")
        self._token = page_access_token
        self._path = f"/{page_id}/messages"
        self._client = graph_client(
            page_access_token, base_url=base_url, api_version=version, timeout=timeout, transport=transport
        )

    async def send(self, message: OutboundMessage) -> str:
        name = self.channel.value
        limit = self.capabilities.max_text_length
        recipient = message.to.external_id
        if not _SCOPED_ID.fullmatch(recipient):
            # The Send API only knows the scoped id the platform gave us in a webhook, never a handle.
            raise ChannelError(f"{name}: {recipient!r} is not {self._recipient_kind}", permanent=True)
        # Our key, for the platform to echo (ASCII: its characters are its bytes); too long, the send goes untagged.
        tag = delivery_tag(message.delivery, max_bytes=METADATA_MAX_CHARACTERS)
        tagged = {"metadata": tag} if tag is not None else {}
        if (file := file_to_send(message, name)) is None:
            text = text_to_send(message, name, limit, in_bytes=self._text_limit_in_bytes)
            return await self._send(recipient, {"text": text, **tagged})
        if file.caption:
            # An attachment carries no caption: it goes just before, as a text (untagged: its echo must
            # not pass for the attachment's). Should the attachment then fail, the retry sends the
            # caption again (at least once, never lost).
            await self._send(recipient, {"text": shortened(file.caption, limit, in_bytes=self._text_limit_in_bytes)})
        attachment = {"type": _attachment_type(file), "payload": {"url": file.url, "is_reusable": False}}
        return await self._send(recipient, {"attachment": attachment, **tagged})

    async def find_sent(self, delivery: DeliveryKey) -> str | None:
        return None  # the Send API cannot look a message up

    async def close(self) -> None:
        await self._client.aclose()

    async def _send(self, recipient: str, content: dict[str, Any]) -> str:
        answer = await self._post(self._body(recipient, content))
        message_id = answer.get("message_id")
        if not isinstance(message_id, str) or not message_id:
            raise ChannelError(f"{self.channel.value}: the answer carried no message_id")
        return message_id  # the "mid" that delivery and read webhooks name

    def _body(self, recipient: str, content: dict[str, Any]) -> dict[str, Any]:
        return {"recipient": {"id": recipient}, "message": content}

    async def _post(self, body: dict[str, Any]) -> Mapping[str, Any]:
        name = self.channel.value
        response = await post_json(self._client, self._path, body, what=f"{name}: the Send API")
        answer = json_object(response)
        if answer is None:
            # Not Graph speaking (a proxy's error page): retry.
            raise ChannelError(f"{name}: HTTP {response.status_code} without a Graph API answer")
        error = answer.get("error")
        if response.is_success and error is None:
            return answer
        raise self._failure(response, error if isinstance(error, dict) else {})

    def _failure(self, response: httpx.Response, error: Mapping[str, Any]) -> ChannelError:
        status = response.status_code
        code = graph_code(error.get("code"))
        subcode = graph_code(error.get("error_subcode"))
        said = error.get("message")
        reason = f"{self.channel.value}: {said if isinstance(said, str) and said else f'HTTP {status}'}"
        if code is not None:
            reason += f" (code {code}" + (f", subcode {subcode})" if subcode is not None else ")")
        reason = reason.replace(self._token, "***")
        if status == 429 or code in RATE_LIMIT_CODES:
            return ChannelError(reason, retry_after=retry_after(response))
        if code in TRANSIENT_CODES or error.get("is_transient") is True:
            return ChannelError(reason)
        if code in PERMANENT_CODES or 400 <= status < 500:
            return ChannelError(reason, permanent=True)
        return ChannelError(reason)


def _attachment_type(file: FileToSend) -> str:
    """The Send API's attachment type for a file: image, video, audio, or file."""
    family = file.content_type.partition("/")[0]
    if family == "image":
        return "image" if file.size <= IMAGE_BY_URL_BYTES else "file"
    return family if family in ("video", "audio") else "file"
