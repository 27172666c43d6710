"""Every channel held to one contract: the same scenarios for WhatsApp, Messenger, Instagram and Telegram.

Chat4All runs in process (HTTP API and pipeline use cases on one in-memory store), the channel sandbox plays
the platform, and each channel's real connector and real webhook endpoint do the talking: a text goes out
under the id the send ledger keeps, receipts take it as far as the channel reports, redelivered, reordered
and forged webhooks change nothing, rate limits and platform errors are reported as worth retrying, a platform
that was down gets the delivery once it is back, a contact's reply lands where it belongs, and a file goes
as the platform's attachment, or as a text with a link when the platform cannot take it. Where a channel
cannot by design (Telegram has no receipts), the scenario asserts what it does instead.
"""

from __future__ import annotations

from typing import Any, Final
from uuid import UUID

import attrs
import httpx
import pytest

from adapters.channels.telegram import TelegramUpdates, next_offset, parse_update
from adapters.memory import InMemoryStore
from application.inbound import Inbound, Received, receive
from application.pipeline import JobResult, Outcome
from application.ports import ChannelConnector, ChannelError
from domain.channels import Channel
from domain.deliveries import IMPLIED_BY_READ, LAST_REPORTED
from tests.conformance.conftest import (
    CONTACTS,
    SANDBOX_URL,
    TG_TOKEN,
    Chat4AllApi,
    Connect,
    Pipeline,
    SandboxControl,
    SandboxFactory,
    Thread,
    asgi,
    body_of,
    signed,
)

pytestmark = pytest.mark.unit

RECEIPT_WEBHOOKS: Final = {  # what each platform reports on a send its recipient receives and reads
    Channel.WHATSAPP: ["sent", "delivered", "read"],  # each status echoes the connector's delivery key
    Channel.MESSENGER: ["echo", "delivered", "read"],  # message_echoes: the page's send, with our metadata
    Channel.INSTAGRAM: ["echo", "read"],  # messaging_seen only: Instagram has no delivery webhooks
    Channel.TELEGRAM: [],  # bots get no receipts, nor echoes
}
FINAL_STATUS: Final = {
    Channel.WHATSAPP: "READ",
    Channel.MESSENGER: "READ",
    Channel.INSTAGRAM: "READ",
    Channel.TELEGRAM: "SENT",
}
WEBHOOK_SECRET_SETTING: Final = {
    Channel.WHATSAPP: "whatsapp_app_secret",
    Channel.MESSENGER: "messenger_app_secret",
    Channel.INSTAGRAM: "instagram_app_secret",
    Channel.TELEGRAM: "telegram_webhook_secret",
}


async def send_and_deliver(
    chat4all: Chat4AllApi, pipeline: Pipeline, connector: ChannelConnector, thread: Thread, text: str = "Olá!"
) -> tuple[str, JobResult]:
    """The user's text to the contact, accepted by the API, routed and handed to the platform by the connector."""
    message_id = await chat4all.send(thread.author, thread.conversation_id, text)
    [job] = await pipeline.route(thread.to.channel)
    [result] = await pipeline.deliver(pipeline.worker(connector), [job])
    assert result.outcome is Outcome.HANDED_OVER, result.error
    return message_id, result


async def the_delivery(chat4all: Chat4AllApi, thread: Thread, message_id: str) -> dict[str, Any]:
    """The message's one delivery (to the contact), as its sender sees it."""
    deliveries: list[dict[str, Any]] = (await chat4all.status(thread.author, message_id))["deliveries"]
    [delivery] = deliveries
    return delivery


def footprint(store: InMemoryStore) -> tuple[object, ...]:
    """What an accepted webhook would leave behind: messages, conversations, queued events, bindings, sends."""
    s = store.state
    return (set(s.messages), set(s.conversations), len(s.outbox), dict(s.bindings), dict(s.sends))


# --- 1. send text ----------------------------------------------------------------------------------


