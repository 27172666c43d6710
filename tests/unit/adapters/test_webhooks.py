"""The platforms' webhooks: Meta's handshake and signature, Telegram's secret token, and each payload parsed
into inbound messages, receipts and watermarks (shapes from ../shared/design/channels.md)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from adapters.channels.instagram import InstagramWebhook
from adapters.channels.messenger import MessengerWebhook
from adapters.channels.meta_webhook import signature
from adapters.channels.telegram import SECRET_HEADER, TelegramWebhook, parse_update
from adapters.channels.whatsapp import WhatsAppWebhook, callback_data
from application.inbound import InboundMessage
from application.pipeline import Receipt, Watermark
from domain.channels import Channel, ChannelAddress
from domain.deliveries import DeliveryStatus
from domain.ids import MessageId

pytestmark = pytest.mark.unit

SECRET = "app-secret-123"


def raw(payload: Any) -> bytes:
    return json.dumps(payload).encode()


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def whatsapp(value: dict[str, Any]) -> bytes:
    meta = {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"}
    change = {"field": "messages", "value": {"messaging_product": "whatsapp", "metadata": meta, **value}}
    return raw({"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [change]}]})


# --- Meta: handshake and signature -----------------------------------------------------------------


@pytest.mark.parametrize("hook", [WhatsAppWebhook, MessengerWebhook, InstagramWebhook])
def test_meta_handshake_answers_the_challenge_only_for_our_verify_token(hook: type[WhatsAppWebhook]) -> None:
    sut = hook(SECRET, "our-token")
    ok = {"hub.mode": "subscribe", "hub.challenge": "1158201444", "hub.verify_token": "our-token"}

    assert sut.handshake(ok) == "1158201444"
    assert sut.handshake({**ok, "hub.verify_token": "their-token"}) is None
    assert sut.handshake({**ok, "hub.mode": "unsubscribe"}) is None
    assert sut.handshake({**ok, "hub.challenge": "<script>alert(1)</script>"}) is None  # never echoed
    assert sut.handshake({k: v for k, v in ok.items() if k != "hub.challenge"}) is None
    assert hook(SECRET).handshake(ok) is None  # no verify token configured: no subscription


def test_meta_signature_is_checked_over_the_raw_body() -> None:
    sut = WhatsAppWebhook(SECRET)
    body = b'{"object":"whatsapp_business_account","text":"Ol\\u00e1"}'  # Meta escapes non-ASCII

    assert sut.verify(body, {"x-hub-signature-256": signature(SECRET, body)})
    reserialised = json.dumps(json.loads(body), ensure_ascii=False).encode()
    assert not sut.verify(reserialised, {"x-hub-signature-256": signature(SECRET, body)})
    assert not sut.verify(body, {"x-hub-signature-256": signature("another secret", body)})
    assert not sut.verify(body, {"x-hub-signature-256": signature(SECRET, body).removeprefix("sha256=")})
    assert not sut.verify(body, {})


def test_a_meta_webhook_needs_its_app_secret() -> None:
    with pytest.raises(ValueError, match="app secret"):
        MessengerWebhook("")


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b"\xff\xfe"])
def test_a_body_that_is_not_a_json_object_is_refused(body: bytes) -> None:
    for sut in (WhatsAppWebhook(SECRET), MessengerWebhook(SECRET), TelegramWebhook("s3cret")):
        with pytest.raises(ValueError, match="JSON"):
            sut.parse(body)


# --- WhatsApp -------------------------------------------------------------------------------------


def test_whatsapp_messages_come_from_the_senders_number_with_their_name_and_reply_context() -> None:
    body = whatsapp(
        {
            "contacts": [{"profile": {"name": "Sheena Nelson"}, "wa_id": "16505551234"}],
            "messages": [
                {
                    "from": "16505551234",
                    "id": "wamid.HBgL1",
                    "timestamp": "1749416383",
                    "type": "text",
                    "text": {"body": "Does it come in another color?"},
                    "context": {"from": "15550783881", "id": "wamid.OURS"},
                },
                {
                    "from": "16505551234",
                    "id": "wamid.HBgL2",
                    "timestamp": "1749416390",
                    "type": "image",
                    "image": {"id": "MEDIA", "caption": "this one"},
                },
                {
                    "from": "16505551234",
                    "id": "wamid.HBgL3",
                    "timestamp": "1749416391",
                    "type": "sticker",
                    "sticker": {"id": "MEDIA"},
                },
                {"from": "not a number", "id": "wamid.BAD", "type": "text", "text": {"body": "x"}},
            ],
        }
    )

    parsed = WhatsAppWebhook(SECRET).parse(body)

    sender = ChannelAddress.parse("whatsapp:+16505551234")
    assert parsed.messages[0] == InboundMessage(
        channel=Channel.WHATSAPP,
        platform_message_id="wamid.HBgL1",
        sender=sender,
        text="Does it come in another color?",
        at=at(1749416383),
        reply_to="wamid.OURS",
        sender_name="Sheena Nelson",
    )
    assert [m.text for m in parsed.messages[1:]] == ["this one", "(whatsapp sticker without text)"]
    assert parsed.receipts == ()


def test_whatsapp_statuses_become_receipts_with_our_delivery_from_the_callback_data() -> None:
    ours = (MessageId(uuid.uuid4()), "user:5f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f", Channel.WHATSAPP)
    body = whatsapp(
        {
            "statuses": [
                {"id": "wamid.A", "status": "sent", "timestamp": "1750857384", "recipient_id": "5516992318222"},
                {
                    "id": "wamid.A",
                    "status": "read",
                    "timestamp": "1750857390",
                    "recipient_id": "5516992318222",
                    "biz_opaque_callback_data": callback_data(ours),
                },
                {
                    "id": "wamid.B",
                    "status": "failed",
                    "timestamp": "1744609253",
                    "recipient_id": "5516992318222",
                    "errors": [
                        {
                            "code": 131047,
                            "title": "Re-engagement message",
                            "message": "Re-engagement message",
                            "error_data": {"details": "more than 24 hours have passed"},
                        }
                    ],
                },
                {
                    "id": "wamid.C",
                    "status": "delivered",
                    "timestamp": "1750857385",
                    "biz_opaque_callback_data": "somebody else's data",
                },
                {"id": "wamid.D", "status": "played", "timestamp": "1750857385"},
            ]
        }
    )

    parsed = WhatsAppWebhook(SECRET).parse(body)

    assert parsed.receipts == (
        Receipt(Channel.WHATSAPP, DeliveryStatus.READ, at(1750857390), platform_message_id="wamid.A", delivery=ours),
        Receipt(
            Channel.WHATSAPP,
            DeliveryStatus.FAILED,
            at(1744609253),
            platform_message_id="wamid.B",
            error="whatsapp: (131047) Re-engagement message: more than 24 hours have passed",
        ),
        Receipt(Channel.WHATSAPP, DeliveryStatus.DELIVERED, at(1750857385), platform_message_id="wamid.C"),
    )  # "sent" repeats the send's answer; "played" is not a status of ours
    assert parsed.messages == ()


def test_a_whatsapp_sent_status_with_our_key_is_a_sent_confirmation() -> None:
    ours = (MessageId(uuid.uuid4()), "whatsapp:+5516992318222", Channel.WHATSAPP)
    telegrams = (MessageId(uuid.uuid4()), "user:5f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f", Channel.TELEGRAM)
    sent = {"status": "sent", "timestamp": "1750857384", "recipient_id": "5516992318222"}
    body = whatsapp(
        {
            "statuses": [
                {**sent, "id": "wamid.A", "biz_opaque_callback_data": callback_data(ours)},
                {**sent, "id": "wamid.B"},  # not tagged: nothing to learn
                {**sent, "id": "wamid.C", "biz_opaque_callback_data": callback_data(telegrams)},  # not this channel's
            ]
        }
    )

    (confirmation,) = WhatsAppWebhook(SECRET).parse(body).receipts

    assert confirmation == Receipt(
        Channel.WHATSAPP, DeliveryStatus.SENT, at(1750857384), platform_message_id="wamid.A", delivery=ours
    )
    assert confirmation.confirms_send


def test_whatsapp_ignores_other_objects_and_fields() -> None:
    other_field = raw(
        {"object": "whatsapp_business_account", "entry": [{"changes": [{"field": "account_update", "value": {}}]}]}
    )
    assert not WhatsAppWebhook(SECRET).parse(raw({"object": "page", "entry": []}))
    assert not WhatsAppWebhook(SECRET).parse(other_field)
    assert not WhatsAppWebhook(SECRET).parse(raw({"object": "whatsapp_business_account", "entry": "nonsense"}))


# --- Messenger and Instagram ------------------------------------------------------------------------


def messaging(obj: str, *events: dict[str, Any]) -> bytes:
    return raw({"object": obj, "entry": [{"id": "PAGE", "time": 1458692752478, "messaging": list(events)}]})


def test_messenger_messages_deliveries_and_reads() -> None:
    psid = {"sender": {"id": "1254459154682919"}, "recipient": {"id": "PAGE"}}
    body = messaging(
        "page",
        {**psid, "timestamp": 1458692752478, "message": {"mid": "m_1", "text": "hello", "reply_to": {"mid": "m_0"}}},
        {**psid, "timestamp": 1458692752479, "message": {"mid": "m_2", "attachments": [{"type": "image"}]}},
        {
            "sender": {"id": "PAGE"},
            "recipient": {"id": "1254459154682919"},
            "timestamp": 1,
            "message": {"mid": "m_echo", "text": "ours", "is_echo": True},
        },
        {**psid, "delivery": {"mids": ["mid.1458668856218:ed81099e15d3f4f233"], "watermark": 1458668856253}},
        {**psid, "timestamp": 1458668856463, "read": {"watermark": 1458668856253}},
    )

    parsed = MessengerWebhook(SECRET).parse(body)

    reader = ChannelAddress.parse("messenger:1254459154682919")
    assert [(m.platform_message_id, m.text, m.reply_to, m.sender) for m in parsed.messages] == [
        ("m_1", "hello", "m_0", reader),
        ("m_2", "(messenger image without text)", None, reader),
    ]  # the echo of our own send is skipped
    assert [(r.status, r.platform_message_id) for r in parsed.receipts] == [
        (DeliveryStatus.DELIVERED, "mid.1458668856218:ed81099e15d3f4f233")
    ]
    watermark = at(1458668856.253)
    assert [(w.status, w.reader, w.up_to) for w in parsed.watermarks] == [
        (DeliveryStatus.DELIVERED, reader, watermark),
        (DeliveryStatus.READ, reader, watermark),
    ]
    assert all(isinstance(w, Watermark) and w.channel is Channel.MESSENGER for w in parsed.watermarks)


def echo(page: str, person: str, **message: Any) -> dict[str, Any]:
    """Meta's echo of a message the page sent the person (Messenger's message_echoes, Instagram's is_echo)."""
    return {
        "sender": {"id": page},
        "recipient": {"id": person},
        "timestamp": 1457764197627,
        "message": {"is_echo": True, "app_id": 1517776481860111, **message},
    }


