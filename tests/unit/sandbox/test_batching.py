"""Webhooks under load: Meta's in batches (many updates per signed POST), Telegram's one by one, a few POSTs at a time.

The sandbox runs in the test's event loop here (``httpx.ASGITransport``), so that a burst of sends really
overlaps, and Chat4All's stand-in can take its time answering and count the POSTs it is handling at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import httpx
import pytest

from domain.channels import Channel
from entrypoints.sandbox.app import create_app
from entrypoints.sandbox.platforms import Sandbox
from tests.unit.sandbox.conftest import (
    CHAT4ALL,
    CONFIG,
    MS_SECRET,
    MS_TOKEN,
    TG_TOKEN,
    VERSION,
    WA_PHONE_ID,
    WA_SECRET,
    WA_TOKEN,
    Call,
    Update,
    graph_headers,
    until,
    updates_in,
)

pytestmark = pytest.mark.unit


class SlowChat4All:
    """Chat4All's webhook endpoints, answering after ``delay_s``: records each call as it starts, and the most
    calls it was ever handling at once."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.calls: list[Call] = []
        self.answers: list[int] = []
        self.in_flight = 0
        self.peak = 0
        self.transport = httpx.MockTransport(self._handle)

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(Call(str(request.url), dict(request.headers), request.content))
        answer = self.answers.pop(0) if self.answers else 200
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(self.delay_s)
        finally:
            self.in_flight -= 1
        return httpx.Response(answer)

    def to(self, channel: str) -> list[Call]:
        return [c for c in self.calls if c.url == f"{CHAT4ALL}/webhooks/{channel}"]

    def updates(self, channel: str) -> list[Update]:
        return [u for c in self.to(channel) for u in updates_in(c)]


@asynccontextmanager
async def running(chat4all: SlowChat4All, *, settings: dict[str, Any], **changes: Any) -> AsyncIterator[Any]:
    """The sandbox on ``CONFIG`` with ``changes``, reached in this event loop, with the people's ``settings``."""
    app = create_app(attrs.evolve(CONFIG, **changes), transport=chat4all.transport)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sandbox.test") as client:
            (await client.post("/sandbox/settings", json={"delay_ms": 0, **settings})).raise_for_status()
            yield client
    finally:
        await app.state.webhooks.close()


async def whatsapp_send(client: httpx.AsyncClient, to: str, text: str) -> str:
    body = {"messaging_product": "whatsapp", "to": to, "type": "text", "text": {"body": text}}
    response = await client.post(f"/{VERSION}/{WA_PHONE_ID}/messages", json=body, headers=graph_headers(WA_TOKEN))
    response.raise_for_status()
    wamid: str = response.json()["messages"][0]["id"]
    return wamid


def statuses(update: Update) -> list[dict[str, Any]]:
    [entry] = update.json["entry"]
    [change] = entry["changes"]
    found: list[dict[str, Any]] = change["value"]["statuses"]
    return found


def signed_by(secret: str, call: Call) -> bool:
    expected = "sha256=" + hmac.new(secret.encode(), call.body, hashlib.sha256).hexdigest()
    return call.headers["x-hub-signature-256"] == expected


RECIPIENTS = [f"55119{n:08d}" for n in range(6)]