async def test_a_text_reaches_the_platform_under_the_id_the_ledger_recorded(
    channel: Channel,
    chat4all: Chat4AllApi,
    sandbox: SandboxControl,
    connector: ChannelConnector,
    pipeline: Pipeline,
    thread: Thread,
    store: InMemoryStore,
) -> None:
    message_id, result = await send_and_deliver(chat4all, pipeline, connector, thread)

    [item] = await sandbox.messages(channel)
    platform_id = item["platform_message_id"]
    assert (item["to"], item["type"], item["text"]) == (CONTACTS[channel], "text", "Olá!")
    assert result.platform_message_id == platform_id
    async with store.uow() as uow:
        assert await uow.sends.find(channel, [platform_id]) == {platform_id: result.job.key}
    assert result.job.key == (UUID(message_id), str(thread.to), channel)
    history = (await chat4all.status(thread.author, message_id))["history"]
    assert f"{channel.value} accepted it as {platform_id}" in [h.get("detail") for h in history]


# --- 2. receipts -----------------------------------------------------------------------------------


async def test_receipts_take_the_delivery_as_far_as_the_channel_reports(
    channel: Channel,
    chat4all: Chat4AllApi,
    sandbox: SandboxControl,
    connector: ChannelConnector,
    pipeline: Pipeline,
    thread: Thread,
) -> None:
    await sandbox.settings(auto_deliver=True, auto_read=True)
    message_id, _ = await send_and_deliver(chat4all, pipeline, connector, thread)

    log = await sandbox.wait_for_webhooks(channel, len(RECEIPT_WEBHOOKS[channel]))
    await pipeline.apply_receipts()

    assert [(e["kind"], e["status"]) for e in log] == [(kind, 200) for kind in RECEIPT_WEBHOOKS[channel]]
    delivery = await the_delivery(chat4all, thread, message_id)
    assert (delivery["status"], delivery["final"]) == (FINAL_STATUS[channel], True)
    # What the connector declares and what the domain expects of the channel agree with what happened.
    assert connector.capabilities.receipts is (channel is not Channel.TELEGRAM)
    assert LAST_REPORTED[channel].value == FINAL_STATUS[channel]


@pytest.mark.parametrize("channel", [Channel.WHATSAPP], ids=["whatsapp"])
async def test_a_whatsapp_read_without_its_delivered_still_shows_delivered(
    channel: Channel,
    chat4all: Chat4AllApi,
    sandbox: SandboxControl,
    connector: ChannelConnector,
    pipeline: Pipeline,
    thread: Thread,
) -> None:
    await sandbox.settings(auto_deliver=False, auto_read=True)
    message_id, _ = await send_and_deliver(chat4all, pipeline, connector, thread)

    log = await sandbox.wait_for_webhooks(channel, 2)
    await pipeline.apply_receipts()

    assert [e["kind"] for e in log] == ["sent", "read"]  # when both happen at once, WhatsApp sends no delivered
    history = (await chat4all.status(thread.author, message_id))["history"]
    assert [h["status"] for h in history] == ["SENT", "SENT", "DELIVERED", "READ"]  # accepted, handed over, ...
    assert history[2].get("detail") == IMPLIED_BY_READ
    assert (await the_delivery(chat4all, thread, message_id))["status"] == "READ"


# --- 3. duplicate and reordered webhooks -----------------------------------------------------------


async def test_redelivered_and_reordered_webhooks_change_nothing(
    channel: Channel,
    chat4all: Chat4AllApi,
    sandbox: SandboxControl,
    connector: ChannelConnector,
    pipeline: Pipeline,
    thread: Thread,
    store: InMemoryStore,
) -> None:
    await sandbox.settings(auto_deliver=True, auto_read=True)
    message_id, _ = await send_and_deliver(chat4all, pipeline, connector, thread)
    await sandbox.wait_for_webhooks(channel, len(RECEIPT_WEBHOOKS[channel]))
    reply = await sandbox.inbound(channel, CONTACTS[channel], "oi")
    await pipeline.apply_receipts()
    sent = await sandbox.webhooks(channel)  # the receipts and the reply, as the platform sent them
    status = await chat4all.status(thread.author, message_id)
    history = await chat4all.history(thread.author, thread.conversation_id)

    answers = []
    for entry in [*reversed(sent), *reversed(sent)]:
        body = body_of(entry)
        answer = await chat4all.webhook(channel, body, signed(channel, body))
        assert answer.status_code == 200, answer.text
        answers.append(answer.json())

    assert reply["webhook_status"] == 200
    assert [e["kind"] for e in sent] == [*RECEIPT_WEBHOOKS[channel], "inbound"]
    assert sum(a["accepted"] for a in answers) == 0
    assert sum(a["duplicates"] for a in answers) == 2  # the reply, twice: recognised by its platform id
    assert await pipeline.apply_receipts() == 0
    assert await chat4all.status(thread.author, message_id) == status  # same status, same history
    assert await chat4all.history(thread.author, thread.conversation_id) == history
    assert len(store.state.messages) == 2


