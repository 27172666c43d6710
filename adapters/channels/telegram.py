"""Telegram Bot API: ``sendMessage`` to a chat, with the platform's answers mapped to our outcomes.

Shapes (``../shared/design/channels.md`` 3.2): requests go to ``<base>/bot<token>/<method>``;
success is ``{"ok": true, "result": {...}}``, failure ``{"ok": false, "error_code": N,
"description": "...", "parameters": {"retry_after": S}}``. Flood control is a 429 with
``parameters.retry_after``; a blocked bot, an unknown chat or a bad request are 400/403 and will
not succeed if repeated; 5xx, timeouts and broken connections are worth retrying.

Bots get no delivery or read receipts: a delivery handed to Telegram stays SENT, and that is
final. Telegram cannot be asked whether it already has a message, so a send whose answer was
lost cannot be settled by a lookup (the pipeline's ledger decides, see ``ChannelCapabilities``).
"""

from __future__ import annotations

from typing import Any

import httpx

from adapters.channels.common import json_object, post_json, text_to_send
from application.ports import ChannelCapabilities, ChannelError, DeliveryKey, OutboundMessage
from domain.channels import Channel

CAPABILITIES = ChannelCapabilities(
    receipts=False,
    lookup=False,
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
            base_url=f"{base_url.rstrip('/')}/bot{bot_token}", timeout=timeout, transport=transport
        )

    async def send(self, message: OutboundMessage) -> str:
        text = text_to_send(message, "telegram", self.capabilities.max_text_length)
        result = await self._call("sendMessage", {"chat_id": message.to.external_id, "text": text})
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
        response = await post_json(self._client, f"/{method}", body, what=f"telegram: {method}")
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
