"""The channels' registry: which platform adapters a runtime uses, chosen by their settings.

Adding a channel is one module in ``adapters/channels/`` (its connector and its webhook) plus a
line here and one in ``connector_for`` (``entrypoints/workers/kinds.py``); see docs/connectors.md.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import Counter

from adapters.channels.instagram import InstagramWebhook
from adapters.channels.messenger import MessengerWebhook
from adapters.channels.telegram import TelegramWebhook
from adapters.channels.whatsapp import WhatsAppWebhook
from application.inbound import ChannelWebhook, Received
from domain.channels import PLATFORMS, Channel
from entrypoints.settings import Settings


def webhooks_for(settings: Settings) -> dict[Channel, ChannelWebhook]:
    """The inbound webhook of each channel whose secret is set; the others refuse every call."""
    s = settings
    hooks: dict[Channel, ChannelWebhook] = {}
    meta = (
        (WhatsAppWebhook, s.whatsapp_app_secret, s.whatsapp_verify_token),
        (MessengerWebhook, s.messenger_app_secret, s.messenger_verify_token),
        (InstagramWebhook, s.instagram_app_secret, s.instagram_verify_token),
    )
    for hook, secret, verify_token in meta:
        if secret is not None:
            token = verify_token.get_secret_value() if verify_token is not None else None
            hooks[hook.channel] = hook(secret.get_secret_value(), token)
    if s.telegram_webhook_secret is not None and s.telegram_updates == "webhook":
        hooks[Channel.TELEGRAM] = TelegramWebhook(s.telegram_webhook_secret.get_secret_value())
    return hooks


def inbox_owners(settings: Settings) -> dict[Channel, str]:
    """Whose inbox takes each channel's messages from addresses no conversation holds yet."""
    owners = {ch: settings.inbox_owner for ch in PLATFORMS if settings.inbox_owner}
    owners.update({Channel(ch): username for ch, username in settings.inbox_owners.items()})
    return owners


INBOUND = Counter(
    "chat4all_inbound_messages",
    "Messages the platforms brought (webhooks, getUpdates), by channel and outcome (accepted, duplicate, unrouted).",
    ["channel", "outcome"],
)


def count_inbound(channel: Channel, outcomes: Sequence[Received]) -> None:
    """Count what became of the inbound messages of one webhook call or poll."""
    for outcome in outcomes:
        INBOUND.labels(channel.value, outcome.value).inc()
