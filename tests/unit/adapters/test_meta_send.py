"""The Messenger and Instagram connectors speak Graph's Send API and map its answers to sent, retry later or failed."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from adapters.channels.common import delivery_of_tag
from adapters.channels.instagram import InstagramConnector
from adapters.channels.messenger import MessengerConnector
from adapters.channels.meta_send import MetaSendConnector
from application.ports import ChannelError, OutboundMessage
from domain.channels import Channel, ChannelAddress
from domain.ids import ConversationId, MessageId

pytestmark = pytest.mark.unit

TOKEN = "EAAGm0PX4ZCpsBAsecret-page-token"
PAGE_ID = "106540352242922"
MID = "m_AG5Hz2Uq7tuwNEhXfYYKj8mJEM_QPpz5jdCK48PnKAjSdjfipqxqMvK8ma6AC8fplwlqLP_5cgXIbu7I3rBN0P"


@dataclass(frozen=True)
class Platform:
    connector: type[MetaSendConnector]
    channel: Channel
    recipient: str
    body: dict[str, Any]
    """What the connector must post for the text "Olá!" to ``recipient``."""
    max_text: int


MESSENGER = Platform(
    MessengerConnector,
    Channel.MESSENGER,
    "1254459154682919",
    {"recipient": {"id": "1254459154682919"}, "messaging_type": "RESPONSE", "message": {"text": "Olá!"}},
    2000,
)
INSTAGRAM = Platform(
    InstagramConnector,
    Channel.INSTAGRAM,
    "17841405309211844",
    {"recipient": {"id": "17841405309211844"}, "message": {"text": "Olá!"}},
    1000,
)


@pytest.fixture(params=[MESSENGER, INSTAGRAM], ids=["messenger", "instagram"])
def platform(request: pytest.FixtureRequest) -> Platform:
    return request.param


def message(
    platform: Platform,
    text: str = "Olá!",
    *,
    payload: dict[str, object] | None = None,
    to: str | None = None,
    recipient_key: str | None = None,
) -> OutboundMessage:
    return OutboundMessage(
        delivery=(MessageId(uuid.uuid4()), recipient_key or f"user:{uuid.uuid4()}", platform.channel),
        conversation_id=ConversationId(uuid.uuid4()),
        seq=1,
        to=ChannelAddress.of(platform.channel, to or platform.recipient),
        sender="user:x",
        payload=payload or {"type": "text", "text": text},
    )


class Transport(httpx.MockTransport):
    closed = False

    async def aclose(self) -> None:
        self.closed = True


def tag_of(m: OutboundMessage) -> str:
    """The ``metadata`` a send of ``m`` carries: its delivery key, for the platform to echo."""
    message_id, recipient_key, channel = m.delivery
    return f"c4a:{message_id}:{recipient_key}:{channel.value}"


def transport(answer: Callable[[httpx.Request], httpx.Response], seen: list[httpx.Request]) -> Transport:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answer(request)

    return Transport(handler)


def connector(
    platform: Platform, answer: Callable[[httpx.Request], httpx.Response], seen: list[httpx.Request] | None = None
) -> MetaSendConnector:
    return platform.connector(
        TOKEN, PAGE_ID, base_url="http://graph.test/", transport=transport(answer, [] if seen is None else seen)
    )


def sent(_: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"recipient_id": "1254459154682919", "message_id": MID})


def graph_error(
    status: int,
    code: int,
    message: str,
    *,
    subcode: int | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Callable[[httpx.Request], httpx.Response]:
    error: dict[str, Any] = {"message": message, "type": "OAuthException", "code": code, "fbtrace_id": "A1b2C3"}
    if subcode is not None:
        error["error_subcode"] = subcode
    error.update(extra)
    return lambda _: httpx.Response(status, json={"error": error}, headers=headers)


async def test_a_text_goes_to_the_send_api_and_the_platform_id_comes_back(platform: Platform) -> None:
    seen: list[httpx.Request] = []
    meta = connector(platform, sent, seen)

    sending = message(platform)

    platform_id = await meta.send(sending)

    assert platform_id == MID
    [request] = seen
    assert (request.method, str(request.url)) == ("POST", f"http://graph.test/v25.0/{PAGE_ID}/messages")
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["content-type"] == "application/json"
    tagged = {**platform.body["message"], "metadata": tag_of(sending)}  # echoed back in message_echoes
    assert json.loads(request.content) == {**platform.body, "message": tagged}
    await meta.close()


async def test_the_delivery_key_in_metadata_reads_back_as_the_delivery(platform: Platform) -> None:
    seen: list[httpx.Request] = []
    sending = message(platform, recipient_key=f"{platform.channel.value}:{platform.recipient}")  # a contact

    await connector(platform, sent, seen).send(sending)

    metadata = json.loads(seen[0].content)["message"]["metadata"]
    assert len(metadata) <= 1000  # the Send API's limit
    assert delivery_of_tag(metadata) == sending.delivery


async def test_a_key_too_long_to_carry_is_left_out_and_the_text_still_goes(platform: Platform) -> None:
    seen: list[httpx.Request] = []

    assert await connector(platform, sent, seen).send(message(platform, recipient_key="user:" + "x" * 1000)) == MID

    assert json.loads(seen[0].content)["message"] == {"text": "Olá!"}


async def test_graph_and_its_version_are_the_defaults_and_can_be_changed(platform: Platform) -> None:
    seen: list[httpx.Request] = []
    default = platform.connector(TOKEN, PAGE_ID, transport=transport(sent, seen))
    other = platform.connector(
        TOKEN, "me", base_url="http://sandbox.test", api_version="v26.0", transport=transport(sent, seen)
    )

    await default.send(message(platform))
    await other.send(message(platform))

    assert [str(r.url) for r in seen] == [
        f"https://graph.facebook.com/v25.0/{PAGE_ID}/messages",
        "http://sandbox.test/v26.0/me/messages",
    ]


RATE_LIMITED = "Calls to this API have exceeded the rate limit."


@pytest.mark.parametrize(
    ("answer", "permanent", "retry_after"),
    [
        (graph_error(429, 613, RATE_LIMITED, headers={"Retry-After": "30"}), False, 30.0),
        (lambda _: httpx.Response(429, json={"detail": "slow down"}), False, None),
        (graph_error(403, 4, "(#4) Application request limit reached"), False, None),
        (graph_error(400, 17, "(#17) User request limit reached", headers={"Retry-After": "60"}), False, 60.0),
        (graph_error(400, 32, "(#32) Page request limit reached"), False, None),
        (graph_error(400, 613, RATE_LIMITED), False, None),
        (graph_error(400, 80006, "There have been too many messages sent to this user"), False, None),
        (graph_error(400, 80002, "There have been too many calls to this Instagram account"), False, None),
        (graph_error(400, 613, RATE_LIMITED, headers={"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"}), False, None),
        (graph_error(400, 613, RATE_LIMITED, headers={"Retry-After": "-5"}), False, None),
        (graph_error(400, 2, "An unexpected error has occurred. Please retry your request later."), False, None),
        (graph_error(400, 1200, "Temporary send message failure. Please try again later"), False, None),
        (graph_error(400, 1, "An unknown error occurred", is_transient=True), False, None),
        (graph_error(400, 10, "(#10) This message is sent outside of allowed window.", subcode=2018278), True, None),
        (graph_error(400, 551, "(#551) This person isn't available right now.", subcode=1545041), True, None),
        (graph_error(403, 200, "(#200) This person isn't available right now.", subcode=1545041), True, None),
        (graph_error(400, 100, "(#100) No matching user found", subcode=2018001), True, None),
        (graph_error(401, 190, "Invalid OAuth access token."), True, None),
        (graph_error(500, 10, "(#10) This message is sent outside of allowed window.", subcode=2018278), True, None),
        (graph_error(400, 12345, "(#12345) Something new"), True, None),
        (lambda _: httpx.Response(404, json={"detail": "no such page"}), True, None),
        (graph_error(500, 1, "An unknown error occurred"), False, None),
        (lambda _: httpx.Response(503, json={"detail": "unavailable"}), False, None),
        (lambda _: httpx.Response(502, text="<html>bad gateway</html>"), False, None),
        (lambda _: httpx.Response(400, text="<html>bad request</html>"), False, None),
        (lambda _: httpx.Response(200, text="OK"), False, None),
        (lambda _: httpx.Response(200, json=[{"message_id": MID}]), False, None),
    ],
    ids=[
        "429 with Retry-After",
        "429 without a Graph error",
        "code 4 application limit",
        "code 17 account limit with Retry-After",
        "code 32 page limit",
        "code 613 custom limit",
        "code 80006 Messenger limit",
        "code 80002 Instagram limit",
        "Retry-After as a date",
        "Retry-After negative",
        "code 2 retry later",
        "code 1200 temporary failure",
        "is_transient",
        "outside the 24 h window",
        "551 person unavailable",
        "200 person unavailable",
        "100 no matching user",
        "190 invalid token",
        "a listed code under a 5xx",
        "another 4xx code",
        "4xx without a Graph error",
        "500",
        "503 without a Graph error",
        "502 not Graph",
        "400 not Graph",
        "200 not JSON",
        "200 not an object",
    ],
)
async def test_failures_are_mapped_to_retry_or_fail(
    platform: Platform,
    answer: Callable[[httpx.Request], httpx.Response],
    permanent: bool,
    retry_after: float | None,
) -> None:
    with pytest.raises(ChannelError) as raised:
        await connector(platform, answer).send(message(platform))

    assert (raised.value.permanent, raised.value.retry_after) == (permanent, retry_after)
    assert raised.value.reason.startswith(f"{platform.channel.value}: ")


async def test_the_reason_is_the_platforms_message_with_its_codes(platform: Platform) -> None:
    answer = graph_error(400, 10, "(#10) This message is sent outside of allowed window.", subcode=2018278)

    with pytest.raises(ChannelError) as raised:
        await connector(platform, answer).send(message(platform))

    assert raised.value.reason == (
        f"{platform.channel.value}: (#10) This message is sent outside of allowed window. (code 10, subcode 2018278)"
    )


async def test_the_token_never_shows_in_a_reason(platform: Platform) -> None:
    answer = graph_error(400, 190, f"Malformed access token {TOKEN}")

    with pytest.raises(ChannelError) as raised:
        await connector(platform, answer).send(message(platform))

    assert TOKEN not in str(raised.value)
    assert raised.value.reason == f"{platform.channel.value}: Malformed access token *** (code 190)"


@pytest.mark.parametrize(
    "error",
    [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("cut")],
    ids=["connection", "timeout", "broken answer"],
)
async def test_an_unreachable_platform_is_retried(platform: Platform, error: Exception) -> None:
    def broken(_: httpx.Request) -> httpx.Response:
        raise error

    with pytest.raises(ChannelError) as raised:
        await connector(platform, broken).send(message(platform))

    assert (raised.value.permanent, raised.value.retry_after) == (False, None)
    assert raised.value.reason.startswith(f"{platform.channel.value}: ")
    assert TOKEN not in raised.value.reason


@pytest.mark.parametrize(
    "answer",
    [{"recipient_id": "1254459154682919"}, {"message_id": ""}, {"message_id": 42}],
    ids=["missing", "empty", "not a string"],
)
async def test_a_success_without_a_message_id_is_retried(platform: Platform, answer: dict[str, Any]) -> None:
    meta = connector(platform, lambda _: httpx.Response(200, json=answer))

    with pytest.raises(ChannelError, match="no message_id") as raised:
        await meta.send(message(platform))

    assert not raised.value.permanent


def bad_messages(platform: Platform) -> list[OutboundMessage]:
    return [
        message(platform, "x" * (platform.max_text + 1)),
        message(platform, ""),
        message(platform, payload={"type": "text"}),
        message(platform, payload={"type": "text", "text": 42}),
        message(platform, payload={"type": "file", "file_id": str(uuid.uuid4()), "caption": "Contrato"}),
        message(platform, payload={"type": "sticker", "text": "a text under another type"}),
    ]


async def test_what_cannot_be_sent_fails_without_a_call(platform: Platform) -> None:
    seen: list[httpx.Request] = []
    meta = connector(platform, sent, seen)

    for bad in bad_messages(platform):
        with pytest.raises(ChannelError) as raised:
            await meta.send(bad)
        assert raised.value.permanent
        assert raised.value.reason.startswith(f"{platform.channel.value}: ")
        if bad.payload["type"] == "file":
            assert "a file message needs a url" in raised.value.reason
        elif bad.payload["type"] != "text":
            assert "is not a text" in raised.value.reason
    assert seen == []


async def test_a_text_at_the_limit_is_sent(platform: Platform) -> None:
    seen: list[httpx.Request] = []

    await connector(platform, sent, seen).send(message(platform, "x" * platform.max_text))

    assert json.loads(seen[0].content)["message"]["text"] == "x" * platform.max_text


async def test_messenger_counts_characters_and_instagram_utf8_bytes() -> None:
    seen: list[httpx.Request] = []
    accents = "é" * 600  # 600 characters, 1200 bytes

    assert await connector(MESSENGER, sent, seen).send(message(MESSENGER, accents)) == MID
    with pytest.raises(ChannelError, match="1000 UTF-8 bytes") as raised:
        await connector(INSTAGRAM, sent, seen).send(message(INSTAGRAM, accents))

    assert raised.value.permanent
    assert len(seen) == 1
    assert await connector(INSTAGRAM, sent, seen).send(message(INSTAGRAM, "é" * 500)) == MID


async def test_an_instagram_handle_is_not_an_igsid_and_is_not_sent_to() -> None:
    seen: list[httpx.Request] = []

    with pytest.raises(ChannelError, match="not an Instagram-scoped id") as raised:
        await connector(INSTAGRAM, sent, seen).send(message(INSTAGRAM, to="@ana.souza"))

    assert raised.value.permanent
    assert seen == []


def test_the_capabilities_tell_receipts_and_limits() -> None:
    for connector_class, channel, max_text in [
        (MessengerConnector, Channel.MESSENGER, 2000),
        (InstagramConnector, Channel.INSTAGRAM, 1000),
    ]:
        meta = connector_class(TOKEN, PAGE_ID)
        caps = meta.capabilities
        assert meta.channel is channel
        assert (caps.receipts, caps.lookup, caps.files) == (True, False, True)
        assert (caps.max_attachment_bytes, caps.max_text_length) == (25 * 1024 * 1024, max_text)


async def test_nothing_can_be_looked_up_and_close_closes_the_client(platform: Platform) -> None:
    mock = transport(sent, [])
    meta = platform.connector(TOKEN, PAGE_ID, transport=mock)

    assert await meta.find_sent(message(platform).delivery) is None
    assert not mock.closed
    await meta.close()
    assert mock.closed


@pytest.mark.parametrize(
    ("token", "page_id", "version", "complaint"),
    [
        ("", PAGE_ID, "v25.0", "page access token"),
        (TOKEN, "", "v25.0", "id"),
        (TOKEN, "123/../456", "v25.0", "id"),
        (TOKEN, "123?x=1", "v25.0", "id"),
        (TOKEN, PAGE_ID, "", "Graph API version"),
        (TOKEN, PAGE_ID, "/", "Graph API version"),
    ],
    ids=["no token", "no id", "a path in the id", "a query in the id", "no version", "an empty version"],
)
def test_a_token_an_id_and_a_version_are_required(
    platform: Platform, token: str, page_id: str, version: str, complaint: str
) -> None:
    title = platform.channel.value.capitalize()
    with pytest.raises(ValueError, match=complaint) as raised:
        platform.connector(token, page_id, api_version=version)

    assert str(raised.value).startswith(f"a {title} connector needs")
    assert TOKEN not in str(raised.value)


def file_payload(content_type: str, size: int = 1000, caption: str | None = None) -> dict[str, object]:
    payload: dict[str, object] = {
        "type": "file",
        "url": "https://files.test/blob?sig=1",
        "filename": "f",
        "size": size,
        "content_type": content_type,
    }
    return payload | ({"caption": caption} if caption is not None else {})


@pytest.mark.parametrize(
    ("content_type", "size", "kind"),
    [
        ("image/png", 1000, "image"),
        ("image/jpeg", 9 * 1024 * 1024, "file"),  # images by URL are at most 8 MB
        ("video/mp4", 1000, "video"),
        ("audio/ogg", 1000, "audio"),
        ("application/pdf", 1000, "file"),
    ],
)
async def test_a_file_goes_as_an_attachment_of_its_kind_by_url(
    platform: Platform, content_type: str, size: int, kind: str
) -> None:
    seen: list[httpx.Request] = []
    sending = message(platform, payload=file_payload(content_type, size))

    platform_id = await connector(platform, sent, seen).send(sending)

    assert platform_id == MID
    [request] = seen
    body = json.loads(request.content)
    assert body["message"] == {
        "attachment": {"type": kind, "payload": {"url": "https://files.test/blob?sig=1", "is_reusable": False}},
        "metadata": tag_of(sending),
    }
    assert body["recipient"] == {"id": platform.recipient}


async def test_a_caption_goes_as_a_text_just_before_the_attachment(platform: Platform) -> None:
    seen: list[httpx.Request] = []
    answers = iter(["m_caption", "m_attachment"])

    def answer(_: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"recipient_id": platform.recipient, "message_id": next(answers)})

    platform_id = await connector(platform, answer, seen).send(
        message(platform, payload=file_payload("image/png", caption="Olá!"))
    )

    assert platform_id == "m_attachment"  # the receipts that matter are the file's
    first, second = (json.loads(r.content) for r in seen)
    assert first == platform.body  # untagged: the caption's echo must not pass for the whole delivery
    assert second["message"]["attachment"]["type"] == "image"
    assert delivery_of_tag(second["message"]["metadata"]) is not None


async def test_a_caption_is_shortened_only_where_a_text_cannot_carry_it(platform: Platform) -> None:
    seen: list[httpx.Request] = []
    caption = "ç" * 1024  # 1,024 characters (Messenger takes 2,000) in 2,048 UTF-8 bytes (Instagram takes 1,000)

    await connector(platform, sent, seen).send(message(platform, payload=file_payload("image/png", caption=caption)))

    text = json.loads(seen[0].content)["message"]["text"]
    if platform.channel is Channel.INSTAGRAM:
        assert len(text.encode()) <= 1000
        assert text == "ç" * 498 + "…"
    else:
        assert text == caption
