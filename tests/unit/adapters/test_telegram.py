"""The Telegram connector speaks the Bot API and maps its answers to sent, retry later or failed."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable

import httpx
import pytest

from adapters.channels.telegram import TelegramConnector, TelegramUpdates, next_offset
from application.ports import ChannelError, OutboundMessage
from domain.channels import Channel, ChannelAddress
from domain.ids import ConversationId, MessageId

pytestmark = pytest.mark.unit

TOKEN = "123456:ABC-secret"


def message(text: str = "Olá!", *, payload: dict[str, object] | None = None) -> OutboundMessage:
    return OutboundMessage(
        delivery=(MessageId(uuid.uuid4()), f"user:{uuid.uuid4()}", Channel.TELEGRAM),
        conversation_id=ConversationId(uuid.uuid4()),
        seq=1,
        to=ChannelAddress.parse("telegram:987654321"),
        sender="user:x",
        payload=payload or {"type": "text", "text": text},
    )


def connector(answer: Callable[[httpx.Request], httpx.Response], seen: list[httpx.Request]) -> TelegramConnector:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answer(request)

    return TelegramConnector(TOKEN, base_url="http://bot-api.test/", transport=httpx.MockTransport(handler))


def failure(status: int, description: str, **parameters: object) -> Callable[[httpx.Request], httpx.Response]:
    body = {"ok": False, "error_code": status, "description": description}
    if parameters:
        body["parameters"] = parameters
    return lambda _: httpx.Response(status, json=body)


async def test_a_text_goes_to_send_message_and_the_platform_id_comes_back() -> None:
    seen: list[httpx.Request] = []
    ok = {"ok": True, "result": {"message_id": 42, "chat": {"id": 987654321, "type": "private"}, "text": "Olá!"}}
    tg = connector(lambda _: httpx.Response(200, json=ok), seen)

    platform_id = await tg.send(message())

    assert platform_id == "987654321:42"
    [request] = seen
    assert (request.method, str(request.url)) == ("POST", f"http://bot-api.test/bot{TOKEN}/sendMessage")
    assert json.loads(request.content) == {"chat_id": "987654321", "text": "Olá!"}
    await tg.close()


@pytest.mark.parametrize(
    ("answer", "permanent", "retry_after"),
    [
        (failure(429, "Too Many Requests: retry after 35", retry_after=35), False, 35.0),
        (failure(403, "Forbidden: bot was blocked by the user"), True, None),
        (failure(400, "Bad Request: chat not found"), True, None),
        (failure(500, "Internal Server Error"), False, None),
        (failure(502, "Bad Gateway"), False, None),
        (lambda _: httpx.Response(502, text="<html>bad gateway</html>"), False, None),
    ],
    ids=["flood control", "blocked", "unknown chat", "500", "502", "not the Bot API"],
)
async def test_failures_are_mapped_to_retry_or_fail(
    answer: Callable[[httpx.Request], httpx.Response], permanent: bool, retry_after: float | None
) -> None:
    tg = connector(answer, [])

    with pytest.raises(ChannelError) as raised:
        await tg.send(message())

    assert (raised.value.permanent, raised.value.retry_after) == (permanent, retry_after)
    assert raised.value.reason.startswith("telegram: ")


@pytest.mark.parametrize(
    "error", [httpx.ConnectError("refused"), httpx.ReadTimeout("slow")], ids=["connection", "timeout"]
)
async def test_an_unreachable_platform_is_retried(error: Exception) -> None:
    def broken(_: httpx.Request) -> httpx.Response:
        raise error

    with pytest.raises(ChannelError) as raised:
        await connector(broken, []).send(message())

    assert not raised.value.permanent


async def test_what_cannot_be_sent_fails_without_a_call() -> None:
    seen: list[httpx.Request] = []
    tg = connector(lambda _: httpx.Response(200, json={"ok": True, "result": {"message_id": 1}}), seen)

    for bad in [message("x" * 4097), message(payload={"type": "file", "file_id": str(uuid.uuid4())})]:
        with pytest.raises(ChannelError) as raised:
            await tg.send(bad)
        assert raised.value.permanent
    assert seen == []


async def test_telegram_gives_no_receipts_and_no_lookup() -> None:
    tg = connector(lambda _: httpx.Response(200, json={"ok": True, "result": {}}), [])

    assert (tg.capabilities.receipts, tg.capabilities.lookup) == (False, False)
    assert await tg.find_sent(message().delivery) is None
    with pytest.raises(ChannelError, match="no message_id"):
        await tg.send(message())


def test_a_bot_token_is_required() -> None:
    with pytest.raises(ValueError, match="bot token"):
        TelegramConnector("")


# --- getUpdates long polling ----------------------------------------------------------------------


def updates(answer: Callable[[httpx.Request], httpx.Response], seen: list[httpx.Request]) -> TelegramUpdates:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answer(request)

    return TelegramUpdates(
        TOKEN, base_url="http://bot-api.test", poll_seconds=5, transport=httpx.MockTransport(handler)
    )


async def test_get_updates_asks_from_the_offset_and_returns_the_updates() -> None:
    seen: list[httpx.Request] = []
    batch = [{"update_id": 10, "message": {"message_id": 1}}, {"update_id": 11}, "not an update"]
    sut = updates(lambda _: httpx.Response(200, json={"ok": True, "result": batch}), seen)

    got = await sut.next_batch(10)
    first = await sut.next_batch(None)

    assert got == batch[:2]
    assert str(seen[0].url) == f"http://bot-api.test/bot{TOKEN}/getUpdates"
    assert json.loads(seen[0].content) == {"timeout": 5, "allowed_updates": ["message"], "offset": 10}
    assert "offset" not in json.loads(seen[1].content)  # the first call takes what is pending
    assert first == got
    assert next_offset(got, None) == 12
    assert next_offset([], 12) == 12


@pytest.mark.parametrize(
    ("status", "body", "permanent", "retry_after"),
    [
        (409, {"ok": False, "error_code": 409, "description": "Conflict: webhook is active"}, True, None),
        (401, {"ok": False, "error_code": 401, "description": "Unauthorized"}, True, None),
        (
            429,
            {"ok": False, "error_code": 429, "description": "Too Many", "parameters": {"retry_after": 3}},
            False,
            3.0,
        ),
        (502, "<html>bad gateway</html>", False, None),
    ],
)
async def test_get_updates_failures_say_whether_to_poll_again(
    status: int, body: object, permanent: bool, retry_after: float | None
) -> None:
    answer = httpx.Response(status, json=body) if isinstance(body, dict) else httpx.Response(status, text=str(body))
    sut = updates(lambda _: answer, [])

    with pytest.raises(ChannelError) as failed:
        await sut.next_batch(1)

    assert (failed.value.permanent, failed.value.retry_after) == (permanent, retry_after)
    assert TOKEN not in failed.value.reason


FILE_BYTES = bytes(range(256)) * 1000  # 256,000 bytes


def file_message(caption: str | None = "Contrato", url: str = "https://files.test/blob?sig=1") -> OutboundMessage:
    payload: dict[str, object] = {
        "type": "file",
        "url": url,
        "filename": 'con"trato.pdf',
        "size": len(FILE_BYTES),
        "content_type": "application/pdf",
    }
    return message(payload=payload | ({"caption": caption} if caption else {}))


def bot_api_and_files(
    link: Callable[[httpx.Request], httpx.Response] = lambda _: httpx.Response(200, content=FILE_BYTES),
) -> Callable[[httpx.Request], httpx.Response]:
    ok = {"ok": True, "result": {"message_id": 43, "chat": {"id": 987654321, "type": "private"}}}

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.host == "files.test":
            return link(request)
        request.read()
        return httpx.Response(200, json=ok)

    return answer


async def test_a_file_is_streamed_from_its_link_to_send_document_as_a_multipart_upload() -> None:
    seen: list[httpx.Request] = []
    tg = connector(bot_api_and_files(), seen)

    platform_id = await tg.send(file_message())

    assert platform_id == "987654321:43"
    fetch, upload = seen
    assert (fetch.method, str(fetch.url)) == ("GET", "https://files.test/blob?sig=1")
    assert (upload.method, str(upload.url)) == ("POST", f"http://bot-api.test/bot{TOKEN}/sendDocument")
    content_type, _, boundary = upload.headers["content-type"].partition("; boundary=")
    assert content_type == "multipart/form-data"
    body = upload.content
    assert int(upload.headers["content-length"]) == len(body)
    parts = body.split(f"--{boundary}".encode())
    assert parts[0] == b"" and parts[-1] == b"--\r\n"
    fields = {}
    for part in parts[1:-1]:
        head, _, value = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        fields[head.split(b'name="')[1].split(b'"')[0].decode()] = (head, value.removesuffix(b"\r\n"))
    assert fields["chat_id"][1] == b"987654321"
    assert fields["caption"][1] == b"Contrato"
    head, data = fields["document"]
    assert b'filename="con_trato.pdf"' in head  # a quote cannot be escaped in the header
    assert b"Content-Type: application/pdf" in head
    assert data == FILE_BYTES


async def test_a_file_without_a_caption_sends_none() -> None:
    seen: list[httpx.Request] = []

    await connector(bot_api_and_files(), seen).send(file_message(caption=None))

    assert b'name="caption"' not in seen[1].content


@pytest.mark.parametrize(("status", "permanent"), [(404, True), (403, True), (503, False)])
async def test_a_link_that_does_not_serve_the_file_sends_nothing(status: int, permanent: bool) -> None:
    seen: list[httpx.Request] = []
    tg = connector(bot_api_and_files(lambda _: httpx.Response(status)), seen)

    with pytest.raises(ChannelError) as raised:
        await tg.send(file_message())

    assert raised.value.permanent is permanent
    assert f"HTTP {status}" in raised.value.reason
    assert [r.method for r in seen] == ["GET"]


async def test_a_link_that_serves_fewer_bytes_than_the_file_has_is_retried() -> None:
    seen: list[httpx.Request] = []
    tg = connector(bot_api_and_files(lambda _: httpx.Response(200, content=FILE_BYTES[:-1])), seen)

    with pytest.raises(ChannelError) as raised:
        await tg.send(file_message())

    assert not raised.value.permanent
    assert "served 255999 of 256000 bytes" in raised.value.reason
