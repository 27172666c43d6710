"""The sandbox's control API: messages, settings, faults, the webhook log and its retries, reset, configuration."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any

import httpx
import pytest
from litestar.testing import AsyncTestClient
from pydantic import SecretStr

from entrypoints.sandbox.config import SandboxConfig
from entrypoints.sandbox.platforms import TokenBucket
from entrypoints.settings import Settings
from tests.unit.sandbox.conftest import (
    CHAT4ALL,
    IG_TOKEN,
    MS_TOKEN,
    TG_TOKEN,
    VERSION,
    WA_PHONE_ID,
    WA_TOKEN,
    Chat4AllStub,
    SandboxFactory,
    graph_headers,
    until,
)

pytestmark = pytest.mark.unit


async def send(client: AsyncTestClient[Any], channel: str, text: str = "hi", to: str | None = None) -> Any:
    """A text send on ``channel``'s platform API, as Chat4All's connector makes it."""
    if channel == "telegram":
        return await client.post(f"/bot{TG_TOKEN}/sendMessage", json={"chat_id": to or "42", "text": text})
    if channel == "whatsapp":
        body: dict[str, Any] = {"messaging_product": "whatsapp", "to": to or "5511999998888", "text": {"body": text}}
        return await client.post(f"/{VERSION}/{WA_PHONE_ID}/messages", json=body, headers=graph_headers(WA_TOKEN))
    token = MS_TOKEN if channel == "messenger" else IG_TOKEN
    body = {"recipient": {"id": to or "42"}, "message": {"text": text}}
    return await client.post(f"/{VERSION}/me/messages", json=body, headers=graph_headers(token))


async def faults(client: AsyncTestClient[Any], **body: Any) -> Any:
    response = await client.post("/sandbox/faults", json=body)
    assert response.status_code == 200, response.text
    return response.json()


CHANNELS = ["whatsapp", "messenger", "instagram", "telegram"]


# --- messages -------------------------------------------------------------------------------------


async def test_messages_filter_by_channel_and_recipient(sandbox: AsyncTestClient[Any]) -> None:
    await send(sandbox, "whatsapp", "a", to="5511999998888")
    await send(sandbox, "whatsapp", "b", to="5511988887777")
    await send(sandbox, "telegram", "c")

    everything = (await sandbox.get("/sandbox/messages")).json()["items"]
    one = (await sandbox.get("/sandbox/messages", params={"channel": "whatsapp", "to": "+5511988887777"})).json()

    assert [i["text"] for i in everything] == ["a", "b", "c"]
    assert [i["text"] for i in one["items"]] == ["b"]


async def test_messages_both_ways_name_the_person_as_recipient_or_sender(sandbox: AsyncTestClient[Any]) -> None:
    await send(sandbox, "whatsapp", "pedido saiu", to="5511999998888")
    inbound = {"channel": "whatsapp", "from": "+5511999998888", "text": "chegou!"}
    assert (await sandbox.post("/sandbox/inbound", json=inbound)).status_code == 200

    sent_only = (await sandbox.get("/sandbox/messages")).json()["items"]
    both = (await sandbox.get("/sandbox/messages", params={"direction": "both", "to": "+5511999998888"})).json()
    wrong = await sandbox.get("/sandbox/messages", params={"direction": "sideways"})

    assert [i["text"] for i in sent_only] == ["pedido saiu"]
    assert [(i["direction"], i.get("to"), i.get("from"), i["text"]) for i in both["items"]] == [
        ("outbound", "+5511999998888", None, "pedido saiu"),
        ("inbound", None, "+5511999998888", "chegou!"),
    ]
    assert wrong.status_code == 400


async def test_an_unknown_channel_is_a_problem(sandbox: AsyncTestClient[Any]) -> None:
    response = await sandbox.get("/sandbox/messages", params={"channel": "internal"})

    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert (problem["title"], problem["status"]) == ("Bad Request", 400)
    assert "internal" in problem["detail"]


# --- inbound --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ({"channel": "sms", "from": "1", "text": "x"}, "unknown channel"),
        ({"channel": "telegram", "from": "1", "text": "   "}, "text"),
        ({"channel": "telegram", "from": "1"}, "text"),
        ({"channel": "telegram", "from": "1", "text": "x", "extra": 1}, "extra"),
        ({"channel": "telegram", "from": "-5", "text": "x"}, "positive"),
        ({"channel": "whatsapp", "from": "5511", "text": "x"}, "E.164"),
        ({"channel": "messenger", "from": "1", "text": "x", "reply_to": "m_unknown"}, "reply_to"),
    ],
)
async def test_bad_inbound_requests_are_problems(
    sandbox: AsyncTestClient[Any], body: dict[str, Any], said: str
) -> None:
    response = await sandbox.post("/sandbox/inbound", json=body)

    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/problem+json")
    assert said in response.json()["detail"]


async def test_inbound_on_an_unconfigured_channel_is_a_problem(sandbox_with: SandboxFactory) -> None:
    async with sandbox_with(messenger_page_token=None) as client:
        response = await client.post("/sandbox/inbound", json={"channel": "messenger", "from": "1", "text": "x"})

    assert response.status_code == 400
    assert "not configured" in response.json()["detail"]


async def test_inbound_reports_chat4all_s_status_and_retries_in_the_background(
    sandbox: AsyncTestClient[Any], chat4all: Chat4AllStub
) -> None:
    chat4all.answers = [503, 500]  # then 200

    answer = (await sandbox.post("/sandbox/inbound", json={"channel": "messenger", "from": "1", "text": "x"})).json()

    assert answer["webhook_status"] == 503
    calls = await chat4all.wait("messenger", 3)
    assert calls[0].body == calls[1].body == calls[2].body  # the same webhook, signed the same
    log = (await sandbox.get("/sandbox/webhooks", params={"channel": "messenger"})).json()["items"]
    assert [(a["attempt"], a["status"]) for a in log] == [(1, 503), (2, 500), (3, 200)]
    assert {a["kind"] for a in log} == {"inbound"}
    assert log[0]["url"] == f"{CHAT4ALL}/webhooks/messenger"
    assert log[0]["body"]["object"] == "page"


async def test_an_unreachable_chat4all_is_logged_with_the_error(
    sandbox: AsyncTestClient[Any], chat4all: Chat4AllStub
) -> None:
    chat4all.answers = [httpx.ConnectError("connection refused")] * 3

    answer = (await sandbox.post("/sandbox/inbound", json={"channel": "instagram", "from": "1", "text": "x"})).json()

    assert answer["webhook_status"] is None
    assert "ConnectError" in answer["webhook_error"]
    await chat4all.wait("instagram", 3)  # the first try and the two configured retries

    async def logged() -> list[dict[str, Any]]:
        return (await sandbox.get("/sandbox/webhooks")).json()["items"]

    await until(lambda: _has(logged(), 3))
    log = await logged()
    assert [a["status"] for a in log] == [None, None, None]
    assert all("ConnectError" in a["error"] for a in log)


# --- settings -------------------------------------------------------------------------------------


async def test_settings_change_only_what_is_given(sandbox: AsyncTestClient[Any]) -> None:
    await sandbox.post("/sandbox/reset")
    defaults = (await sandbox.get("/sandbox/settings")).json()

    changed = await sandbox.post("/sandbox/settings", json={"auto_read": True})

    assert defaults == {"auto_deliver": True, "auto_read": False, "delay_ms": 50}
    assert changed.status_code == 200
    assert changed.json() == {"auto_deliver": True, "auto_read": True, "delay_ms": 50}
    assert (await sandbox.get("/sandbox/settings")).json() == changed.json()


@pytest.mark.parametrize("body", [{"delay_ms": -1}, {"auto_read": "yes"}, {"speed": 1}])
async def test_bad_settings_are_problems(sandbox: AsyncTestClient[Any], body: dict[str, Any]) -> None:
    response = await sandbox.post("/sandbox/settings", json=body)

    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_delay_ms_spaces_the_receipts(sandbox: AsyncTestClient[Any], chat4all: Chat4AllStub) -> None:
    await sandbox.post("/sandbox/settings", json={"delay_ms": 100, "auto_deliver": True, "auto_read": True})
    started = time.monotonic()
    await send(sandbox, "whatsapp")

    await chat4all.wait("whatsapp", 1)
    first = time.monotonic() - started
    await chat4all.wait("whatsapp", 3)
    total = time.monotonic() - started

    assert first >= 0.09
    assert total >= 0.29


# --- faults ---------------------------------------------------------------------------------------


async def test_faults_change_only_what_is_given_and_are_listed(sandbox: AsyncTestClient[Any]) -> None:
    first = await faults(sandbox, channel="telegram", error_rate=0.5, rate_limit_per_s=10)
    second = await faults(sandbox, channel="telegram", down=True)
    lifted = await faults(sandbox, channel="telegram", rate_limit_per_s=None)

    assert first == {"channel": "telegram", "error_rate": 0.5, "rate_limit_per_s": 10.0, "latency_ms": 0, "down": False}
    assert second == {**first, "down": True}
    assert lifted == {**second, "rate_limit_per_s": None}
    listed = (await sandbox.get("/sandbox/faults")).json()["items"]
    assert [f["channel"] for f in listed] == CHANNELS
    assert listed[3] == lifted
    assert listed[0] == {
        "channel": "whatsapp",
        "error_rate": 0.0,
        "rate_limit_per_s": None,
        "latency_ms": 0,
        "down": False,
    }


@pytest.mark.parametrize(
    "body",
    [
        {"channel": "telegram", "error_rate": 1.5},
        {"channel": "telegram", "rate_limit_per_s": 0},
        {"channel": "telegram", "latency_ms": -5},
        {"channel": "sms", "down": True},
        {"down": True},
    ],
)
async def test_bad_faults_are_problems(sandbox: AsyncTestClient[Any], body: dict[str, Any]) -> None:
    response = await sandbox.post("/sandbox/faults", json=body)

    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize("channel", CHANNELS)
async def test_a_down_platform_answers_503_in_plain_text(sandbox: AsyncTestClient[Any], channel: str) -> None:
    await faults(sandbox, channel=channel, down=True)

    response = await send(sandbox, channel)

    assert response.status_code == 503
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text == "Service Unavailable"
    assert (await sandbox.get("/sandbox/messages")).json()["items"] == []


async def test_down_is_per_channel(sandbox: AsyncTestClient[Any]) -> None:
    await faults(sandbox, channel="whatsapp", down=True)

    assert (await send(sandbox, "messenger")).status_code == 200
    assert (await sandbox.get(f"/bot{TG_TOKEN}/getMe")).status_code == 200


async def test_a_down_telegram_refuses_every_method(sandbox: AsyncTestClient[Any]) -> None:
    await faults(sandbox, channel="telegram", down=True)

    assert (await sandbox.get(f"/bot{TG_TOKEN}/getMe")).status_code == 503


@pytest.mark.parametrize("channel", ["whatsapp", "messenger", "instagram"])
async def test_an_error_rate_of_one_fails_every_graph_send_transiently(
    sandbox: AsyncTestClient[Any], channel: str
) -> None:
    await faults(sandbox, channel=channel, error_rate=1.0)

    response = await send(sandbox, channel)

    assert response.status_code == 500
    error = response.json()["error"]
    assert error["message"] == "An unexpected error has occurred. Please retry your request later."
    assert (error["type"], error["code"], error["is_transient"]) == ("OAuthException", 2, True)
    assert (await sandbox.get("/sandbox/messages")).json()["items"] == []


async def test_an_error_rate_of_one_fails_every_telegram_send(sandbox: AsyncTestClient[Any]) -> None:
    await faults(sandbox, channel="telegram", error_rate=1.0)

    response = await send(sandbox, "telegram")

    assert response.status_code == 500
    assert response.json() == {"ok": False, "error_code": 500, "description": "Internal Server Error"}
    assert (await sandbox.get(f"/bot{TG_TOKEN}/getMe")).status_code == 200  # only sends fail at random


async def test_the_error_rate_is_a_seeded_draw(sandbox_with: SandboxFactory) -> None:
    async def outcomes() -> list[int]:
        async with sandbox_with(seed=2024) as client:
            await faults(client, channel="telegram", error_rate=0.5)
            return [(await send(client, "telegram")).status_code for _ in range(20)]

    first, second = await outcomes(), await outcomes()

    assert first == second
    assert set(first) == {200, 500}


@pytest.mark.parametrize(("channel", "code"), [("whatsapp", 130429), ("messenger", 613), ("instagram", 613)])
async def test_over_the_rate_limit_graph_answers_429_with_its_code_and_retry_after(
    sandbox: AsyncTestClient[Any], channel: str, code: int
) -> None:
    await faults(sandbox, channel=channel, rate_limit_per_s=1)

    first, second = await send(sandbox, channel), await send(sandbox, channel)

    assert first.status_code == 200
    assert second.status_code == 429
    assert second.headers["retry-after"] == "1"
    error = second.json()["error"]
    assert (error["code"], error["type"]) == (code, "OAuthException")
    assert f"(#{code})" in error["message"]


async def test_over_the_rate_limit_telegram_answers_429_with_retry_after(sandbox: AsyncTestClient[Any]) -> None:
    await faults(sandbox, channel="telegram", rate_limit_per_s=0.5)

    first, second = await send(sandbox, "telegram"), await send(sandbox, "telegram")

    assert first.status_code == 200
    assert second.status_code == 429
    assert second.headers["retry-after"] == "2"
    assert second.json() == {
        "ok": False,
        "error_code": 429,
        "description": "Too Many Requests: retry after 2",
        "parameters": {"retry_after": 2},
    }


def test_the_token_bucket_refills_at_its_rate() -> None:
    bucket = TokenBucket.full(2.0, now=0.0)

    assert [bucket.take(0.0), bucket.take(0.0)] == [0.0, 0.0]  # a burst of one second's worth
    assert bucket.take(0.0) == pytest.approx(0.5)
    assert bucket.take(0.5) == 0.0
    assert bucket.take(10.0) == 0.0  # capacity is capped at the burst


async def test_latency_delays_the_platform_s_answer(sandbox: AsyncTestClient[Any]) -> None:
    await faults(sandbox, channel="messenger", latency_ms=150)

    started = time.monotonic()
    slow = await send(sandbox, "messenger")
    slow_took = time.monotonic() - started
    started = time.monotonic()
    await send(sandbox, "instagram")
    fast_took = time.monotonic() - started

    assert slow.status_code == 200
    assert slow_took >= 0.15
    assert fast_took < 0.15


# --- reset, health, channels ----------------------------------------------------------------------


async def test_reset_forgets_messages_webhooks_updates_faults_and_settings(
    sandbox_with: SandboxFactory, chat4all: Chat4AllStub
) -> None:
    async with sandbox_with(telegram_updates="polling") as client:
        await client.post("/sandbox/settings", json={"auto_read": True, "delay_ms": 300})
        await faults(client, channel="whatsapp", down=True)
        await send(client, "messenger")  # its receipts wait 300 ms: reset must cancel them
        await client.post("/sandbox/inbound", json={"channel": "instagram", "from": "1", "text": "x"})
        await client.post("/sandbox/inbound", json={"channel": "telegram", "from": "1", "text": "x"})

        response = await client.post("/sandbox/reset")

        assert response.status_code == 204
        assert (await client.get("/sandbox/messages")).json()["items"] == []
        assert (await client.get("/sandbox/webhooks")).json()["items"] == []
        assert (await client.get(f"/bot{TG_TOKEN}/getUpdates")).json()["result"] == []
        assert (await client.get("/sandbox/settings")).json() == {
            "auto_deliver": True,
            "auto_read": False,
            "delay_ms": 50,
        }
        assert (await send(client, "whatsapp")).status_code == 200
        again = await client.post("/sandbox/inbound", json={"channel": "telegram", "from": "1", "text": "y"})
        update = (await client.get(f"/bot{TG_TOKEN}/getUpdates")).json()["result"][0]
        await asyncio.sleep(0.4)  # past the cancelled receipts' delay

    assert again.json()["platform_message_id"] == "1:2"  # Telegram ids keep growing: Chat4All deduplicates on them
    assert update["update_id"] > 100000001
    assert chat4all.to("messenger") == []


async def test_health_and_channels(sandbox_with: SandboxFactory) -> None:
    async with sandbox_with(instagram_access_token=None) as client:
        health = await client.get("/health")
        channels = (await client.get("/sandbox/channels")).json()["items"]

    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    by_name = {c["channel"]: c for c in channels}
    assert by_name["instagram"]["configured"] is False
    assert by_name["whatsapp"] == {"channel": "whatsapp", "configured": True, "account_id": WA_PHONE_ID}
    assert by_name["messenger"]["account_id"] == "100000000000001"
    assert by_name["telegram"]["webhook_url"] == f"{CHAT4ALL}/webhooks/telegram"
    assert "token" not in str(channels).lower()


async def test_the_openapi_document_describes_the_control_api(sandbox: AsyncTestClient[Any]) -> None:
    paths = (await sandbox.get("/schema/openapi.json")).json()["paths"]

    assert {"/sandbox/messages", "/sandbox/inbound", "/sandbox/settings", "/sandbox/faults"} <= set(paths)


async def test_the_web_app_may_call_the_control_api_from_another_origin(
    sandbox: AsyncTestClient[Any], chat4all: Chat4AllStub
) -> None:
    web = "http://127.0.0.1:8000"
    preflight = await sandbox.options(
        "/sandbox/inbound",
        headers={
            "Origin": web,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    sent = await sandbox.post(
        "/sandbox/inbound",
        json={"channel": "whatsapp", "from": "+5511999998888", "text": "oi"},
        headers={"Origin": web},
    )
    listed = await sandbox.get("/sandbox/messages", headers={"Origin": web})

    assert preflight.status_code in {200, 204}
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert {"GET", "POST"} <= {m.strip() for m in preflight.headers["access-control-allow-methods"].split(",")}
    assert "content-type" in preflight.headers["access-control-allow-headers"].lower()
    assert sent.status_code == 200
    assert sent.headers["access-control-allow-origin"] == listed.headers["access-control-allow-origin"] == "*"
    assert len(chat4all.to("whatsapp")) == 1


def test_the_configuration_comes_from_chat4all_s_settings() -> None:
    settings = Settings(
        sandbox_chat4all_url="http://127.0.0.1:8000/",
        whatsapp_access_token=SecretStr("wa"),
        whatsapp_phone_number_id="106",
        whatsapp_app_secret=SecretStr("wa-secret"),
        messenger_page_token=SecretStr("ms"),
        instagram_access_token=SecretStr("ig"),
        instagram_account_id="1784",
        telegram_bot_token=SecretStr("1:tg"),
        telegram_webhook_secret=SecretStr("tg-secret"),
        telegram_updates="polling",
        graph_api_version="v24.0",
    )

    config = SandboxConfig.from_settings(settings)

    assert config.chat4all_url == "http://127.0.0.1:8000"
    assert (config.whatsapp_access_token, config.whatsapp_phone_number_id, config.whatsapp_app_secret) == (
        "wa",
        "106",
        "wa-secret",
    )
    assert (config.messenger_page_token, config.messenger_page_id, config.messenger_app_secret) == ("ms", "me", None)
    assert (config.instagram_access_token, config.instagram_account_id) == ("ig", "1784")
    assert (config.telegram_bot_token, config.telegram_webhook_secret, config.telegram_updates) == (
        "1:tg",
        "tg-secret",
        "polling",
    )
    assert config.graph_api_version == "v24.0"
    assert "wa-secret" not in repr(config)


async def _has(items: Awaitable[list[dict[str, Any]]], count: int) -> bool:
    return len(await items) >= count