async def test_receipts_arriving_in_reverse_order_end_where_ordered_ones_do(
    channel: Channel,
    chat4all: Chat4AllApi,
    sandbox_with: SandboxFactory,
    connect: Connect,
    pipeline: Pipeline,
    thread: Thread,
) -> None:
    held = httpx.MockTransport(lambda _: httpx.Response(200))  # the platform's webhooks are held back ...
    async with sandbox_with(webhooks_transport=held) as sandbox:
        await sandbox.settings(auto_deliver=True, auto_read=True)
        message_id, _ = await send_and_deliver(chat4all, pipeline, connect(channel, sandbox), thread)
        held_back = await sandbox.wait_for_webhooks(channel, len(RECEIPT_WEBHOOKS[channel]))

    for entry in reversed(held_back):  # ... and reach Chat4All last one first
        body = body_of(entry)
        assert (await chat4all.webhook(channel, body, signed(channel, body))).status_code == 200
    await pipeline.apply_receipts()

    delivery = await the_delivery(chat4all, thread, message_id)
    assert (delivery["status"], delivery["final"]) == (FINAL_STATUS[channel], True)
    statuses = [h["status"] for h in (await chat4all.status(thread.author, message_id))["history"]]
    assert statuses == sorted(statuses, key=["SENT", "DELIVERED", "READ"].index)  # never backwards


# --- 4, 5. rate limits and platform faults ---------------------------------------------------------


async def test_a_rate_limit_asks_to_retry_after_the_platform_s_wait(
    channel: Channel,
    chat4all: Chat4AllApi,
    sandbox: SandboxControl,
    connector: ChannelConnector,
    pipeline: Pipeline,
    thread: Thread,
) -> None:
    await sandbox.faults(channel, rate_limit_per_s=1)
    await send_and_deliver(chat4all, pipeline, connector, thread, "first")  # takes this second's only send
    await chat4all.send(thread.author, thread.conversation_id, "second")
    [job] = await pipeline.route(channel)

    with pytest.raises(ChannelError) as limited:
        await connector.send(job.outbound())

    assert limited.value.permanent is False
    assert limited.value.retry_after is not None
    assert limited.value.retry_after > 0
    assert [m["text"] for m in await sandbox.messages(channel)] == ["first"]


async def test_a_platform_error_is_worth_retrying(
    channel: Channel,
    chat4all: Chat4AllApi,
    sandbox: SandboxControl,
    connector: ChannelConnector,
    pipeline: Pipeline,
    thread: Thread,
) -> None:
    await sandbox.faults(channel, error_rate=1.0)
    await chat4all.send(thread.author, thread.conversation_id, "Olá!")
    [job] = await pipeline.route(channel)

    with pytest.raises(ChannelError) as failed:
        await connector.send(job.outbound())

    assert failed.value.permanent is False
    assert await sandbox.messages(channel) == []


# --- 6. forged signatures --------------------------------------------------------------------------


