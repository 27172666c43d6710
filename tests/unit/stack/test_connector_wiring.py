"""The channel workers send through a platform's real client where it is configured, else the loopback."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import SecretStr

from adapters.channels.loopback import LoopbackConnector
from adapters.channels.telegram import TelegramConnector
from domain.channels import Channel
from entrypoints.settings import Settings
from entrypoints.workers.kinds import connector_for
from tests.builders import FakeClock, FakePublisher

pytestmark = pytest.mark.unit


def worker(tmp_path: Path, **settings: Any) -> Any:
    return SimpleNamespace(
        settings=Settings(data_dir=tmp_path, **settings),
        deps=SimpleNamespace(publisher=FakePublisher(), clock=FakeClock()),
    )


async def test_telegram_goes_to_the_bot_api_once_a_token_is_set(tmp_path: Path) -> None:
    w = worker(tmp_path, telegram_bot_token=SecretStr("1:abc"), telegram_api_base="http://127.0.0.1:9/")

    telegram, whatsapp = connector_for(w, Channel.TELEGRAM), connector_for(w, Channel.WHATSAPP)

    assert isinstance(telegram, TelegramConnector)
    assert isinstance(whatsapp, LoopbackConnector)
    for c in (telegram, whatsapp):
        await c.close()


async def test_without_a_token_everything_is_loopback(tmp_path: Path) -> None:
    connector = connector_for(worker(tmp_path), Channel.TELEGRAM)

    assert isinstance(connector, LoopbackConnector)
    await connector.close()