async def test_a_burst_of_sends_arrives_in_few_signed_posts_carrying_every_receipt_in_order() -> None:
    chat4all = SlowChat4All(delay_s=0.02)
    async with running(chat4all, settings={"auto_deliver": True, "auto_read": True}) as client:
        sends = [(to, f"#{n}") for n in range(25) for to in RECIPIENTS]  # 150 sends, 450 receipts
        wamids = await asyncio.gather(*(whatsapp_send(client, to, text) for to, text in sends))
        await until(lambda: len(chat4all.updates("whatsapp")) >= 3 * len(sends), within_s=10)
        await asyncio.sleep(0.05)  # nothing more, nothing twice
        calls = chat4all.to("whatsapp")
        accepted = (await client.get("/sandbox/messages")).json()["items"]

    assert len(chat4all.updates("whatsapp")) == 3 * len(sends)
    assert len(calls) <= len(sends) // 5  # far fewer POSTs than receipts (one each, before)
    assert max(len(updates_in(c)) for c in calls) > 10
    for call in calls:
        assert signed_by(WA_SECRET, call)  # over the merged bytes
        assert call.json["object"] == "whatsapp_business_account"
    seen = [(s["recipient_id"], s["id"], s["status"]) for u in chat4all.updates("whatsapp") for s in statuses(u)]
    assert sorted(seen) == sorted(
        (to, w, kind) for (to, _), w in zip(sends, wamids, strict=True) for kind in ("sent", "delivered", "read")
    )
    order = {item["platform_message_id"]: n for n, item in enumerate(accepted)}  # the order the platform took them
    for person in RECIPIENTS:
        mine = [(wamid, status) for to, wamid, status in seen if to == person]
        firsts = [wamid for wamid, status in mine if status == "sent"]
        assert firsts == sorted(firsts, key=order.__getitem__)  # a person's messages in the order sent...
        for wamid in firsts:  # ...and each message's receipts in the order they happened
            assert [s for w, s in mine if w == wamid] == ["sent", "delivered", "read"]


async def test_no_more_posts_are_in_flight_than_the_bound_even_with_retries() -> None:
    chat4all = SlowChat4All(delay_s=0.03)
    chat4all.answers = [500, 503, 500, 503]  # failed batches come back as retries, alongside new ones
    retries = (0.01,) * 5  # each batch gets through in the end
    async with running(
        chat4all, settings={"auto_deliver": True}, webhook_concurrency=2, webhook_retry_delays_s=retries
    ) as client:
        sends = [(to, f"#{n}") for n in range(10) for to in RECIPIENTS]
        await asyncio.gather(*(whatsapp_send(client, to, text) for to, text in sends))

        async def taken() -> list[dict[str, Any]]:
            log = (await client.get("/sandbox/webhooks")).json()["items"]
            return [a for a in log if a["status"] == 200]

        await until(lambda: _count(taken(), 2 * len(sends)), within_s=10)
        log = (await client.get("/sandbox/webhooks")).json()["items"]

    assert chat4all.peak == 2  # the bound, reached, never passed
    assert any(a["attempt"] > 1 and a["status"] == 200 for a in log)
    assert len(chat4all.calls) < len(sends)


async def _count(items: Any, count: int) -> bool:
    return len(await items) >= count


async def test_a_failed_batch_is_retried_whole_without_holding_later_updates_back() -> None:
    chat4all = SlowChat4All()
    chat4all.answers = [503]  # then 200
    async with running(
        chat4all, settings={"auto_deliver": False}, webhook_retry_delays_s=(0.3,), webhook_linger_s=0.1
    ) as client:
        first = await asyncio.gather(*(whatsapp_send(client, "5511999998888", f"#{n}") for n in range(3)))
        await until(lambda: len(chat4all.calls) == 1)
        later = await whatsapp_send(client, "5511999998888", "later")

        async def logged() -> list[dict[str, Any]]:
            return (await client.get("/sandbox/webhooks", params={"channel": "whatsapp"})).json()["items"]

        await until(lambda: _count(logged(), 7), within_s=3)  # three updates, twice, and the later one
        log = await logged()

    failed, after, retried = chat4all.calls
    assert [s["id"] for u in updates_in(failed) for s in statuses(u)] == first  # one POST, three receipts
    assert [s["id"] for u in updates_in(after) for s in statuses(u)] == [later]  # not held up by the retry
    assert retried.body == failed.body  # the same batch, signed the same
    assert signed_by(WA_SECRET, retried)
    batch = log[0]["batch"]
    by_attempt = [(a["batch"], a["batch_size"], a["attempt"], a["status"]) for a in log if a["batch"] == batch]
    assert by_attempt == [(batch, 3, 1, 503)] * 3 + [(batch, 3, 2, 200)] * 3  # each update, each attempt
    assert [a["body"]["entry"][0]["changes"][0]["value"]["statuses"][0]["id"] for a in log[:3]] == first
    assert {a["kind"] for a in log} == {"sent"}


