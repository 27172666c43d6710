"""The sandbox plays the Telegram Bot API: sendMessage, sendDocument, getUpdates, setWebhook and the update webhook."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import attrs
import httpx
import pytest
from litestar.testing import AsyncTestClient

from entrypoints.sandbox.app import create_app
from tests.unit.sandbox.conftest import CHAT4ALL, CONFIG, TG_SECRET, TG_TOKEN, Chat4AllStub, SandboxFactory, until

pytestmark = pytest.mark.unit

BOT = f"/bot{TG_TOKEN}"
CHAT = 987654321


@pytest.fixture
async def polling(sandbox_with: SandboxFactory) -> AsyncIterator[AsyncTestClient[Any]]:
    """A bot whose updates wait for getUpdates (no webhook)."""
    async with sandbox_with(telegram_updates="polling") as client:
        yield client


async def inbound(client: AsyncTestClient[Any], text: str, **extra: Any) -> Any:
    response = await client.post(
        "/sandbox/inbound", json={"channel": "telegram", "from": str(CHAT), "text": text, **extra}
    )
    assert response.status_code == 200, response.text
    return response.json()


async def test_send_message_answers_the_message_with_per_chat_increasing_ids(sandbox: AsyncTestClient[Any]) -> None:
    first = await sandbox.post(f"{BOT}/sendMessage", json={"chat_id": CHAT, "text": "Olá!"})
    second = await sandbox.post(f"{BOT}/sendMessage", json={"chat_id": str(CHAT), "text": "de novo"})
    other = await sandbox.post(f"{BOT}/sendMessage", json={"chat_id": 111, "text": "oi"})

    assert first.status_code == 200
    answer = first.json()
    assert answer["ok"] is True
    result = answer["result"]
    assert result["from"]["id"] == 123456  # the bot id is the token's prefix
    assert result["from"]["is_bot"] is True
    assert result["chat"]["id"] == CHAT
    assert result["chat"]["type"] == "private"
    assert result["text"] == "Olá!"
    assert isinstance(result["date"], int)
    assert (result["message_id"], second.json()["result"]["message_id"]) == (1, 2)
    assert other.json()["result"]["message_id"] == 1


async def test_sends_are_recorded_with_chat_and_message_id(sandbox: AsyncTestClient[Any]) -> None:
    await sandbox.post(f"{BOT}/sendMessage", json={"chat_id": CHAT, "text": "um"})
    await sandbox.post(f"{BOT}/sendMessage", json={"chat_id": 111, "text": "outro"})

    items = (await sandbox.get("/sandbox/messages", params={"channel": "telegram", "to": str(CHAT)})).json()["items"]

    assert [(i["to"], i["text"], i["platform_message_id"]) for i in items] == [(str(CHAT), "um", f"{CHAT}:1")]


async def test_send_message_takes_form_and_query_parameters_and_method_names_in_any_case(
    sandbox: AsyncTestClient[Any],
) -> None:
    by_form = await sandbox.post(f"{BOT}/sendMessage", data={"chat_id": str(CHAT), "text": "form"})
    by_query = await sandbox.get(f"{BOT}/SENDMESSAGE", params={"chat_id": str(CHAT), "text": "query"})

    assert by_form.json()["result"]["text"] == "form"
    assert by_query.json()["result"]["text"] == "query"


async def test_send_document_as_a_multipart_upload(sandbox: AsyncTestClient[Any]) -> None:
    response = await sandbox.post(
        f"{BOT}/sendDocument",
        data={"chat_id": str(CHAT), "caption": "Contrato"},
        files={"document": ("contract.pdf", b"%PDF-1.7 ...", "application/pdf")},
    )

    assert response.status_code == 200
    result = response.json()["result"]
    assert result["caption"] == "Contrato"
    document = result["document"]
    assert (document["file_name"], document["mime_type"], document["file_size"]) == (
        "contract.pdf",
        "application/pdf",
        12,
    )
    assert document["file_id"]
    [item] = (await sandbox.get("/sandbox/messages")).json()["items"]
    assert (item["type"], item["text"], item["file_name"]) == ("document", "Contrato", "contract.pdf")


async def test_send_document_by_url_and_by_a_known_file_id(sandbox: AsyncTestClient[Any]) -> None:
    by_url = await sandbox.post(
        f"{BOT}/sendDocument", json={"chat_id": CHAT, "document": "https://files.example/a.pdf?sig=1"}
    )
    file_id = by_url.json()["result"]["document"]["file_id"]
    again = await sandbox.post(f"{BOT}/sendDocument", json={"chat_id": CHAT, "document": file_id})
    unknown = await sandbox.post(f"{BOT}/sendDocument", json={"chat_id": CHAT, "document": "no-such-file"})

    assert by_url.json()["result"]["document"]["file_name"] == "a.pdf"
    assert again.json()["result"]["document"]["file_id"] == file_id
    assert unknown.status_code == 400
    items = (await sandbox.get("/sandbox/messages")).json()["items"]
    assert items[0]["document_url"] == "https://files.example/a.pdf?sig=1"


@pytest.mark.parametrize(
    ("body", "description"),
    [
        ({"text": "x"}, "Bad Request: chat_id is empty"),
        ({"chat_id": "@somechannel", "text": "x"}, "Bad Request: chat not found"),
        ({"chat_id": CHAT, "text": ""}, "Bad Request: message text is empty"),
        ({"chat_id": CHAT}, "Bad Request: message text is empty"),
        ({"chat_id": CHAT, "text": "x" * 4097}, "Bad Request: message is too long"),
    ],
)
async def test_bad_requests_are_400_with_telegram_s_description(
    sandbox: AsyncTestClient[Any], body: dict[str, Any], description: str
) -> None:
    response = await sandbox.post(f"{BOT}/sendMessage", json=body)

    assert response.status_code == 400
    assert response.json() == {"ok": False, "error_code": 400, "description": description}


async def test_a_wrong_token_is_401_unauthorized(sandbox: AsyncTestClient[Any]) -> None:
    response = await sandbox.post("/bot123456:wrong/sendMessage", json={"chat_id": CHAT, "text": "x"})

    assert response.status_code == 401
    assert response.json() == {"ok": False, "error_code": 401, "description": "Unauthorized"}


async def test_an_unconfigured_bot_is_not_found(sandbox_with: SandboxFactory) -> None:
    async with sandbox_with(telegram_bot_token=None) as client:
        response = await client.post(f"{BOT}/sendMessage", json={"chat_id": CHAT, "text": "x"})

    assert (response.status_code, response.json()["error_code"]) == (404, 404)


async def test_an_unknown_method_is_not_found(sandbox: AsyncTestClient[Any]) -> None:
    response = await sandbox.post(f"{BOT}/sendSticker", json={"chat_id": CHAT})

    assert response.json() == {"ok": False, "error_code": 404, "description": "Not Found"}


async def test_get_me_describes_the_bot(sandbox: AsyncTestClient[Any]) -> None:
    me = (await sandbox.get(f"{BOT}/getMe")).json()["result"]

    assert (me["id"], me["is_bot"]) == (123456, True)
    assert me["username"]


async def test_sends_produce_no_webhooks_bots_get_no_receipts(
    sandbox: AsyncTestClient[Any], chat4all: Chat4AllStub
) -> None:
    await sandbox.post("/sandbox/settings", json={"auto_deliver": True, "auto_read": True})
    await sandbox.post(f"{BOT}/sendMessage", json={"chat_id": CHAT, "text": "x"})
    await sandbox.post(
        "/v25.0/me/messages",
        json={"recipient": {"id": "1"}, "message": {"text": "x"}},
        headers={"Authorization": f"Bearer {CONFIG.messenger_page_token}"},
    )

    await chat4all.wait_updates("messenger", 2)  # receipts of a later send came: Telegram's would have too

    assert chat4all.to("telegram") == []


async def test_inbound_goes_to_the_webhook_with_the_secret_header(
    sandbox: AsyncTestClient[Any], chat4all: Chat4AllStub
) -> None:
    first = await inbound(sandbox, "oi", name="Ana")
    second = await inbound(sandbox, "tudo bem?")

    one, two = chat4all.to("telegram")
    assert one.url == f"{CHAT4ALL}/webhooks/telegram"
    assert one.headers["x-telegram-bot-api-secret-token"] == TG_SECRET
    assert one.headers["content-type"] == "application/json"
    update = one.json
    message = update["message"]
    assert message["from"] == {"id": CHAT, "is_bot": False, "first_name": "Ana"}
    assert message["chat"] == {"id": CHAT, "type": "private", "first_name": "Ana"}
    assert (message["text"], message["message_id"]) == ("oi", 1)
    assert isinstance(message["date"], int)
    assert two.json["update_id"] == update["update_id"] + 1
    assert (first["platform_message_id"], second["platform_message_id"]) == (f"{CHAT}:1", f"{CHAT}:2")
    assert first["webhook_status"] == 200
    assert b"oi" in one.body


async def test_a_reply_carries_the_replied_message(sandbox: AsyncTestClient[Any], chat4all: Chat4AllStub) -> None:
    sent = (await sandbox.post(f"{BOT}/sendMessage", json={"chat_id": CHAT, "text": "Como posso ajudar?"})).json()

    answer = await inbound(sandbox, "Quero ajuda", reply_to=f"{CHAT}:{sent['result']['message_id']}")

    assert answer["platform_message_id"] == f"{CHAT}:2"  # one numbering per chat, both directions
    [call] = chat4all.to("telegram")
    replied = call.json["message"]["reply_to_message"]
    assert replied["message_id"] == 1
    assert replied["chat"]["id"] == CHAT
    assert replied["text"] == "Como posso ajudar?"
    assert replied["from"]["is_bot"] is True
    assert isinstance(replied["date"], int)


async def test_a_reply_to_another_chat_is_refused(sandbox: AsyncTestClient[Any]) -> None:
    await sandbox.post(f"{BOT}/sendMessage", json={"chat_id": 111, "text": "x"})

    response = await sandbox.post(
        "/sandbox/inbound", json={"channel": "telegram", "from": str(CHAT), "text": "x", "reply_to": "111:1"}
    )

    assert response.status_code == 400


async def test_get_updates_is_a_conflict_while_a_webhook_is_set(sandbox: AsyncTestClient[Any]) -> None:
    response = await sandbox.post(f"{BOT}/getUpdates")

    assert response.status_code == 409
    assert response.json() == {
        "ok": False,
        "error_code": 409,
        "description": "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to "
        "delete the webhook first",
    }


async def test_updates_queue_for_get_updates_until_confirmed_by_offset(
    polling: AsyncTestClient[Any], chat4all: Chat4AllStub
) -> None:
    answers = [await inbound(polling, text) for text in ("um", "dois", "três")]

    assert [a["webhook_status"] for a in answers] == [None, None, None]  # queued, not posted
    assert chat4all.calls == []
    updates = (await polling.post(f"{BOT}/getUpdates")).json()["result"]
    assert [u["message"]["text"] for u in updates] == ["um", "dois", "três"]
    ids = [u["update_id"] for u in updates]
    assert ids == sorted(ids) == list(range(ids[0], ids[0] + 3))

    limited = (await polling.get(f"{BOT}/getUpdates", params={"offset": ids[1], "limit": 1})).json()["result"]
    assert [u["update_id"] for u in limited] == [ids[1]]
    rest = (await polling.post(f"{BOT}/getUpdates", json={"offset": ids[0]})).json()["result"]
    assert [u["update_id"] for u in rest] == ids[1:]  # the first was confirmed by the higher offset
    after = (await polling.post(f"{BOT}/getUpdates", json={"offset": ids[2] + 1})).json()["result"]
    assert after == []


async def test_a_negative_offset_keeps_only_the_last_updates(polling: AsyncTestClient[Any]) -> None:
    for text in ("um", "dois", "três"):
        await inbound(polling, text)

    last = (await polling.post(f"{BOT}/getUpdates", json={"offset": -1})).json()["result"]

    assert [u["message"]["text"] for u in last] == ["três"]
    assert len((await polling.post(f"{BOT}/getUpdates")).json()["result"]) == 1


async def test_get_updates_waits_for_an_update_up_to_its_timeout(chat4all: Chat4AllStub) -> None:
    # In the test's own event loop (not the test client's portal), so one request can wait while another runs.
    app = create_app(attrs.evolve(CONFIG, telegram_updates="polling"), transport=chat4all.transport)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sandbox.test") as client:
        empty = await client.post(f"{BOT}/getUpdates", json={"timeout": 0})
        waiting = asyncio.create_task(client.post(f"{BOT}/getUpdates", json={"timeout": 5}))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        said = await client.post("/sandbox/inbound", json={"channel": "telegram", "from": str(CHAT), "text": "oi"})
        woken = await asyncio.wait_for(waiting, 2)
    await app.state.webhooks.close()

    assert empty.json() == {"ok": True, "result": []}
    assert said.json()["webhook_status"] is None
    assert [u["message"]["text"] for u in woken.json()["result"]] == ["oi"]


async def test_set_webhook_delivers_what_waited_and_delete_webhook_reenables_polling(
    polling: AsyncTestClient[Any], chat4all: Chat4AllStub
) -> None:
    await inbound(polling, "antes")
    url = "http://elsewhere.test/hook"

    set_ = await polling.post(f"{BOT}/setWebhook", json={"url": url, "secret_token": "new-secret"})

    assert set_.json() == {"ok": True, "result": True, "description": "Webhook was set"}
    info = (await polling.get(f"{BOT}/getWebhookInfo")).json()["result"]
    assert (info["url"], info["pending_update_count"]) == (url, 0)
    await until(lambda: bool(chat4all.calls))
    [pending] = chat4all.calls
    assert pending.url == url
    assert pending.headers["x-telegram-bot-api-secret-token"] == "new-secret"
    assert pending.json["message"]["text"] == "antes"
    assert (await polling.post(f"{BOT}/getUpdates")).status_code == 409

    deleted = await polling.post(f"{BOT}/deleteWebhook")

    assert deleted.json()["ok"] is True
    await inbound(polling, "depois")
    assert [u["message"]["text"] for u in (await polling.post(f"{BOT}/getUpdates")).json()["result"]] == ["depois"]


async def test_set_webhook_refuses_a_bad_secret_token(sandbox: AsyncTestClient[Any]) -> None:
    response = await sandbox.post(f"{BOT}/setWebhook", json={"url": "https://x.test", "secret_token": "no spaces!"})

    assert (response.status_code, response.json()["ok"]) == (400, False)


async def test_without_a_webhook_secret_updates_wait_for_get_updates(
    sandbox_with: SandboxFactory, chat4all: Chat4AllStub
) -> None:
    async with sandbox_with(telegram_webhook_secret=None) as client:
        answer = await inbound(client, "oi")
        updates = (await client.post(f"{BOT}/getUpdates")).json()["result"]

    assert answer["webhook_status"] is None
    assert len(updates) == 1
    assert chat4all.calls == []
