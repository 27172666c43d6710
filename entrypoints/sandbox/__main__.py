"""Run the channel sandbox: `python -m entrypoints.sandbox` (uvicorn on CHAT4ALL_HOST:CHAT4ALL_SANDBOX_PORT)."""

from __future__ import annotations

import logging

import uvicorn

from domain.channels import Channel
from entrypoints.logs import configure_logging
from entrypoints.sandbox.app import create_app
from entrypoints.sandbox.config import SandboxConfig
from entrypoints.sandbox.platforms import SERVED, Sandbox
from entrypoints.settings import Settings

log = logging.getLogger("chat4all.sandbox")


def run(settings: Settings) -> int:
    """Serve until interrupted; the platforms played are those whose credentials ``settings`` hold."""
    config = SandboxConfig.from_settings(settings)
    app = create_app(config)
    # after the app: building a Litestar app installs Litestar's own logging config, which this replaces
    configure_logging(settings.log_level, settings.log_format, runtime="sandbox")
    probe = Sandbox(config)
    served = [c.value for c in SERVED if probe.configured(c)] or ["none"]
    telegram = (probe.telegram.webhook_url or "getUpdates") if probe.configured(Channel.TELEGRAM) else "-"
    log.info(
        "sandbox: http://%s:%d plays %s; webhooks to %s (telegram updates: %s)",
        settings.host,
        settings.sandbox_port,
        ", ".join(served),
        config.chat4all_url,
        telegram,
    )
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.sandbox_port,
        log_level=settings.log_level,
        log_config=None,  # keep our handler: uvicorn's records go through it
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    return 0


def main() -> None:
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format, runtime="sandbox")
    raise SystemExit(run(settings))


if __name__ == "__main__":
    main()