@pytest.mark.parametrize(
    ("hook", "obj", "channel"),
    [(MessengerWebhook, "page", Channel.MESSENGER), (InstagramWebhook, "instagram", Channel.INSTAGRAM)],
)
def test_an_echo_of_our_send_is_a_sent_confirmation_and_other_echoes_are_skipped(
    hook: type[MessengerWebhook], obj: str, channel: Channel
) -> None:
    ours = (MessageId(uuid.uuid4()), f"user:{uuid.uuid4()}", channel)
    elsewhere = (MessageId(uuid.uuid4()), f"user:{uuid.uuid4()}", Channel.WHATSAPP)
    body = messaging(
        obj,
        echo("PAGE", "1254459154682919", mid="m_ours", text="hello", metadata=callback_data(ours)),
        echo("PAGE", "1254459154682919", mid="m_inbox", text="typed in the page's inbox"),  # no metadata
        echo("PAGE", "1254459154682919", mid="m_other", text="x", metadata="another app's data"),
        echo("PAGE", "1254459154682919", mid="m_wa", text="x", metadata=callback_data(elsewhere)),
        echo("PAGE", "1254459154682919", text="no mid", metadata=callback_data(ours)),
        echo("me", "1254459154682919", mid="m_file", attachments=[{"type": "image"}], metadata=callback_data(ours)),
    )

    parsed = hook(SECRET).parse(body)

    assert parsed.receipts == (
        Receipt(channel, DeliveryStatus.SENT, at(1457764197.627), platform_message_id="m_ours", delivery=ours),
        Receipt(channel, DeliveryStatus.SENT, at(1457764197.627), platform_message_id="m_file", delivery=ours),
    )
    assert all(r.confirms_send for r in parsed.receipts)
    assert (parsed.messages, parsed.watermarks) == ((), ())  # an echo is never a message from the person


