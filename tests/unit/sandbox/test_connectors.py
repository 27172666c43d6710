"""Chat4All's real connectors, pointed at the sandbox, send and read its failures as they would the platforms'.

This is what makes the sandbox worth having: only the base URL differs from production.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import attrs
import httpx
import pytest
from litestar import Litestar

from adapters.channels.instagram import InstagramConnector, InstagramWebhook
from adapters.channels.messenger import MessengerConnector, MessengerWebhook
from adapters.channels.telegram import TelegramConnector
from adapters.channels.whatsapp import WhatsAppConnector, WhatsAppWebhook, delivery_from_callback
from application.pipeline import Receipt
from application.ports import ChannelConnector, ChannelError, OutboundMessage
from domain.channels import Channel, ChannelAddress
from domain.deliveries import DeliveryStatus
from domain.ids import ConversationId, MessageId
from entrypoints.sandbox.app import create_app
from tests.unit.sandbox.conftest import (
    CONFIG,
    IG_SECRET,
    IG_TOKEN,
    MS_SECRET,
    MS_TOKEN,
    TG_TOKEN,
    VERSION,
    WA_PHONE_ID,
    WA_SECRET,
    WA_TOKEN,
    Call,
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


@pytest.mark.parametrize(
    ("channel", "webhook"),
    [
        (Channel.WHATSAPP, WhatsAppWebhook(WA_SECRET)),
        (Channel.MESSENGER, MessengerWebhook(MS_SECRET)),
        (Channel.INSTAGRAM, InstagramWebhook(IG_SECRET)),
    ],
    ids=["whatsapp", "messenger", "instagram"],
)
async def test_the_first_webhook_after_a_send_confirms_it_with_the_delivery_and_the_platform_id(
    channel: Channel,
    webhook: WhatsAppWebhook,
    connect: Callable[..., ChannelConnector],
    control: httpx.AsyncClient,
    chat4all: Chat4AllStub,
) -> None:
    """What settles a send in doubt: the platform's echo, signed, parsed back into a sent confirmation."""
    sent = message(channel)
    platform_id = await connect(channel).send(sent)

    [call] = await chat4all.wait(channel.value, 1)

    assert webhook.verify(call.body, call.headers)
    [confirmation] = [r for r in webhook.parse(call.body).receipts if r.confirms_send]
    assert confirmation == Receipt(
        channel, confirmation.status, confirmation.at, platform_message_id=platform_id, delivery=sent.delivery
    )


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


@pytest.mark.parametrize(
    ("channel", "webhook", "per_send"),
    [
        (
            Channel.WHATSAPP,
            WhatsAppWebhook(WA_SECRET),
            {DeliveryStatus.SENT, DeliveryStatus.DELIVERED, DeliveryStatus.READ},
        ),
        (Channel.MESSENGER, MessengerWebhook(MS_SECRET), {DeliveryStatus.SENT, DeliveryStatus.DELIVERED}),
        (Channel.INSTAGRAM, InstagramWebhook(IG_SECRET), {DeliveryStatus.SENT, DeliveryStatus.READ}),
    ],
    ids=["whatsapp", "messenger", "instagram"],
)
async def test_chat4all_s_parsers_take_the_sandbox_s_batched_webhooks(
    channel: Channel, webhook: WhatsAppWebhook, per_send: set[DeliveryStatus], chat4all: Chat4AllStub
) -> None:
    """Meta's batches (many entries per POST, one signature over them all) read as the updates one by one would."""
    app = create_app(attrs.evolve(CONFIG, webhook_linger_s=0.2), transport=chat4all.transport)
    connector = FACTORIES[channel](httpx.ASGITransport(app=app))
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as control:
            await control.post("/sandbox/settings", json={"delay_ms": 0, "auto_deliver": True, "auto_read": True})
            sent = [message(channel, f"#{n}") for n in range(5)]
            ids = [await connector.send(m) for m in sent]
            kinds = 3 if channel is not Channel.INSTAGRAM else 2  # echo or sent, delivered (not on Instagram), read
            calls = await _wait_for_updates(chat4all, channel, kinds * len(sent))
    finally:
        await connector.close()
        await app.state.webhooks.close()

    assert len(calls) < kinds * len(sent)  # batched
    receipts = []
    watermarks = []
    for call in calls:
        assert webhook.verify(call.body, call.headers)  # the signature covers the merged bytes
        parsed = webhook.parse(call.body)
        receipts.extend(parsed.receipts)
        watermarks.extend(parsed.watermarks)
    confirmed = {r.platform_message_id: r.delivery for r in receipts if r.confirms_send}
    assert confirmed == {platform_id: m.delivery for platform_id, m in zip(ids, sent, strict=True)}
    for platform_id in ids:
        assert {r.status for r in receipts if r.platform_message_id == platform_id} == per_send
    if channel is Channel.MESSENGER:  # Messenger's reads are watermarks
        assert {w.status for w in watermarks} == {DeliveryStatus.DELIVERED, DeliveryStatus.READ}


async def _wait_for_updates(chat4all: Chat4AllStub, channel: Channel, count: int) -> list[Call]:
    await chat4all.wait_updates(channel.value, count)
    return chat4all.to(channel.value)
