"""What the channel sandbox is told: which platforms it plays, with which credentials, and where Chat4All listens."""

from __future__ import annotations

from typing import Final

import attrs
from pydantic import SecretStr

from entrypoints.settings import Settings

DEFAULT_RETRY_DELAYS_S: Final = (1.0, 5.0, 25.0)
"""Waits before the second, third and fourth attempt at a webhook Chat4All did not take (Meta retries, growing)."""


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


@attrs.frozen(kw_only=True)
class SandboxConfig:
    """The sandbox's credentials are the ones Chat4All is configured with, so both sides agree without extra setup.

    A platform whose token (and, for WhatsApp, phone number id) is unset is not served: its API
    answers as the platform answers a bad token. An unset app secret leaves that platform's
    webhooks unsigned, which Chat4All refuses, as it refuses them when it has no secret itself.
    """

    chat4all_url: str = "http://127.0.0.1:8000"
    """The base URL of Chat4All's HTTP API; webhooks go to ``<url>/webhooks/<channel>``."""
    graph_api_version: str = "v25.0"
    whatsapp_access_token: str | None = attrs.field(default=None, repr=False)
    whatsapp_phone_number_id: str | None = None
    whatsapp_app_secret: str | None = attrs.field(default=None, repr=False)
    messenger_page_token: str | None = attrs.field(default=None, repr=False)
    messenger_page_id: str = "me"
    messenger_app_secret: str | None = attrs.field(default=None, repr=False)
    instagram_access_token: str | None = attrs.field(default=None, repr=False)
    instagram_account_id: str = "me"
    instagram_app_secret: str | None = attrs.field(default=None, repr=False)
    telegram_bot_token: str | None = attrs.field(default=None, repr=False)
    telegram_webhook_secret: str | None = attrs.field(default=None, repr=False)
    telegram_updates: str = "webhook"
    """``webhook``: with a secret, the sandbox starts as if setWebhook had been called; ``polling``: getUpdates."""
    seed: int | None = None
    """Seeds the random draws of ``error_rate`` faults, so a test sees the same failures every run."""
    webhook_retry_delays_s: tuple[float, ...] = DEFAULT_RETRY_DELAYS_S
    webhook_timeout_s: float = 10.0
    webhook_concurrency: int = 4
    """POSTs in flight at most per platform and webhook URL, retries included (each a batch of updates)."""
    webhook_batch_max: int = 100
    """Updates one Meta webhook POST carries at most (Telegram's carry one)."""
    webhook_linger_s: float = 0.005
    """How long a lone Meta update waits for others to share its POST; a backlog goes at once."""

    @classmethod
    def from_settings(cls, settings: Settings) -> SandboxConfig:
        """The sandbox for the Chat4All that ``settings`` configure (the same CHAT4ALL_* environment)."""
        return cls(
            chat4all_url=settings.sandbox_chat4all_url.rstrip("/"),
            graph_api_version=settings.graph_api_version,
            whatsapp_access_token=_secret(settings.whatsapp_access_token),
            whatsapp_phone_number_id=settings.whatsapp_phone_number_id,
            whatsapp_app_secret=_secret(settings.whatsapp_app_secret),
            messenger_page_token=_secret(settings.messenger_page_token),
            messenger_page_id=settings.messenger_page_id,
            messenger_app_secret=_secret(settings.messenger_app_secret),
            instagram_access_token=_secret(settings.instagram_access_token),
            instagram_account_id=settings.instagram_account_id,
            instagram_app_secret=_secret(settings.instagram_app_secret),
            telegram_bot_token=_secret(settings.telegram_bot_token),
            telegram_webhook_secret=_secret(settings.telegram_webhook_secret),
            telegram_updates=settings.telegram_updates,
        )