async def test_a_webhook_with_a_forged_signature_is_refused_and_stores_nothing(
    channel: Channel, chat4all: Chat4AllApi, sandbox_with: SandboxFactory, store: InMemoryStore
) -> None:
    before = footprint(store)
    async with sandbox_with(**{WEBHOOK_SECRET_SETTING[channel]: "not-our-secret"}) as impostor:
        answer = await impostor.inbound(channel, CONTACTS[channel], "oi")
        [entry] = await impostor.webhooks(channel)
    body = body_of(entry)

    guessed = await chat4all.webhook(channel, body, signed(channel, body, "a-guessed-secret"))

    assert (answer["webhook_status"], guessed.status_code) == (403, 403)
    assert guessed.headers["content-type"].startswith("application/problem+json")
    assert footprint(store) == before
    # The very same body, signed with the channel's secret, is taken: only the signature was wrong.
    genuine = await chat4all.webhook(channel, body, signed(channel, body))
    assert (genuine.status_code, genuine.json()["accepted"]) == (200, 1)


# --- 7. a platform down, then back -----------------------------------------------------------------


async def test_a_platform_down_then_back_gets_the_delivery_once(
    channel: Channel,
    chat4all: Chat4AllApi,
    sandbox: SandboxControl,
    connector: ChannelConnector,
    pipeline: Pipeline,
    thread: Thread,
) -> None:
    await sandbox.faults(channel, down=True)
    message_id = await chat4all.send(thread.author, thread.conversation_id, "Olá!")
    [job] = await pipeline.route(channel)
    worker = pipeline.worker(connector, attempts=3)

    with pytest.raises(ChannelError) as down:
        await connector.send(job.outbound())
    [waiting] = await pipeline.deliver(worker, [job])

    assert down.value.permanent is False
    assert waiting.outcome is Outcome.DEFERRED  # the circuit opened: the job waits instead of failing
    assert await sandbox.messages(channel) == []
    assert (await the_delivery(chat4all, thread, message_id))["status"] == "SENT"

    await sandbox.faults(channel, down=False)
    [handed] = await pipeline.deliver(worker, [job])
    [again] = await pipeline.deliver(worker, [job])  # the same job, offered again by the log

    assert (handed.outcome, again.outcome) == (Outcome.HANDED_OVER, Outcome.ALREADY_SENT)
    [item] = await sandbox.messages(channel)
    assert item["platform_message_id"] == handed.platform_message_id == again.platform_message_id
    delivery = await the_delivery(chat4all, thread, message_id)
    assert (delivery["status"], delivery.get("error")) == ("SENT", None)


# --- 8. inbound ------------------------------------------------------------------------------------


async def test_a_contact_s_reply_lands_in_the_conversation_that_wrote_to_them(
    channel: Channel,
    chat4all: Chat4AllApi,
    sandbox: SandboxControl,
    connector: ChannelConnector,
    pipeline: Pipeline,
    thread: Thread,
    store: InMemoryStore,
) -> None:
    await send_and_deliver(chat4all, pipeline, connector, thread)

    answer = await sandbox.inbound(channel, CONTACTS[channel], "Olá! Tudo bem?")

    assert answer["webhook_status"] == 200
    [ours, reply] = await chat4all.history(thread.author, thread.conversation_id)
    assert ours["payload"]["text"] == "Olá!"
    assert reply["from"] == {"kind": "contact", "address": str(thread.to)}
    assert reply["payload"]["text"] == "Olá! Tudo bem?"
    assert reply["metadata"]["source"]["platform_message_id"] == answer["platform_message_id"]
    assert len(store.state.messages) == 2  # nothing went to the inbox instead


