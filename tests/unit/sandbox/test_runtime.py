"""`chat4all sandbox` serves the sandbox app on CHAT4ALL_HOST:CHAT4ALL_SANDBOX_PORT, configured from CHAT4ALL_*."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner
from litestar import Litestar

from entrypoints import cli
from entrypoints.sandbox import __main__ as runtime

pytestmark = pytest.mark.unit


def test_the_sandbox_command_runs_uvicorn_on_the_sandbox_port(monkeypatch: pytest.MonkeyPatch) -> None:
    served: dict[str, Any] = {}
    monkeypatch.setattr(runtime.uvicorn, "run", lambda app, **kw: served.update(app=app, **kw))
    env = {
        "CHAT4ALL_HOST": "127.0.0.2",
        "CHAT4ALL_SANDBOX_PORT": "18081",
        "CHAT4ALL_TELEGRAM_BOT_TOKEN": "42:secret",
        "CHAT4ALL_TELEGRAM_UPDATES": "polling",
    }

    result = CliRunner().invoke(cli.main, ["sandbox"], env=env)

    assert result.exit_code == 0, result.output
    assert (served["host"], served["port"]) == ("127.0.0.2", 18081)
    app = served["app"]
    assert isinstance(app, Litestar)
    sandbox = app.state.sandbox
    assert sandbox.config.telegram_bot_token == "42:secret"
    assert sandbox.telegram.webhook_url is None  # polling: updates wait for getUpdates


def test_invalid_settings_are_reported_not_served(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime.uvicorn, "run", lambda *_, **__: pytest.fail("must not serve"))

    result = CliRunner().invoke(cli.main, ["sandbox"], env={"CHAT4ALL_TELEGRAM_UPDATES": "carrier-pigeon"})

    assert result.exit_code != 0
    assert "telegram_updates" in result.output
