"""The platforms' webhooks over HTTP: refused unless signed, nothing stored when refused, and a signed
message lands in its conversation once however often it is delivered."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from adapters.channels.meta_webhook import signature
from adapters.memory import InMemoryStore
from tests.api.conftest import Api, build_app

pytestmark = pytest.mark.unit

APP_SECRET = "meta-app-secret"
VERIFY = "verify-me"
TG_SECRET = "tg_secret-token"


@pytest.fixture
async def client(store: InMemoryStore) -> AsyncIterator[AsyncTestClient[Litestar]]:
    app = build_app(
        store,
        whatsapp_app_secret=APP_SECRET,
        whatsapp_verify_token=VERIFY,
        telegram_webhook_secret=TG_SECRET,
        inbox_owner="sales",
    )
    async with AsyncTestClient(app) as c:
        yield c


def wa_message(wamid: str = "wamid.1", text: str = "oi", sender: str = "5511911112222") -> bytes:
    value = {
        "messaging_product": "whatsapp",
        "contacts": [{"profile": {"name": "Ana"}, "wa_id": sender}],
        "messages": [{"from": sender, "id": wamid, "timestamp": "1749416383", "type": "text", "text": {"body": text}}],
    }
    envelope = {"object": "whatsapp_business_account", "entry": [{"changes": [{"field": "messages", "value": value}]}]}
    return json.dumps(envelope).encode()


async def post_signed(client: AsyncTestClient[Litestar], body: bytes, secret: str = APP_SECRET) -> Any:
    return await client.post(
        "/webhooks/whatsapp",
        content=body,
        headers={"Content-Type": "application/json", "X-Hub-Signature-256": signature(secret, body)},
    )


async def test_the_handshake_echoes_the_challenge_for_our_verify_token(client: AsyncTestClient[Litestar]) -> None:
    params = {"hub.mode": "subscribe", "hub.challenge": "1158201444", "hub.verify_token": VERIFY}

    ok = await client.get("/webhooks/whatsapp", params=params)
    wrong = await client.get("/webhooks/whatsapp", params={**params, "hub.verify_token": "guess"})

    assert (ok.status_code, ok.text) == (200, "1158201444")
    assert wrong.status_code == 403
    assert wrong.headers["content-type"].startswith("application/problem+json")


async def test_a_channel_without_its_secret_has_no_webhook(client: AsyncTestClient[Litestar]) -> None:
    for call in (client.get("/webhooks/messenger"), client.post("/webhooks/instagram", content=b"{}")):
        r = await call
        assert r.status_code == 404
        assert r.json()["detail"] == f"no webhook is configured for {r.request.url.path.rsplit('/', 1)[1]!r}"
    assert (await client.post("/webhooks/fax", content=b"{}")).status_code == 404


async def test_unsigned_and_forged_calls_are_refused_and_store_nothing(
    client: AsyncTestClient[Litestar], store: InMemoryStore, api: Api
) -> None:
    await api.user("sales")
    body = wa_message()

    unsigned = await client.post("/webhooks/whatsapp", content=body)
    forged = await post_signed(client, body, secret="not the app secret")
    tampered = await client.post(
        "/webhooks/whatsapp",
        content=wa_message(text="changed on the way"),
        headers={"X-Hub-Signature-256": signature(APP_SECRET, body)},
    )
    tg_forged = await client.post("/webhooks/telegram", content=b"{}", headers={"X-Telegram-Bot-Api-Secret-Token": "x"})

    assert [r.status_code for r in (unsigned, forged, tampered, tg_forged)] == [401, 403, 403, 403]
    assert all(r.headers["content-type"].startswith("application/problem+json") for r in (unsigned, forged))
    assert store.state.messages == {}
    assert store.state.conversations == {}
    assert store.state.outbox == []


async def test_a_signed_message_reaches_the_inbox_once_however_often_it_comes(
    client: AsyncTestClient[Litestar], api: Api
) -> None:
    sales = await api.user("sales")

    first = await post_signed(client, wa_message())
    again = await post_signed(client, wa_message())
    second = await post_signed(client, wa_message("wamid.2", "tudo bem?"))

    assert [r.status_code for r in (first, again, second)] == [200, 200, 200]
    assert first.json() == {"accepted": 1, "duplicates": 0, "unrouted": 0, "receipts": 0}
    assert again.json()["duplicates"] == 1
    (conversation,) = (await client.get("/v1/conversations", headers=sales["headers"])).json()["items"]
    assert [m["kind"] for m in conversation["members"]] == ["user", "contact"]
    assert conversation["members"][1]["address"] == "whatsapp:+5511911112222"
    history = await client.get(
        f"/v1/conversations/{conversation['conversation_id']}/messages", headers=sales["headers"]
    )
    items = history.json()["items"]
    ana = {"kind": "contact", "address": "whatsapp:+5511911112222"}
    assert [(m["from"], m["payload"]["text"]) for m in items] == [(ana, "oi"), (ana, "tudo bem?")]
    assert items[0]["metadata"] == {"source": {"channel": "whatsapp", "platform_message_id": "wamid.1", "name": "Ana"}}


async def test_a_signed_body_that_is_not_json_is_a_bad_request(client: AsyncTestClient[Litestar]) -> None:
    r = await post_signed(client, b"definitely not json")

    assert r.status_code == 400
    assert r.json()["detail"] == "the body is not JSON"


async def test_telegram_updates_need_the_secret_token(client: AsyncTestClient[Litestar], api: Api) -> None:
    await api.user("sales")
    update = {
        "update_id": 7,
        "message": {
            "message_id": 3,
            "from": {"id": 42, "first_name": "Ana"},
            "chat": {"id": 42},
            "date": 1,
            "text": "oi",
        },
    }

    ok = await client.post("/webhooks/telegram", json=update, headers={"X-Telegram-Bot-Api-Secret-Token": TG_SECRET})
    unsigned = await client.post("/webhooks/telegram", json=update)

    assert (ok.status_code, ok.json()["accepted"]) == (200, 1)
    assert unsigned.status_code == 401
