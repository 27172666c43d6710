"""The sandbox plays Meta's Send API for Messenger and Instagram: shapes, limits, errors, receipts and inbound."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from entrypoints.sandbox.platforms import INSTAGRAM_ACCOUNT_ID, MESSENGER_PAGE_ID, META_APP_ID
from tests.unit.sandbox.conftest import (
    IG_SECRET,
    IG_TOKEN,
    MS_SECRET,
    MS_TOKEN,
    VERSION,
    Chat4AllStub,
    SandboxFactory,
    graph_headers,
)

pytestmark = pytest.mark.unit


@dataclass(frozen=True)
class Platform:
    channel: str
    token: str
    secret: str
    account: str
    """The page or Instagram account id webhooks carry when the configuration says ``me``."""
    obj: str
    recipient: str
    max_text: int
    text_unit: str  # what the limit counts: one "é" is one character, two UTF-8 bytes


MESSENGER = Platform("messenger", MS_TOKEN, MS_SECRET, MESSENGER_PAGE_ID, "page", "1254459154682919", 2000, "chars")
INSTAGRAM = Platform(
    "instagram", IG_TOKEN, IG_SECRET, INSTAGRAM_ACCOUNT_ID, "instagram", "17841405309211844", 1000, "bytes"
)


@pytest.fixture(params=[MESSENGER, INSTAGRAM], ids=["messenger", "instagram"])
def platform(request: pytest.FixtureRequest) -> Platform:
    return request.param


async def send(client: AsyncTestClient[Any], platform: Platform, message: dict[str, Any], **extra: Any) -> Any:
    body = {"recipient": {"id": platform.recipient}, "message": message, **extra}
    return await client.post(f"/{VERSION}/me/messages", json=body, headers=graph_headers(platform.token))


def events(call_json: Any) -> list[dict[str, Any]]:
    [entry] = call_json["entry"]
    return entry["messaging"]


def signed(call_body: bytes, headers: dict[str, str], secret: str) -> bool:
    return (
        headers["x-hub-signature-256"] == "sha256=" + hmac.new(secret.encode(), call_body, hashlib.sha256).hexdigest()
    )


async def test_a_text_is_accepted_with_the_send_api_s_answer(sandbox: AsyncTestClient[Any], platform: Platform) -> None:
    response = await send(sandbox, platform, {"text": "Olá!"}, messaging_type="RESPONSE")

    assert response.status_code == 200
    answer = response.json()
    assert answer["recipient_id"] == platform.recipient
    assert answer["message_id"]
    [item] = (await sandbox.get("/sandbox/messages", params={"channel": platform.channel})).json()["items"]
    assert item["to"] == platform.recipient
    assert (item["type"], item["text"], item["platform_message_id"]) == ("text", "Olá!", answer["message_id"])


async def test_message_ids_are_unique(sandbox: AsyncTestClient[Any], platform: Platform) -> None:
    ids = {(await send(sandbox, platform, {"text": f"#{n}"})).json()["message_id"] for n in range(5)}

    assert len(ids) == 5


async def test_the_page_id_and_the_access_token_query_parameter_work_too(
    sandbox: AsyncTestClient[Any], platform: Platform
) -> None:
    body = {"recipient": {"id": platform.recipient}, "message": {"text": "hi"}}

    response = await sandbox.post(
        f"/{VERSION}/{platform.account}/messages", json=body, params={"access_token": platform.token}
    )

    assert response.status_code == 200
    assert response.json()["recipient_id"] == platform.recipient


async def test_a_form_encoded_body_with_json_fields_is_accepted(
    sandbox: AsyncTestClient[Any], platform: Platform
) -> None:
    form = {"recipient": json.dumps({"id": platform.recipient}), "message": json.dumps({"text": "hi"})}

    response = await sandbox.post(f"/{VERSION}/me/messages", data=form, params={"access_token": platform.token})

    assert response.status_code == 200


async def test_an_attachment_by_url_is_recorded_as_a_document(
    sandbox: AsyncTestClient[Any], platform: Platform
) -> None:
    attachment = {"type": "file", "payload": {"url": "https://files.example/a.pdf", "is_reusable": True}}

    response = await send(sandbox, platform, {"attachment": attachment})

    assert response.status_code == 200
    [item] = (await sandbox.get("/sandbox/messages")).json()["items"]
    assert (item["type"], item["text"], item["document_url"]) == ("document", None, "https://files.example/a.pdf")


async def test_the_token_decides_the_channel(sandbox: AsyncTestClient[Any]) -> None:
    await send(sandbox, MESSENGER, {"text": "m"})
    await send(sandbox, INSTAGRAM, {"text": "i"})

    items = (await sandbox.get("/sandbox/messages")).json()["items"]
    assert [(i["channel"], i["text"]) for i in items] == [("messenger", "m"), ("instagram", "i")]


async def test_a_bad_token_is_a_graph_190(sandbox: AsyncTestClient[Any], platform: Platform) -> None:
    response = await send(sandbox, Platform(**{**platform.__dict__, "token": "nope"}), {"text": "x"})

    assert response.status_code == 401
    assert response.json()["error"]["code"] == 190


async def test_an_unconfigured_channel_is_not_served(sandbox_with: SandboxFactory) -> None:
    async with sandbox_with(instagram_access_token=None) as client:
        response = await send(client, INSTAGRAM, {"text": "x"})

    assert (response.status_code, response.json()["error"]["code"]) == (401, 190)


async def test_another_page_id_is_not_found(sandbox: AsyncTestClient[Any], platform: Platform) -> None:
    body = {"recipient": {"id": platform.recipient}, "message": {"text": "x"}}

    response = await sandbox.post(f"/{VERSION}/42/messages", json=body, headers=graph_headers(platform.token))

    assert (response.status_code, response.json()["error"]["code"]) == (400, 100)


@pytest.mark.parametrize("recipient", ["ana.souza", "", "12a"])
async def test_a_recipient_that_is_no_scoped_id_is_no_matching_user(
    sandbox: AsyncTestClient[Any], platform: Platform, recipient: str
) -> None:
    body = {"recipient": {"id": recipient}, "message": {"text": "x"}}

    response = await sandbox.post(f"/{VERSION}/me/messages", json=body, headers=graph_headers(platform.token))

    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["message"]) == (100, "(#100) No matching user found")


async def test_text_limits_count_characters_on_messenger_and_bytes_on_instagram(
    sandbox: AsyncTestClient[Any], platform: Platform
) -> None:
    fits = "é" * (platform.max_text // 2) if platform.text_unit == "bytes" else "é" * platform.max_text
    too_long = fits + "é"

    assert (await send(sandbox, platform, {"text": fits})).status_code == 200
    response = await send(sandbox, platform, {"text": too_long})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == 100
    assert str(platform.max_text) in error["message"]


@pytest.mark.parametrize(
    "body",
    [
        {"message": {"text": "x"}},  # no recipient
        {"recipient": {"id": "1"}},  # no message
        {"recipient": {"id": "1"}, "message": {}},
        {"recipient": {"id": "1"}, "message": {"text": "x", "attachment": {}}},
        {"recipient": {"id": "1"}, "message": {"attachment": {"type": "sticker", "payload": {"url": "https://x"}}}},
        {"recipient": {"id": "1"}, "message": {"text": "x"}, "messaging_type": "PROMO"},
        {"recipient": {"id": "1"}, "message": {"text": "x"}, "messaging_type": "MESSAGE_TAG"},  # a tag is required
    ],
)
async def test_malformed_sends_are_a_graph_100(sandbox: AsyncTestClient[Any], body: dict[str, Any]) -> None:
    response = await sandbox.post(f"/{VERSION}/me/messages", json=body, headers=graph_headers(MS_TOKEN))

    assert response.status_code == 400
    assert response.json()["error"]["code"] == 100
    assert (await sandbox.get("/sandbox/messages")).json()["items"] == []


async def test_a_send_with_metadata_is_echoed_first_signed_from_the_page_to_the_person(
    sandbox: AsyncTestClient[Any], chat4all: Chat4AllStub, platform: Platform
) -> None:
    await sandbox.post("/sandbox/settings", json={"auto_deliver": True, "auto_read": True})
    metadata = "c4a:0b9e5c1e-6f1a-4d8e-9a53-1f0c2b7d9e11:user:5f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f:" + platform.channel
    mid = (await send(sandbox, platform, {"text": "Olá!", "metadata": metadata})).json()["message_id"]
    [item] = (await sandbox.get("/sandbox/messages")).json()["items"]

    echo, *receipts = await chat4all.wait_updates(platform.channel, 3 if platform is MESSENGER else 2)

    assert signed(echo.body, echo.headers, platform.secret)
    assert b"Ol\\u00e1" in echo.body  # escaped as Meta escapes it, and signed over those bytes
    assert echo.json["object"] == platform.obj
    assert echo.json["entry"][0]["id"] == platform.account
    [event] = events(echo.json)
    assert event["sender"] == {"id": platform.account}  # an echo comes from the page (or account)...
    assert event["recipient"] == {"id": platform.recipient}  # ...to the person
    assert event["message"] == {
        "is_echo": True,
        "app_id": META_APP_ID,
        "metadata": metadata,
        "mid": mid,
        "text": "Olá!",
    }
    assert abs(event["timestamp"] / 1000 - datetime.fromisoformat(item["received_at"]).timestamp()) < 0.01
    assert [("delivery" in e or "read" in e) for r in receipts for e in events(r.json)] == [True] * len(receipts)
    log = (await sandbox.get("/sandbox/webhooks", params={"channel": platform.channel})).json()["items"]
    assert log[0]["kind"] == "echo"


async def test_an_attachment_echo_names_the_file_and_a_send_without_metadata_is_not_echoed(
    sandbox: AsyncTestClient[Any], chat4all: Chat4AllStub, platform: Platform
) -> None:
    await sandbox.post("/sandbox/settings", json={"auto_deliver": False, "auto_read": False})
    await send(sandbox, platform, {"text": "caption first, untagged"})
    attachment = {"type": "file", "payload": {"url": "https://files.test/f.pdf"}}
    mid = (await send(sandbox, platform, {"attachment": attachment, "metadata": "tag"})).json()["message_id"]

    [echo] = await chat4all.wait(platform.channel, 1)
    await asyncio.sleep(0.05)  # no delay configured: a stray echo would have come by now

    [event] = events(echo.json)
    assert event["message"]["mid"] == mid
    assert event["message"]["attachments"] == [{"type": "file", "payload": {"url": "https://files.test/f.pdf"}}]
    assert len(chat4all.updates(platform.channel)) == 1


async def test_metadata_longer_than_the_send_api_takes_is_a_graph_100(
    sandbox: AsyncTestClient[Any], platform: Platform
) -> None:
    assert (await send(sandbox, platform, {"text": "x", "metadata": "m" * 1000})).status_code == 200
    response = await send(sandbox, platform, {"text": "x", "metadata": "m" * 1001})
    not_text = await send(sandbox, platform, {"text": "x", "metadata": {"a": 1}})

    assert (response.status_code, not_text.status_code) == (400, 400)
    assert response.json()["error"]["code"] == 100
    assert "metadata" in response.json()["error"]["message"]


async def test_messenger_reports_delivery_then_read_as_watermarks(
    sandbox: AsyncTestClient[Any], chat4all: Chat4AllStub
) -> None:
    await sandbox.post("/sandbox/settings", json={"auto_deliver": True, "auto_read": True})
    mid = (await send(sandbox, MESSENGER, {"text": "hi"})).json()["message_id"]
    [item] = (await sandbox.get("/sandbox/messages")).json()["items"]

    delivery, read = await chat4all.wait_updates("messenger", 2)

    for call in (delivery, read):
        assert call.json["object"] == "page"
        assert call.json["entry"][0]["id"] == MESSENGER_PAGE_ID
        assert signed(call.body, call.headers, MS_SECRET)
    [d] = events(delivery.json)
    [r] = events(read.json)
    assert d["sender"] == r["sender"] == {"id": MESSENGER.recipient}
    assert d["recipient"] == r["recipient"] == {"id": MESSENGER_PAGE_ID}
    assert d["delivery"]["mids"] == [mid]
    watermark = d["delivery"]["watermark"]
    assert (
        abs(watermark / 1000 - datetime.fromisoformat(item["received_at"]).timestamp()) < 0.01
    )  # the acceptance time, in ms
    assert r["read"] == {"watermark": watermark}
    assert isinstance(r["timestamp"], int)


async def test_instagram_reports_only_reads_by_mid(sandbox: AsyncTestClient[Any], chat4all: Chat4AllStub) -> None:
    await sandbox.post("/sandbox/settings", json={"auto_deliver": True, "auto_read": True})
    mid = (await send(sandbox, INSTAGRAM, {"text": "hi"})).json()["message_id"]

    [seen] = await chat4all.wait("instagram", 1)

    assert seen.json["object"] == "instagram"
    assert signed(seen.body, seen.headers, IG_SECRET)
    [event] = events(seen.json)
    assert event["sender"] == {"id": INSTAGRAM.recipient}
    assert event["recipient"] == {"id": INSTAGRAM_ACCOUNT_ID}
    assert event["read"] == {"mid": mid}
    assert "delivery" not in event
    await asyncio.sleep(0.05)  # receipts come without delay here: a stray one would have arrived
    assert len(chat4all.updates("instagram")) == 1  # no delivery webhook for Instagram, ever


async def test_without_auto_read_instagram_sends_no_webhook_at_all(
    sandbox: AsyncTestClient[Any], chat4all: Chat4AllStub
) -> None:
    await sandbox.post("/sandbox/settings", json={"auto_deliver": True, "auto_read": False})
    await send(sandbox, INSTAGRAM, {"text": "hi"})
    await send(sandbox, MESSENGER, {"text": "hi"})

    await chat4all.wait("messenger", 1)  # by now an Instagram receipt would have come too

    assert chat4all.to("instagram") == []


async def test_inbound_messages_arrive_signed_with_reply_to(
    sandbox: AsyncTestClient[Any], chat4all: Chat4AllStub, platform: Platform
) -> None:
    await sandbox.post("/sandbox/settings", json={"auto_deliver": False, "auto_read": False})
    mid = (await send(sandbox, platform, {"text": "Can I help?"})).json()["message_id"]

    response = await sandbox.post(
        "/sandbox/inbound",
        json={"channel": platform.channel, "from": platform.recipient, "text": "Yes", "reply_to": mid},
    )

    assert response.status_code == 200
    answer = response.json()
    assert answer["webhook_status"] == 200
    [call] = chat4all.to(platform.channel)
    assert signed(call.body, call.headers, platform.secret)
    assert call.json["object"] == platform.obj
    [entry] = call.json["entry"]
    assert entry["id"] == platform.account
    assert isinstance(entry["time"], int)
    [event] = entry["messaging"]
    assert event["sender"] == {"id": platform.recipient}
    assert event["recipient"] == {"id": platform.account}
    assert event["message"] == {"mid": answer["platform_message_id"], "text": "Yes", "reply_to": {"mid": mid}}


async def test_a_configured_numeric_page_id_is_used_in_webhooks(
    sandbox_with: SandboxFactory, chat4all: Chat4AllStub
) -> None:
    async with sandbox_with(messenger_page_id="555000111") as client:
        await client.post("/sandbox/inbound", json={"channel": "messenger", "from": "42", "text": "hi"})
        body = {"recipient": {"id": "42"}, "message": {"text": "x"}}
        by_id = await client.post(f"/{VERSION}/555000111/messages", json=body, headers=graph_headers(MS_TOKEN))

    [call] = chat4all.to("messenger")[:1]
    assert call.json["entry"][0]["id"] == "555000111"
    assert by_id.status_code == 200


@pytest.mark.parametrize("sender", ["ana", "+5511999998888", ""])
async def test_an_inbound_sender_must_be_a_scoped_id(
    sandbox: AsyncTestClient[Any], platform: Platform, sender: str
) -> None:
    response = await sandbox.post("/sandbox/inbound", json={"channel": platform.channel, "from": sender, "text": "x"})

    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/problem+json")
