"""The channel workers send through a platform's real client where it is configured, else the loopback."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import SecretStr

from adapters.channels.instagram import InstagramConnector
from adapters.channels.loopback import LoopbackConnector
from adapters.channels.messenger import MessengerConnector
from adapters.channels.telegram import TelegramConnector
from adapters.channels.whatsapp import WhatsAppConnector
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


async def test_each_meta_platform_is_real_once_its_credentials_are_set(tmp_path: Path) -> None:
    w = worker(
        tmp_path,
        whatsapp_access_token=SecretStr("wa"),
        whatsapp_phone_number_id="106540352242922",
        messenger_page_token=SecretStr("page"),
        instagram_access_token=SecretStr("ig"),
    )
    half = worker(tmp_path, whatsapp_access_token=SecretStr("wa"))  # no phone number id: not usable

    connectors = [connector_for(w, ch) for ch in (Channel.WHATSAPP, Channel.MESSENGER, Channel.INSTAGRAM)]
    fallback = connector_for(half, Channel.WHATSAPP)

    assert [type(c) for c in connectors] == [WhatsAppConnector, MessengerConnector, InstagramConnector]
    assert isinstance(fallback, LoopbackConnector)
    for c in [*connectors, fallback]:
        await c.close()


async def test_without_a_token_everything_is_loopback(tmp_path: Path) -> None:
    connector = connector_for(worker(tmp_path), Channel.TELEGRAM)

    assert isinstance(connector, LoopbackConnector)
    await connector.close()
