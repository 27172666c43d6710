"""Instagram Messaging: the Send API to an Instagram-scoped id (IGSID), as one professional account.

Shapes (``../shared/design/channels.md`` 3.4): ``POST <base>/v25.0/<ID>/messages`` with
``{"recipient": {"id": "<IGSID>"}, "message": {"text": "..."}}`` (no ``messaging_type``); the
answer is ``{"recipient_id": "<IGSID>", "message_id": "..."}``. Graph errors are mapped as
``adapters/channels/meta_send.py`` describes.

Both flavours of the API take this request. With Facebook Login (the default ``base_url``,
``https://graph.facebook.com``) the token is the linked Page's access token and the id the Page's
or the Instagram professional account's; with Instagram Login, pass
``base_url="https://graph.instagram.com"``, the Instagram user token and the IG account id. The
token goes in the ``Authorization: Bearer`` header either way.

Texts are at most 1000 UTF-8 bytes, so a text of fewer characters may still be too long. The
recipient must be the IGSID that a webhook gave us (a person can only be messaged after they
wrote first, and only within 24 hours of it): an Instagram handle cannot be sent to, and such an
address fails without a call.

Instagram reports reads (``messaging_seen``) but no deliveries: a delivery goes from SENT to READ,
never DELIVERED. It cannot be asked whether it already has a message, but it echoes the account's
sends on the ``messages`` field (``is_echo``); the connector sets ``metadata`` to the delivery key as
on Messenger, and an echo carrying it settles a send whose answer was lost. Meta documents the
``metadata`` echo for Messenger; should an Instagram echo come without it, such a send is sent
again after the grace (at least once), as on a platform without echoes.
"""

from __future__ import annotations

from adapters.channels.meta_send import MetaSendConnector
from adapters.channels.meta_webhook import MetaMessagingWebhook
from application.ports import ChannelCapabilities
from domain.channels import Channel

CAPABILITIES = ChannelCapabilities(
    receipts=True,  # read only (messaging_seen): Instagram has no delivery webhooks
    lookup=False,
    echoes=True,  # echoes of our sends arrive on the messages field, with our metadata
    files=True,
    max_attachment_bytes=25 * 1024 * 1024,  # audio and video up to 25 MB (images 8 MB)
    attachment_types=("image/", "video/", "audio/"),  # other files go as a link
    max_text_length=1000,  # in UTF-8 bytes, which the connector counts
)


class InstagramConnector(MetaSendConnector):
    """Sends as one Instagram professional account, through ``base_url`` (Graph, the sandbox or a proxy)."""

    channel = Channel.INSTAGRAM
    capabilities = CAPABILITIES
    _account_kind = "Instagram account or page id"
    _recipient_kind = "an Instagram-scoped id (IGSID)"
    _text_limit_in_bytes = True


class InstagramWebhook(MetaMessagingWebhook):
    """``/webhooks/instagram``: messages to the account, echoes of its sends, and ``messaging_seen`` (reads; there
    are no deliveries)."""

    channel = Channel.INSTAGRAM
    object_name = "instagram"
