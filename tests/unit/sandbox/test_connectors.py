"""Chat4All's real connectors, pointed at the sandbox, send and read its failures as they would the platforms'.

This is what makes the sandbox worth having: only the base URL differs from production.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from litestar import Litestar

from adapters.channels.instagram import InstagramConnector
from adapters.channels.messenger import MessengerConnector
from adapters.channels.telegram import TelegramConnector
from adapters.channels.whatsapp import WhatsAppConnector, delivery_from_callback
from application.ports import ChannelConnector, ChannelError, OutboundMessage
from domain.channels import Channel, ChannelAddress
from domain.ids import ConversationId, MessageId
from entrypoints.sandbox.app import create_app
from tests.unit.sandbox.conftest import (
    CONFIG,
    IG_TOKEN,
    MS_TOKEN,
    TG_TOKEN,
    VERSION,
    WA_PHONE_ID,
    WA_TOKEN,
    Chat4AllStub,
)

pytestmark = pytest.mark.unit

BASE = "http://sandbox.test"
RECIPIENTS = {
    Channel.WHATSAPP: "+5511999998888",
    Channel.MESSENGER: "1254459154682919",
    Channel.INSTAGRAM: "17841405309211844",
    Channel.TELEGRAM: "987654321",
}

ConnectorFactory = Callable[..., ChannelConnector]


def whatsapp(transport: httpx.AsyncBaseTransport, **kw: Any) -> ChannelConnector:
    args = {"access_token": WA_TOKEN, "phone_number_id": WA_PHONE_ID, **kw}
    return WhatsAppConnector(**args, base_url=BASE, api_version=VERSION, transport=transport)


def messenger(transport: httpx.AsyncBaseTransport, **kw: Any) -> ChannelConnector:
    args = {"page_access_token": MS_TOKEN, "page_id": "me", **kw}
    return MessengerConnector(**args, base_url=BASE, api_version=VERSION, transport=transport)


def instagram(transport: httpx.AsyncBaseTransport, **kw: Any) -> ChannelConnector:
    args = {"page_access_token": IG_TOKEN, "page_id": "me", **kw}
    return InstagramConnector(**args, base_url=BASE, api_version=VERSION, transport=transport)


def telegram(transport: httpx.AsyncBaseTransport, **kw: Any) -> ChannelConnector:
    return TelegramConnector(kw.get("bot_token", TG_TOKEN), base_url=BASE, transport=transport)


FACTORIES = {
    Channel.WHATSAPP: whatsapp,
    Channel.MESSENGER: messenger,
    Channel.INSTAGRAM: instagram,
    Channel.TELEGRAM: telegram,
}


@pytest.fixture(params=list(FACTORIES), ids=lambda c: c.value)
def channel(request: pytest.FixtureRequest) -> Channel:
    return request.param


def message(channel: Channel, text: str = "Olá!", *, to: ChannelAddress | None = None) -> OutboundMessage:
    return OutboundMessage(
        delivery=(MessageId(uuid.uuid4()), f"user:{uuid.uuid4()}", channel),
        conversation_id=ConversationId(uuid.uuid4()),
        seq=1,
        to=to or ChannelAddress.of(channel, RECIPIENTS[channel]),
        sender="user:ana",
        payload={"type": "text", "text": text},
    )


@pytest.fixture
async def app(chat4all: Chat4AllStub) -> AsyncIterator[Litestar]:
    """The sandbox in the test's event loop, reached through ``httpx.ASGITransport`` as a connector reaches Graph."""
    sandbox = create_app(CONFIG, transport=chat4all.transport)
    yield sandbox
    await sandbox.state.webhooks.close()


