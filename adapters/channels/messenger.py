"""Messenger Platform: the Send API to a page-scoped id (PSID), as one Facebook Page.

Shapes (``../shared/design/channels.md`` 3.3): ``POST <base>/v25.0/<PAGE_ID>/messages`` with the
Page access token and ``{"recipient": {"id": "<PSID>"}, "messaging_type": "RESPONSE",
"message": {"text": "..."}}``; the answer is ``{"recipient_id": "<PSID>", "message_id": "..."}``.
Graph errors are mapped as ``adapters/channels/meta_send.py`` describes.

Every send is a ``RESPONSE`` and carries no message tag. A Page may answer freely within 24 hours
of the person's last message; outside that window Messenger wants a tag, and a tag vouches for
an approved use case (an account update, a confirmed event, a post-purchase update, a human
agent's reply) and for content that is not promotional. The connector relays whatever a
conversation member wrote and cannot vouch for either, so it never tags: a send outside the
window is refused by Graph (code 10, subcode 2018278 "sent outside of allowed window") and the
delivery ends FAILED with that reason rather than risk the Page's messaging rights.

Messenger reports receipts through webhooks (``message_deliveries`` and ``message_reads``, as
watermarks): a delivery can go on to DELIVERED and READ. It cannot be asked whether it already
has a message, but it echoes each send (``message_echoes``, with the ``metadata`` the connector
set to the delivery key): a send whose answer was lost is settled by its echo, or sent again when
no echo came within the grace. The app must subscribe to the ``message_echoes`` field for that;
without it, such a send is sent again after the grace (at least once).
"""

from __future__ import annotations

from typing import Any

from adapters.channels.meta_send import MetaSendConnector
from adapters.channels.meta_webhook import MetaMessagingWebhook
from application.ports import ChannelCapabilities
from domain.channels import Channel

CAPABILITIES = ChannelCapabilities(
    receipts=True,  # delivered and read, as watermarks
    lookup=False,
    echoes=True,  # message_echoes carry our metadata and the mid
    files=True,
    max_attachment_bytes=25 * 1024 * 1024,  # attachments up to 25 MB (images 8 MB by URL)
    max_text_length=2000,  # the Send API's limit on message.text, in characters
)


class MessengerConnector(MetaSendConnector):
    """Sends as one Page, through ``base_url`` (Graph itself, the sandbox or a proxy)."""

    channel = Channel.MESSENGER
    capabilities = CAPABILITIES
    _account_kind = "page id"
    _recipient_kind = "a page-scoped id (PSID)"

    def _body(self, recipient: str, content: dict[str, Any]) -> dict[str, Any]:
        return {"recipient": {"id": recipient}, "messaging_type": "RESPONSE", "message": content}


class MessengerWebhook(MetaMessagingWebhook):
    """``/webhooks/messenger``: messages to the Page, ``message_deliveries``, ``message_reads``, ``message_echoes``.

    Receipts are watermarks ("everything sent before this time"), sometimes with the ``mids``
    delivered; both are kept (see ``adapters/channels/meta_webhook.py``). Echoes of our sends are
    sent confirmations.
    """

    channel = Channel.MESSENGER
    object_name = "page"
