"""The sandbox plays the WhatsApp Cloud API: Meta's send shapes and errors, signed status and message webhooks."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from tests.unit.sandbox.conftest import (
    VERSION,
    WA_PHONE_ID,
    WA_SECRET,
    WA_TOKEN,
    Chat4AllStub,
    SandboxFactory,
    graph_headers,
)

pytestmark = pytest.mark.unit

URL = f"/{VERSION}/{WA_PHONE_ID}/messages"
TEXT = {
    "messaging_product": "whatsapp",
    "recipient_type": "individual",
    "to": "5511999998888",
    "type": "text",
    "text": {"preview_url": False, "body": "Olá!"},
    "biz_opaque_callback_data": "c4a:msg-1",
}


async def send(client: AsyncTestClient[Any], body: dict[str, Any], token: str = WA_TOKEN) -> Any:
    return await client.post(URL, json=body, headers=graph_headers(token))


def statuses(call_json: Any) -> list[dict[str, Any]]:
    [entry] = call_json["entry"]
    [change] = entry["changes"]
    return change["value"]["statuses"]


async def test_a_text_is_accepted_with_meta_s_answer_and_recorded(sandbox: AsyncTestClient[Any]) -> None:
    response = await send(sandbox, TEXT)

    assert response.status_code == 200
    answer = response.json()
    [sent] = answer["messages"]
    assert answer == {
        "messaging_product": "whatsapp",
        "contacts": [{"input": "5511999998888", "wa_id": "5511999998888"}],
        "messages": [{"id": sent["id"]}],
    }
    assert sent["id"].startswith("wamid.")
    [item] = (await sandbox.get("/sandbox/messages", params={"channel": "whatsapp"})).json()["items"]
    assert item["to"] == "+5511999998888"  # as Chat4All writes the address
    assert (item["type"], item["text"], item["platform_message_id"]) == ("text", "Olá!", sent["id"])
    assert item["received_at"].endswith("+00:00")


async def test_a_document_by_link_is_recorded_with_its_url(sandbox: AsyncTestClient[Any]) -> None:
    document = {"link": "https://files.example/contract.pdf", "caption": "Contrato", "filename": "contract.pdf"}
    body = {"messaging_product": "whatsapp", "to": "+5511999998888", "type": "document", "document": document}

    response = await send(sandbox, body)

    assert response.status_code == 200
    [item] = (await sandbox.get("/sandbox/messages")).json()["items"]
    assert (item["type"], item["text"], item["document_url"]) == ("document", "Contrato", document["link"])


async def test_marking_an_inbound_message_read_answers_success_and_records_nothing(
    sandbox: AsyncTestClient[Any], chat4all: Chat4AllStub
) -> None:
    body = {"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.HBgLinbound"}

    response = await send(sandbox, body)

    assert (response.status_code, response.json()) == (200, {"success": True})
    assert (await sandbox.get("/sandbox/messages")).json()["items"] == []
    assert chat4all.calls == []


@pytest.mark.parametrize("token", ["wrong-token", ""])
async def test_a_bad_token_is_a_graph_190(sandbox: AsyncTestClient[Any], token: str) -> None:
    response = await send(sandbox, TEXT, token=token)

    assert response.status_code == 401
    error = response.json()["error"]
    assert (error["code"], error["type"]) == (190, "OAuthException")
    assert error["fbtrace_id"]


async def test_another_phone_number_id_is_not_found(sandbox: AsyncTestClient[Any]) -> None:
    response = await sandbox.post(f"/{VERSION}/999/messages", json=TEXT, headers=graph_headers(WA_TOKEN))

    assert response.status_code == 400
    assert response.json()["error"]["code"] == 100


async def test_an_unconfigured_whatsapp_answers_as_to_a_bad_token(sandbox_with: SandboxFactory) -> None:
    async with sandbox_with(whatsapp_access_token=None) as client:
        response = await send(client, TEXT)

    assert (response.status_code, response.json()["error"]["code"]) == (401, 190)


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"messaging_product": "sms"}, "messaging_product"),
        ({"to": "not-a-number"}, "to"),
        ({"to": None}, "to"),
        ({"text": {"body": ""}}, "text['body']"),
        ({"text": {"body": "x" * 4097}}, "4096"),
        ({"type": "sticker"}, "type"),
        ({"biz_opaque_callback_data": "x" * 513}, "biz_opaque_callback_data"),
        ({"type": "document", "document": {"caption": "no file"}}, "document"),
    ],
)
async def test_invalid_parameters_are_a_graph_100(
    sandbox: AsyncTestClient[Any], change: dict[str, Any], said: str
) -> None:
    response = await send(sandbox, {**TEXT, **change})

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == 100
    assert error["message"].startswith("(#100)")
    assert said in error["message"]
    assert (await sandbox.get("/sandbox/messages")).json()["items"] == []


async def test_a_body_that_is_not_json_is_a_graph_100(sandbox: AsyncTestClient[Any]) -> None:
    headers = {**graph_headers(WA_TOKEN), "content-type": "application/json"}
    response = await sandbox.post(URL, content=b"{not json", headers=headers)

    assert (response.status_code, response.json()["error"]["code"]) == (400, 100)


async def test_statuses_follow_a_send_sent_delivered_read_signed_over_the_raw_body(
    sandbox: AsyncTestClient[Any], chat4all: Chat4AllStub
) -> None:
    await sandbox.post("/sandbox/settings", json={"auto_deliver": True, "auto_read": True})
    wamid = (await send(sandbox, TEXT)).json()["messages"][0]["id"]

    calls = await chat4all.wait_updates("whatsapp", 3)

    assert [statuses(c.json)[0]["status"] for c in calls] == ["sent", "delivered", "read"]
    for call in calls:
        expected = "sha256=" + hmac.new(WA_SECRET.encode(), call.body, hashlib.sha256).hexdigest()
        assert call.headers["x-hub-signature-256"] == expected
        assert call.headers["content-type"] == "application/json"
        [status] = statuses(call.json)
        assert (status["id"], status["recipient_id"]) == (wamid, "5511999998888")
        assert status["biz_opaque_callback_data"] == "c4a:msg-1"  # echoed, so Chat4All can match the delivery
        assert status["timestamp"].isdigit()
    envelope = calls[0].json
    assert envelope["object"] == "whatsapp_business_account"
    value = envelope["entry"][0]["changes"][0]
    assert value["field"] == "messages"
    assert value["value"]["metadata"]["phone_number_id"] == WA_PHONE_ID


async def test_without_auto_deliver_and_auto_read_only_sent_follows(
    sandbox: AsyncTestClient[Any], chat4all: Chat4AllStub
) -> None:
    await sandbox.post("/sandbox/settings", json={"auto_deliver": False, "auto_read": False})
    await send(sandbox, {k: v for k, v in TEXT.items() if k != "biz_opaque_callback_data"})

    [call] = await chat4all.wait("whatsapp", 1)

    [status] = statuses(call.json)
    assert status["status"] == "sent"
    assert "biz_opaque_callback_data" not in status  # only echoed when the send had one
    await asyncio.sleep(0.05)  # receipts come without delay here: a stray one would have arrived
    assert len(chat4all.updates("whatsapp")) == 1


async def test_an_inbound_text_arrives_as_a_signed_messages_webhook(
    sandbox: AsyncTestClient[Any], chat4all: Chat4AllStub
) -> None:
    response = await sandbox.post(
        "/sandbox/inbound",
        json={"channel": "whatsapp", "from": "+5511999998888", "text": "Oi, tudo bem?", "name": "Ana"},
    )

    assert response.status_code == 200
    answer = response.json()
    assert answer["webhook_status"] == 200
    [call] = chat4all.to("whatsapp")
    assert call.headers["x-hub-signature-256"] == (
        "sha256=" + hmac.new(WA_SECRET.encode(), call.body, hashlib.sha256).hexdigest()
    )
    assert b"Oi, tudo bem?" in call.body
    value = call.json["entry"][0]["changes"][0]["value"]
    assert value["contacts"] == [{"profile": {"name": "Ana"}, "wa_id": "5511999998888"}]
    [said] = value["messages"]
    assert said["from"] == "5511999998888"  # digits, no "+"
    assert said["id"] == answer["platform_message_id"]
    assert (said["type"], said["text"]) == ("text", {"body": "Oi, tudo bem?"})
    assert "context" not in said


async def test_non_ascii_text_is_escaped_and_the_signature_covers_those_bytes(
    sandbox: AsyncTestClient[Any], chat4all: Chat4AllStub
) -> None:
    await sandbox.post("/sandbox/inbound", json={"channel": "whatsapp", "from": "+5511999998888", "text": "Olá"})

    [call] = chat4all.to("whatsapp")
    assert b"Ol\\u00e1" in call.body  # as Meta sends it
    assert call.headers["x-hub-signature-256"].endswith(hmac.new(WA_SECRET.encode(), call.body, "sha256").hexdigest())


async def test_a_reply_carries_the_context_of_the_business_message(
    sandbox: AsyncTestClient[Any], chat4all: Chat4AllStub
) -> None:
    await sandbox.post("/sandbox/settings", json={"auto_deliver": False})
    wamid = (await send(sandbox, TEXT)).json()["messages"][0]["id"]
    await chat4all.wait("whatsapp", 1)

    response = await sandbox.post(
        "/sandbox/inbound", json={"channel": "whatsapp", "from": "+5511999998888", "text": "Sim", "reply_to": wamid}
    )

    assert response.status_code == 200
    [said] = chat4all.to("whatsapp")[-1].json["entry"][0]["changes"][0]["value"]["messages"]
    assert said["context"] == {"from": "15550783881", "id": wamid}


async def test_a_reply_to_another_person_s_message_is_refused(sandbox: AsyncTestClient[Any]) -> None:
    wamid = (await send(sandbox, TEXT)).json()["messages"][0]["id"]

    response = await sandbox.post(
        "/sandbox/inbound", json={"channel": "whatsapp", "from": "+5511988887777", "text": "?", "reply_to": wamid}
    )

    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "reply_to" in response.json()["detail"]