async def test_telegram_posts_one_update_per_call_in_order_and_bounded() -> None:
    chat4all = SlowChat4All(delay_s=0.02)
    async with running(chat4all, settings={}, telegram_updates="polling", webhook_concurrency=2) as client:
        people = ["1001", "1002", "1003", "1004"]
        for n in range(5):
            for person in people:
                body = {"channel": "telegram", "from": person, "text": f"#{n}"}
                assert (await client.post("/sandbox/inbound", json=body)).json()["webhook_status"] is None  # queued
        set_ = await client.post(f"/bot{TG_TOKEN}/setWebhook", json={"url": f"{CHAT4ALL}/webhooks/telegram"})
        assert set_.json()["ok"] is True

        async def logged() -> list[dict[str, Any]]:
            return (await client.get("/sandbox/webhooks", params={"channel": "telegram"})).json()["items"]

        await until(lambda: _count(logged(), 20), within_s=5)
        log = await logged()

    calls = chat4all.to("telegram")
    assert all(isinstance(c.json, dict) and "update_id" in c.json for c in calls)  # one update each, as is
    for person in people:
        mine = [c.json["message"] for c in calls if str(c.json["message"]["chat"]["id"]) == person]
        assert [m["text"] for m in mine] == [f"#{n}" for n in range(5)]
    assert chat4all.peak == 2
    assert {a["batch_size"] for a in log} == {1}
    assert len({a["batch"] for a in log}) == 20


async def test_inbound_goes_without_lingering_and_answers_its_own_post_s_status() -> None:
    chat4all = SlowChat4All()
    chat4all.answers = [500]
    async with running(chat4all, settings={}, webhook_linger_s=5.0, webhook_retry_delays_s=(0.01,)) as client:
        started = asyncio.get_running_loop().time()
        body = {"channel": "messenger", "from": "42", "text": "oi"}
        answer = (await client.post("/sandbox/inbound", json=body)).json()
        took = asyncio.get_running_loop().time() - started
        await until(lambda: len(chat4all.to("messenger")) == 2)

    assert answer["webhook_status"] == 500
    assert took < 1.0  # not the linger's 5 s
    assert signed_by(MS_SECRET, chat4all.calls[0])
    assert chat4all.calls[1].body == chat4all.calls[0].body


async def test_messenger_batches_are_page_envelopes_of_one_entry_per_update() -> None:
    chat4all = SlowChat4All(delay_s=0.02)
    async with running(chat4all, settings={"auto_read": True}, webhook_linger_s=0.05) as client:
        body = {"recipient": {"id": "42"}, "message": {"text": "x", "metadata": "tag"}}
        mids = [
            (await client.post(f"/{VERSION}/me/messages", json=body, headers=graph_headers(MS_TOKEN))).json()[
                "message_id"
            ]
            for _ in range(4)
        ]
        await until(lambda: len(chat4all.updates("messenger")) == 12)

    calls = chat4all.to("messenger")
    assert len(calls) < 12
    for call in calls:
        assert signed_by(MS_SECRET, call)
        assert call.json["object"] == "page"
        assert all(len(entry["messaging"]) == 1 for entry in call.json["entry"])
    kinds = []
    for update in chat4all.updates("messenger"):
        [event] = update.json["entry"][0]["messaging"]
        mid = event["message"]["mid"] if "message" in event else None
        kinds.append(("echo", mid) if mid else ("delivery" if "delivery" in event else "read", None))
    assert [mid for kind, mid in kinds if kind == "echo"] == mids


def test_merging_keeps_telegram_to_one_update_per_call() -> None:
    sandbox = Sandbox(CONFIG)
    _, first = sandbox.inbound(Channel.TELEGRAM, "1001", "um")
    _, second = sandbox.inbound(Channel.TELEGRAM, "1001", "dois")
    assert first is not None
    assert second is not None

    assert sandbox.merge([first]) is first
    with pytest.raises(ValueError, match="one update per webhook"):
        sandbox.merge([first, second])