@pytest.mark.parametrize("channel", [Channel.TELEGRAM], ids=["telegram"])
async def test_telegram_by_polling_brings_the_same_reply(
    channel: Channel,
    chat4all: Chat4AllApi,
    sandbox_with: SandboxFactory,
    connect: Connect,
    pipeline: Pipeline,
    thread: Thread,
) -> None:
    async with sandbox_with(telegram_updates="polling") as sandbox:
        await send_and_deliver(chat4all, pipeline, connect(channel, sandbox), thread)
        answer = await sandbox.inbound(channel, CONTACTS[channel], "Olá! Tudo bem?")
        updates = TelegramUpdates(TG_TOKEN, base_url=SANDBOX_URL, poll_seconds=0, transport=asgi(sandbox.app))
        try:
            batch = await updates.next_batch(None)
            confirmed = await updates.next_batch(next_offset(batch, None))
        finally:
            await updates.close()

    assert answer["webhook_status"] is None  # no webhook is set: the update waits for getUpdates
    [message] = [parse_update(update) for update in batch]
    assert message is not None
    assert (message.platform_message_id, message.sender, message.text) == (
        answer["platform_message_id"],
        thread.to,
        "Olá! Tudo bem?",
    )
    assert confirmed == []
    assert await receive(chat4all.app.state.inbound, Inbound(messages=(message,))) == [Received.ACCEPTED]
    [_, reply] = await chat4all.history(thread.author, thread.conversation_id)
    assert reply["metadata"]["source"]["platform_message_id"] == answer["platform_message_id"]


# --- 9. files --------------------------------------------------------------------------------------

PHOTO: Final = bytes(range(256)) * 400  # 102,400 bytes


async def send_file_and_deliver(
    chat4all: Chat4AllApi, pipeline: Pipeline, connector: ChannelConnector, thread: Thread
) -> JobResult:
    """The user's photo, with a caption, to the contact: accepted, routed and handed to the platform."""
    file_id = await chat4all.upload(thread.author, PHOTO, "foto.png", "image/png")
    await chat4all.send_file(thread.author, thread.conversation_id, file_id, "a foto")
    [job] = await pipeline.route(thread.to.channel)
    [result] = await pipeline.deliver(pipeline.worker(connector), [job])
    assert result.outcome is Outcome.HANDED_OVER, result.error
    return result


async def fetched(chat4all: Chat4AllApi, url: str) -> bytes:
    """What a link Chat4All handed out serves, fetched without credentials (the signature is the permission)."""
    assert url.startswith("http://chat4all/v1/files/blobs/")
    r = await chat4all.http.get(url)
    assert r.status_code == 200, r.text
    return r.content


async def test_a_file_goes_as_the_platform_s_attachment_that_serves_the_exact_bytes(
    channel: Channel,
    chat4all: Chat4AllApi,
    sandbox: SandboxControl,
    connector: ChannelConnector,
    pipeline: Pipeline,
    thread: Thread,
) -> None:
    result = await send_file_and_deliver(chat4all, pipeline, connector, thread)

    items = await sandbox.messages(channel)
    *before, item = items
    assert item["platform_message_id"] == result.platform_message_id  # receipts follow the file
    if channel in (Channel.MESSENGER, Channel.INSTAGRAM):
        # An attachment carries no caption: it goes just before, as a text.
        assert [(b["type"], b["text"]) for b in before] == [("text", "a foto")]
        assert (item["type"], item["text"]) == ("image", None)
    else:
        assert before == []
        assert (item["type"], item["text"], item["file_name"]) == ("document", "a foto", "foto.png")
    if channel is Channel.TELEGRAM:
        # Uploaded (Telegram fetches documents by URL only as PDF or ZIP): the bytes went through the connector.
        assert item["file_size"] == len(PHOTO)
        assert "document_url" not in item
    else:
        assert await fetched(chat4all, item["document_url"]) == PHOTO


async def test_a_file_the_platform_cannot_take_goes_as_a_text_with_a_link(
    channel: Channel,
    chat4all: Chat4AllApi,
    sandbox: SandboxControl,
    connector: ChannelConnector,
    pipeline: Pipeline,
    thread: Thread,
) -> None:
    # As if the photo were over the platform's attachment limit (2 GiB files are allowed; 25 MB on Messenger).
    connector.capabilities = attrs.evolve(connector.capabilities, max_attachment_bytes=len(PHOTO) - 1)  # type: ignore[misc]

    await send_file_and_deliver(chat4all, pipeline, connector, thread)

    [item] = await sandbox.messages(channel)
    assert item["type"] == "text"
    caption, line = item["text"].split("\n")
    assert caption == "a foto"
    assert line.startswith("foto.png (100.0 KB, link valid until ")
    assert await fetched(chat4all, line.rsplit(" ", 1)[1]) == PHOTO