def test_instagram_messages_and_seen_by_mid_in_either_envelope() -> None:
    igsid = {"sender": {"id": "17841400000000077"}, "recipient": {"id": "IGID"}, "timestamp": 1569262485349}
    body = raw(
        {
            "object": "instagram",
            "entry": [
                {
                    "id": "IGID",
                    "time": 1569262486134,
                    "messaging": [{**igsid, "message": {"mid": "aWdf1", "text": "oi"}}],
                },
                {
                    "id": "IGID",
                    "time": 1569262486134,
                    "changes": [{"field": "messaging_seen", "value": {**igsid, "read": {"mid": "aWdf0"}}}],
                },
            ],
        }
    )

    parsed = InstagramWebhook(SECRET).parse(body)

    assert [(m.platform_message_id, str(m.sender), m.text) for m in parsed.messages] == [
        ("aWdf1", "instagram:17841400000000077", "oi")
    ]
    assert parsed.receipts == (
        Receipt(Channel.INSTAGRAM, DeliveryStatus.READ, at(1569262485.349), platform_message_id="aWdf0"),
    )
    assert parsed.watermarks == ()
    assert not InstagramWebhook(SECRET).parse(messaging("page", {**igsid, "message": {"mid": "x", "text": "y"}}))


# --- Telegram ---------------------------------------------------------------------------------------