@pytest.fixture
async def control(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
        (await client.post("/sandbox/settings", json={"delay_ms": 0})).raise_for_status()
        yield client


@pytest.fixture
async def connect(app: Litestar) -> AsyncIterator[Callable[..., ChannelConnector]]:
    made: list[ChannelConnector] = []

    def make(channel: Channel, **kw: Any) -> ChannelConnector:
        made.append(FACTORIES[channel](httpx.ASGITransport(app=app), **kw))
        return made[-1]

    yield make
    for connector in made:
        await connector.close()


async def test_each_connector_sends_and_gets_the_id_the_sandbox_recorded(
    channel: Channel, connect: Callable[..., ChannelConnector], control: httpx.AsyncClient
) -> None:
    platform_id = await connect(channel).send(message(channel))

    [item] = (await control.get("/sandbox/messages", params={"channel": channel.value})).json()["items"]
    assert item["platform_message_id"] == platform_id  # the id receipts and replies will name
    assert (item["to"], item["text"]) == (RECIPIENTS[channel], "Olá!")


async def test_whatsapp_statuses_carry_the_connector_s_delivery_key(
    connect: Callable[..., ChannelConnector], control: httpx.AsyncClient, chat4all: Chat4AllStub
) -> None:
    sent = message(Channel.WHATSAPP)
    wamid = await connect(Channel.WHATSAPP).send(sent)

    [call] = await chat4all.wait("whatsapp", 1)

    [status] = call.json["entry"][0]["changes"][0]["value"]["statuses"]
    assert status["id"] == wamid
    assert delivery_from_callback(status["biz_opaque_callback_data"]) == sent.delivery


async def test_rate_limits_become_retry_after(
    channel: Channel, connect: Callable[..., ChannelConnector], control: httpx.AsyncClient
) -> None:
    (await control.post("/sandbox/faults", json={"channel": channel.value, "rate_limit_per_s": 1})).raise_for_status()
    connector = connect(channel)
    await connector.send(message(channel))

    with pytest.raises(ChannelError) as refused:
        await connector.send(message(channel))

    assert refused.value.retry_after == 1.0
    assert refused.value.permanent is False


@pytest.mark.parametrize("fault", [{"error_rate": 1.0}, {"down": True}], ids=["5xx", "down"])
async def test_platform_faults_are_retried(
    channel: Channel, connect: Callable[..., ChannelConnector], control: httpx.AsyncClient, fault: dict[str, Any]
) -> None:
    (await control.post("/sandbox/faults", json={"channel": channel.value, **fault})).raise_for_status()

    with pytest.raises(ChannelError) as failed:
        await connect(channel).send(message(channel))

    assert failed.value.permanent is False
    assert (await control.get("/sandbox/messages")).json()["items"] == []


async def test_a_bad_token_fails_for_good(channel: Channel, connect: Callable[..., ChannelConnector]) -> None:
    token = {
        Channel.WHATSAPP: "access_token",
        Channel.MESSENGER: "page_access_token",
        Channel.INSTAGRAM: "page_access_token",
        Channel.TELEGRAM: "bot_token",
    }[channel]

    with pytest.raises(ChannelError) as refused:
        await connect(channel, **{token: "123:not-the-token"}).send(message(channel))

    assert refused.value.permanent is True
    assert "not-the-token" not in refused.value.reason


@pytest.mark.parametrize(
    ("channel_", "connector_args", "to"),
    [
        # Addresses built without the domain's checks, as a stale identity could hold them.
        (Channel.WHATSAPP, {}, ChannelAddress(Channel.WHATSAPP, "+12")),
        (Channel.TELEGRAM, {}, ChannelAddress(Channel.TELEGRAM, "@somechannel")),
        (Channel.MESSENGER, {"page_id": "42"}, None),  # a page the token does not manage
        (Channel.INSTAGRAM, {"page_id": "42"}, None),
    ],
    ids=["whatsapp-bad-number", "telegram-chat-not-found", "messenger-wrong-page", "instagram-wrong-account"],
)
async def test_a_400_fails_for_good(
    channel_: Channel,
    connector_args: dict[str, Any],
    to: ChannelAddress | None,
    connect: Callable[..., ChannelConnector],
    control: httpx.AsyncClient,
) -> None:
    with pytest.raises(ChannelError) as refused:
        await connect(channel_, **connector_args).send(message(channel_, to=to))

    assert refused.value.permanent is True
    assert refused.value.retry_after is None
    assert (await control.get("/sandbox/messages")).json()["items"] == []
