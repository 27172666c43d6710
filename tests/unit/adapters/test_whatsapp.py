"""The WhatsApp connector speaks the Cloud API and maps its answers to sent, retry later or failed."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable

import httpx
import pytest

from adapters.channels.whatsapp import WhatsAppConnector, callback_data, delivery_from_callback
from application.ports import ChannelError, DeliveryKey, OutboundMessage
from domain.channels import Channel, ChannelAddress
from domain.ids import ConversationId, MessageId

pytestmark = pytest.mark.unit

TOKEN = "EAAG-secret-access-token"
PHONE_NUMBER_ID = "106540352242922"
WAMID = "wamid.HBgLNTUxMTk5OTk5ODg4OBUCABEYEjQ2"
OK = {
    "messaging_product": "whatsapp",
    "contacts": [{"input": "5511999998888", "wa_id": "5511999998888"}],
    "messages": [{"id": WAMID}],
}


def delivery(recipient_key: str | None = None) -> DeliveryKey:
    return (MessageId(uuid.uuid4()), recipient_key or f"user:{uuid.uuid4()}", Channel.WHATSAPP)


def message(
    text: str = "Olá!",
    *,
    payload: dict[str, object] | None = None,
    to: str = "whatsapp:+5511999998888",
    key: DeliveryKey | None = None,
) -> OutboundMessage:
    return OutboundMessage(
        delivery=key or delivery(),
        conversation_id=ConversationId(uuid.uuid4()),
        seq=1,
        to=ChannelAddress.parse(to),
        sender="user:x",
        payload=payload or {"type": "text", "text": text},
    )


def connector(
    answer: Callable[[httpx.Request], httpx.Response],
    seen: list[httpx.Request],
    *,
    base_url: str = "http://graph.test/",
    api_version: str | None = None,
) -> WhatsAppConnector:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answer(request)

    transport = httpx.MockTransport(handler)
    if api_version is None:  # the connector's default
        return WhatsAppConnector(TOKEN, PHONE_NUMBER_ID, base_url=base_url, transport=transport)
    return WhatsAppConnector(TOKEN, PHONE_NUMBER_ID, base_url=base_url, api_version=api_version, transport=transport)


def ok(_: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json=OK)


def graph_error(
    status: int,
    code: int | str,
    message: str,
    *,
    details: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: object,
) -> Callable[[httpx.Request], httpx.Response]:
    error: dict[str, object] = {"message": message, "type": "OAuthException", "code": code, "fbtrace_id": "Az8or2"}
    if details is not None:
        error["error_data"] = {"messaging_product": "whatsapp", "details": details}
    error.update(extra)
    return lambda _: httpx.Response(status, json={"error": error}, headers=headers)


async def test_a_text_goes_to_the_messages_endpoint_and_the_wamid_comes_back() -> None:
    seen: list[httpx.Request] = []
    wa = connector(ok, seen)
    sent = message()
    message_id, recipient_key, _ = sent.delivery

    platform_id = await wa.send(sent)

    assert platform_id == WAMID
    [request] = seen
    assert (request.method, str(request.url)) == ("POST", f"http://graph.test/v25.0/{PHONE_NUMBER_ID}/messages")
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "5511999998888",
        "type": "text",
        "text": {"preview_url": False, "body": "Olá!"},
        "biz_opaque_callback_data": f"c4a:{message_id}:{recipient_key}:whatsapp",
    }
    await wa.close()


async def test_the_api_version_and_base_url_make_the_endpoint() -> None:
    seen: list[httpx.Request] = []
    wa = connector(ok, seen, base_url="https://sandbox.test/graph", api_version="v25.0")

    await wa.send(message())

    assert str(seen[0].url) == f"https://sandbox.test/graph/v25.0/{PHONE_NUMBER_ID}/messages"


async def test_a_text_of_exactly_the_limit_is_sent() -> None:
    seen: list[httpx.Request] = []

    await connector(ok, seen).send(message("é" * 4096))

    assert json.loads(seen[0].content)["text"]["body"] == "é" * 4096


PENDING_TOO_LONG = "Message failed to send because more than 24 hours have passed since the customer last replied."


@pytest.mark.parametrize(
    ("answer", "permanent", "retry_after"),
    [
        (graph_error(429, 130429, "(#130429) Rate limit hit", headers={"Retry-After": "7"}), False, 7.0),
        (graph_error(400, 130429, "(#130429) Rate limit hit"), False, None),
        (graph_error(400, 131056, "(#131056) (Business Account, Consumer Account) pair rate limit hit"), False, None),
        (graph_error(400, "131056", "(#131056) pair rate limit hit"), False, None),
        (graph_error(400, 4, "(#4) Application request limit reached"), False, None),
        (graph_error(400, 80007, "(#80007) Rate limit issues"), False, None),
        (graph_error(429, 0, "Too many requests"), False, None),
        (lambda _: httpx.Response(429, text="slow down", headers={"Retry-After": "3"}), False, 3.0),
        (lambda _: httpx.Response(429, text="slow down", headers={"Retry-After": "soon"}), False, None),
        (graph_error(400, 131047, "(#131047) Re-engagement message", details=PENDING_TOO_LONG), True, None),
        (graph_error(400, 131026, "(#131026) Message Undeliverable"), True, None),
        (graph_error(400, 100, "(#100) Invalid parameter"), True, None),
        (graph_error(401, 190, "Error validating access token: Session has expired"), True, None),
        (graph_error(403, 10, "(#10) Application does not have permission for this action"), True, None),
        (graph_error(500, 131000, "(#131000) Something went wrong"), False, None),
        (graph_error(400, 131000, "(#131000) Something went wrong"), False, None),
        (graph_error(400, 131016, "(#131016) Service unavailable"), False, None),
        (graph_error(503, 2, "(#2) Service temporarily unavailable"), False, None),
        (graph_error(400, 100, "(#100) Temporary failure", is_transient=True), False, None),
        (graph_error(400, 100, "(#100) Invalid parameter", is_transient=False), True, None),
        (graph_error(500, 100, "An unknown error occurred"), False, None),
    ],
    ids=[
        "429 throughput with Retry-After",
        "throughput as 400",
        "pair rate",
        "pair rate code quoted",
        "app call limit",
        "account rate limit",
        "bare 429",
        "429 not Graph with Retry-After",
        "429 with an HTTP-date-like Retry-After",
        "24-hour window closed",
        "undeliverable",
        "invalid parameter",
        "bad token",
        "no permission",
        "something went wrong as 500",
        "something went wrong as 400",
        "service unavailable",
        "API service down",
        "marked transient",
        "marked not transient",
        "5xx with a permanent-looking code",
    ],
)
async def test_failures_are_mapped_to_retry_or_fail(
    answer: Callable[[httpx.Request], httpx.Response], permanent: bool, retry_after: float | None
) -> None:
    wa = connector(answer, [])

    with pytest.raises(ChannelError) as raised:
        await wa.send(message())

    assert (raised.value.permanent, raised.value.retry_after) == (permanent, retry_after)
    assert raised.value.reason.startswith("whatsapp: ")


async def test_a_refusal_carries_the_platforms_message_and_details() -> None:
    wa = connector(graph_error(400, 131047, "(#131047) Re-engagement message", details=PENDING_TOO_LONG), [])

    with pytest.raises(ChannelError) as raised:
        await wa.send(message())

    assert raised.value.reason == f"whatsapp: (#131047) Re-engagement message: {PENDING_TOO_LONG}"
    assert str(raised.value) == raised.value.reason


async def test_the_token_never_appears_in_a_reason() -> None:
    wa = connector(graph_error(401, 190, f"Invalid OAuth access token {TOKEN}"), [])

    with pytest.raises(ChannelError) as raised:
        await wa.send(message())

    assert raised.value.permanent
    assert TOKEN not in raised.value.reason
    assert raised.value.reason == "whatsapp: Invalid OAuth access token <token>"


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (httpx.ConnectError("refused"), "whatsapp: send failed: ConnectError"),
        (httpx.ConnectTimeout("slow"), "whatsapp: send timed out"),
        (httpx.ReadTimeout("slow"), "whatsapp: send timed out"),
        (httpx.ReadError("reset"), "whatsapp: send failed: ReadError"),
    ],
    ids=["connection", "connect timeout", "read timeout", "broken"],
)
async def test_an_unreachable_platform_is_retried(error: Exception, reason: str) -> None:
    def broken(_: httpx.Request) -> httpx.Response:
        raise error

    with pytest.raises(ChannelError) as raised:
        await connector(broken, []).send(message())

    assert (raised.value.permanent, raised.value.retry_after, raised.value.reason) == (False, None, reason)


@pytest.mark.parametrize(
    ("answer", "status"),
    [
        (lambda _: httpx.Response(502, text="<html>bad gateway</html>"), 502),
        (lambda _: httpx.Response(200, text="<html>captive portal</html>"), 200),
        (lambda _: httpx.Response(404, json={"detail": "not found"}), 404),
        (lambda _: httpx.Response(200, json=["not", "an", "object"]), 200),
    ],
    ids=["502 page", "200 page", "404 JSON", "200 JSON list"],
)
async def test_an_answer_that_is_not_graphs_is_retried(
    answer: Callable[[httpx.Request], httpx.Response], status: int
) -> None:
    with pytest.raises(ChannelError) as raised:
        await connector(answer, []).send(message())

    assert not raised.value.permanent
    assert raised.value.reason == f"whatsapp: HTTP {status} without a Graph answer"


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (message("x" * 4097), "a text is 1 to 4096 characters"),
        (message(payload={"type": "text", "text": ""}), "a text is 1 to 4096 characters"),
        (message(payload={"type": "file", "file_id": str(uuid.uuid4()), "text": "caption"}), "needs a url"),
        (message(payload={"type": "sticker", "text": "a text under another type"}), "is not a text"),
        (message(to="telegram:987654321"), "cannot send to a telegram address"),
    ],
    ids=["too long", "empty", "file", "sticker", "not a WhatsApp address"],
)
async def test_what_cannot_be_sent_fails_without_a_call(bad: OutboundMessage, reason: str) -> None:
    seen: list[httpx.Request] = []

    with pytest.raises(ChannelError) as raised:
        await connector(ok, seen).send(bad)

    assert raised.value.permanent
    assert raised.value.reason.startswith("whatsapp: ")
    assert reason in raised.value.reason
    assert seen == []


@pytest.mark.parametrize(
    "body",
    [{"messaging_product": "whatsapp", "messages": []}, {"messages": [{"id": ""}]}, {"contacts": []}],
    ids=["no messages", "empty id", "no messages key"],
)
async def test_an_answer_without_a_wamid_is_retried(body: dict[str, object]) -> None:
    wa = connector(lambda _: httpx.Response(200, json=body), [])

    with pytest.raises(ChannelError, match="no message id") as raised:
        await wa.send(message())

    assert not raised.value.permanent


async def test_whatsapp_gives_receipts_but_no_lookup() -> None:
    wa = connector(ok, [])

    assert wa.channel is Channel.WHATSAPP
    assert (wa.capabilities.receipts, wa.capabilities.lookup) == (True, False)
    assert (wa.capabilities.max_attachment_bytes, wa.capabilities.max_text_length) == (100 * 1024 * 1024, 4096)
    assert await wa.find_sent(message().delivery) is None


async def test_a_closed_connector_sends_nothing() -> None:
    seen: list[httpx.Request] = []
    wa = connector(ok, seen)

    await wa.close()

    with pytest.raises(RuntimeError):
        await wa.send(message())
    assert seen == []


@pytest.mark.parametrize(
    "key",
    [delivery(), delivery("whatsapp:+5511999998888"), delivery("instagram:ana.souza"), delivery("messenger:1234")],
    ids=["user", "whatsapp contact", "instagram contact", "messenger contact"],
)
def test_callback_data_round_trips(key: DeliveryKey) -> None:
    data = callback_data(key)

    assert data.startswith("c4a:")
    assert len(data.encode()) <= 512
    assert delivery_from_callback(data) == key


def test_callback_data_keeps_the_channel() -> None:
    key = (MessageId(uuid.uuid4()), "user:x", Channel.TELEGRAM)

    assert delivery_from_callback(callback_data(key)) == key


@pytest.mark.parametrize(
    "data",
    [
        "",
        "c4a:",
        "c4a:msg_b76ffb95",
        "c4a:not-a-uuid:user:x:whatsapp",
        f"c4a:{uuid.uuid4()}:user:x:fax",
        f"c4a:{uuid.uuid4()}::whatsapp",
        f"c4a:{uuid.uuid4()}:whatsapp",
        f"xyz:{uuid.uuid4()}:user:x:whatsapp",
    ],
    ids=["empty", "prefix only", "not ours", "bad uuid", "bad channel", "empty recipient", "no recipient", "other"],
)
def test_foreign_callback_data_is_not_a_delivery(data: str) -> None:
    assert delivery_from_callback(data) is None


def test_callback_data_over_the_platform_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="512 bytes"):
        callback_data(delivery("user:" + "x" * 600))


async def test_a_key_too_long_to_carry_is_left_out_and_the_text_still_goes() -> None:
    seen: list[httpx.Request] = []

    assert await connector(ok, seen).send(message(key=delivery("user:" + "x" * 600))) == WAMID

    body = json.loads(seen[0].content)
    assert "biz_opaque_callback_data" not in body
    assert body["text"]["body"] == "Olá!"


@pytest.mark.parametrize(
    ("token", "phone_number_id", "match"),
    [("", PHONE_NUMBER_ID, "access token"), (TOKEN, "", "phone number id")],
    ids=["no token", "no phone number id"],
)
def test_a_token_and_a_phone_number_id_are_required(token: str, phone_number_id: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        WhatsAppConnector(token, phone_number_id)


async def test_a_file_goes_as_a_document_by_link_with_its_name_and_caption() -> None:
    seen: list[httpx.Request] = []
    file = {
        "type": "file",
        "url": "https://files.test/blob?sig=1",
        "filename": "contrato.pdf",
        "size": 123_456,
        "content_type": "application/pdf",
        "caption": "Contrato",
    }

    platform_id = await connector(ok, seen).send(message(payload=file))

    assert platform_id == WAMID
    [request] = seen
    body = json.loads(request.content)
    assert body["type"] == "document"
    assert body["document"] == {
        "link": "https://files.test/blob?sig=1",
        "filename": "contrato.pdf",
        "caption": "Contrato",
    }
    assert "text" not in body
    assert body["biz_opaque_callback_data"].startswith("c4a:")


async def test_a_file_without_a_caption_sends_none() -> None:
    seen: list[httpx.Request] = []
    file = {"type": "file", "url": "https://files.test/b", "filename": "a.bin", "size": 1, "content_type": "x/y"}

    await connector(ok, seen).send(message(payload=file))

    assert json.loads(seen[0].content)["document"] == {"link": "https://files.test/b", "filename": "a.bin"}