def test_telegram_checks_its_secret_token_in_constant_time() -> None:
    sut = TelegramWebhook("s3cret_token-1")

    assert sut.verify(b"{}", {SECRET_HEADER: "s3cret_token-1"})
    assert not sut.verify(b"{}", {SECRET_HEADER: "s3cret_token-2"})
    assert not sut.verify(b"{}", {})
    assert sut.handshake({"hub.challenge": "1"}) is None
    with pytest.raises(ValueError, match="secret token"):
        TelegramWebhook("has spaces in it")


def test_a_telegram_update_becomes_a_message_from_its_chat() -> None:
    update = {
        "update_id": 10000,
        "message": {
            "message_id": 1365,
            "from": {"id": 1111111, "is_bot": False, "first_name": "Ana", "last_name": "Lima"},
            "chat": {"id": 1111111, "first_name": "Ana", "type": "private"},
            "date": 1441645532,
            "text": "oi",
            "reply_to_message": {"message_id": 42, "chat": {"id": 1111111}, "date": 1441645000},
        },
    }

    parsed = TelegramWebhook("s3cret").parse(raw(update))

    assert parsed.messages == (
        InboundMessage(
            channel=Channel.TELEGRAM,
            platform_message_id="1111111:1365",
            sender=ChannelAddress.parse("telegram:1111111"),
            text="oi",
            at=at(1441645532),
            reply_to="1111111:42",  # the id our connector recorded for message 42 in that chat
            sender_name="Ana Lima",
        ),
    )


@pytest.mark.parametrize(
    "update",
    [
        {"update_id": 1, "edited_message": {"message_id": 1, "chat": {"id": 1}, "text": "edit"}},
        {"update_id": 2, "message": {"message_id": 2, "chat": {"id": 5}, "from": {"id": 9, "is_bot": True}}},
        {"update_id": 3, "message": {"message_id": "x", "chat": {"id": 5}}},
        {"update_id": 4, "message": {"message_id": 4, "chat": {"id": "not a chat"}}},
        [],
    ],
)
def test_telegram_updates_the_hub_does_not_take_are_skipped(update: Any) -> None:
    assert parse_update(update) is None


def test_a_telegram_document_without_caption_says_what_it_is() -> None:
    message = parse_update(
        {"update_id": 5, "message": {"message_id": 7, "chat": {"id": -100200}, "date": 1, "document": {"file_id": "F"}}}
    )
    assert message is not None
    assert (message.text, str(message.sender)) == ("(telegram document without text)", "telegram:-100200")
