"""Run the channel sandbox: `python -m entrypoints.sandbox` (uvicorn on CHAT4ALL_HOST:CHAT4ALL_SANDBOX_PORT)."""

from __future__ import annotations

import logging

import uvicorn

from domain.channels import Channel
from entrypoints.sandbox.app import create_app
from entrypoints.sandbox.config import SandboxConfig
from entrypoints.sandbox.platforms import SERVED, Sandbox
from entrypoints.settings import Settings

log = logging.getLogger("chat4all.sandbox")


def run(settings: Settings) -> int:
    """Serve until interrupted; the platforms played are those whose credentials ``settings`` hold."""
    config = SandboxConfig.from_settings(settings)
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
        create_app(config),
        host=settings.host,
        port=settings.sandbox_port,
        log_level=settings.log_level,
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    return 0


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    raise SystemExit(run(Settings()))


if __name__ == "__main__":
    main()
