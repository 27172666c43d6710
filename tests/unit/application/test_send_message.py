"""Sending a message: ordering, idempotent retries, who may send to whom, and on which channels."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import pytest

from application import commands as c
from application import views as v
from application.errors import Conflict, Forbidden, NotFound
from application.handlers import MESSAGES_TOPIC, handle_send_messages
from domain.channels import Channel
from domain.conversations import Participant
from domain.errors import BusinessRuleViolation
from domain.ids import ConversationId
from domain.messages import TextContent
from tests.builders import T0, Chat4All, FakeClock, a_message_id


@pytest.fixture
async def pair(app: Chat4All) -> ConversationId:
    """A private conversation between ana and bruno; eve exists but is not in it."""
    await app.register_all("ana", "bruno", "eve")
    return await app.start("ana", "bruno")


@pytest.fixture
async def group(app: Chat4All) -> ConversationId:
    """A group of ana, bruno, carla and the WhatsApp contact +5511988887777."""
    await app.register_all("ana", "bruno", "carla")
    return await app.start("ana", "bruno", "carla", "whatsapp:+5511988887777")


def deliveries_of(app: Chat4All, message_id: Any) -> list[tuple[str, Channel]]:
    return [(dl.recipient.key, dl.channel) for dl in app.store.state.deliveries[message_id]]


def key(app: Chat4All, username: str) -> str:
    return Participant.user(app.users[username]).key


def assert_nothing_stored(app: Chat4All, conversation: ConversationId) -> None:
    assert app.stored_messages() == []
    assert app.events(MESSAGES_TOPIC) == []
    assert app.store.state.conversations[conversation].last_seq == 0


# --- ordering and the answer --------------------------------------------------------------


async def test_each_message_gets_the_next_seq_in_its_conversation(
    app: Chat4All, pair: ConversationId, clock: FakeClock
) -> None:
    first = await app.send("ana", pair, "one")
    clock.advance()
    second = await app.send("bruno", pair, "two")
    third = await app.send("ana", pair, "three")

    assert [first.seq, second.seq, third.seq] == [1, 2, 3]
    assert first.status == "accepted"
    assert first.conversation_id == pair
    assert (first.created_at, second.created_at) == (T0, T0 + timedelta(seconds=1))
    assert len({first.message_id, second.message_id, third.message_id}) == 3
    assert app.store.state.conversations[pair].last_seq == 3


async def test_seq_is_counted_per_conversation(app: Chat4All, pair: ConversationId) -> None:
    other = await app.start("ana", "eve")
    await app.send("ana", pair)
    await app.send("ana", pair)

    assert (await app.send("ana", other)).seq == 1


async def test_the_message_is_stored_with_its_content_recipients_and_metadata(
    app: Chat4All, pair: ConversationId
) -> None:
    accepted = await app.send("ana", pair, "olá", metadata={"ref": "A-1"})

    (stored,) = app.stored_messages()
    assert stored.id == accepted.message_id
    assert stored.content == TextContent("olá")
    assert stored.sender == Participant.user(app.users["ana"])
    assert stored.recipients == (Participant.user(app.users["bruno"]),)
    assert stored.metadata == {"ref": "A-1"}
    assert stored.channels is None


async def test_the_client_may_choose_the_message_id(app: Chat4All, pair: ConversationId) -> None:
    mid = a_message_id()

    accepted = await app.send("ana", pair, message_id=mid)

    assert accepted.message_id == mid
    assert mid in app.store.state.messages


# --- idempotency --------------------------------------------------------------------------


async def test_a_retry_returns_the_same_answer_and_stores_once(
    app: Chat4All, pair: ConversationId, clock: FakeClock
) -> None:
    mid = a_message_id()
    first = await app.send("ana", pair, "hello", message_id=mid)
    clock.advance(timedelta(minutes=5))

    retry = await app.send("ana", pair, "hello", message_id=mid)

    assert retry == first
    assert len(app.stored_messages()) == 1
    assert len(app.events(MESSAGES_TOPIC)) == 1
    assert (await app.send("ana", pair, "next")).seq == 2  # the retry used no position


async def test_concurrent_retries_store_the_message_once(app: Chat4All, pair: ConversationId) -> None:
    mid = a_message_id()

    answers = await asyncio.gather(*(app.send("ana", pair, "hello", message_id=mid) for _ in range(5)))

    assert len(set(answers)) == 1
    assert answers[0].seq == 1
    assert len(app.stored_messages()) == 1
    assert len(app.events(MESSAGES_TOPIC)) == 1


def a_send(app: Chat4All, sender: str, conversation: ConversationId, text: str, **more: Any) -> c.SendMessage:
    return c.SendMessage(
        sender=app.users[sender], conversation_id=conversation, payload={"type": "text", "text": text}, **more
    )


async def test_a_batch_is_written_together_and_each_command_gets_its_own_answer(
    app: Chat4All, pair: ConversationId
) -> None:
    other = await app.start("bruno", "eve")
    mid = a_message_id()
    batch = [
        a_send(app, "ana", pair, "one", message_id=mid),
        a_send(app, "eve", pair, "intruder"),  # not a member
        a_send(app, "bruno", other, "elsewhere"),
        c.SendMessage(sender=app.users["ana"], conversation_id=pair, payload={"type": "sticker"}),
        a_send(app, "ana", pair, "one", message_id=mid),  # the same id again: one message
        a_send(app, "bruno", pair, "two"),
        a_send(app, "ana", pair, "different", message_id=mid),  # the same id, other content
    ]

    answers = await handle_send_messages(batch, app.bus.deps)

    kinds = [type(a).__name__ for a in answers]
    assert kinds == ["Accepted", "Forbidden", "Accepted", "BusinessRuleViolation", "Accepted", "Accepted", "Conflict"]
    one, _, elsewhere, _, again, two, _ = answers
    assert isinstance(one, v.Accepted) and isinstance(two, v.Accepted) and isinstance(elsewhere, v.Accepted)
    assert again == one
    assert (one.seq, two.seq, elsewhere.seq) == (1, 2, 1)
    assert len(app.stored_messages()) == 3
    assert [e["seq"] for e in app.events(MESSAGES_TOPIC)] == [1, 1, 2]


async def test_a_batch_with_nothing_to_write_writes_nothing(app: Chat4All, pair: ConversationId) -> None:
    answers = await handle_send_messages([a_send(app, "eve", pair, "intruder")], app.bus.deps)

    assert [type(a) for a in answers] == [Forbidden]
    assert_nothing_stored(app, pair)


@pytest.mark.parametrize(
    "change",
    [
        {"payload": {"type": "text", "text": "something else"}},
        {"metadata": {"ref": "other"}},
        {"channels": ["internal"]},
        {"to": ["bruno"]},
    ],
)
async def test_the_same_id_for_a_different_message_is_a_conflict(
    app: Chat4All, pair: ConversationId, change: dict[str, Any]
) -> None:
    mid = a_message_id()
    await app.send("ana", pair, "hello", message_id=mid)

    with pytest.raises(Conflict) as raised:
        await app.send("ana", pair, "hello", message_id=mid, **change)

    assert raised.value.field == "message_id"
    (stored,) = app.stored_messages()
    assert stored.content == TextContent("hello")


async def test_the_same_id_from_another_sender_is_a_conflict(app: Chat4All, pair: ConversationId) -> None:
    mid = a_message_id()
    await app.send("ana", pair, "hello", message_id=mid)

    with pytest.raises(Conflict):
        await app.send("bruno", pair, "hello", message_id=mid)

    assert len(app.stored_messages()) == 1


async def test_the_same_id_in_another_conversation_is_a_conflict(app: Chat4All, pair: ConversationId) -> None:
    other = await app.start("ana", "eve")
    mid = a_message_id()
    await app.send("ana", pair, "hello", message_id=mid)

    with pytest.raises(Conflict):
        await app.send("ana", other, "hello", message_id=mid)

    assert app.store.state.conversations[other].last_seq == 0


# --- who may send ---------------------------------------------------------------------------


async def test_a_non_member_is_forbidden_and_nothing_is_stored(app: Chat4All, pair: ConversationId) -> None:
    with pytest.raises(Forbidden):
        await app.send("eve", pair)

    assert_nothing_stored(app, pair)


async def test_an_unknown_conversation_is_not_found(app: Chat4All, pair: ConversationId) -> None:
    with pytest.raises(NotFound):
        await app.send("ana", ConversationId(uuid.uuid4()))

    assert app.stored_messages() == []
    assert [e["type"] for e in app.events()] == ["conversation.created"]  # the pair's, nothing else


async def test_from_may_name_the_caller(app: Chat4All, pair: ConversationId) -> None:
    ana = app.users["ana"]

    seqs = [(await app.send("ana", pair, from_=ref)).seq for ref in ("ana", str(ana), f"user:{ana}")]

    assert seqs == [1, 2, 3]


@pytest.mark.parametrize("from_", ["bruno", "eve", "nobody", "whatsapp:+5511999998888", ""])
async def test_from_cannot_name_anyone_else(app: Chat4All, pair: ConversationId, from_: str) -> None:
    with pytest.raises(Forbidden):
        await app.send("ana", pair, from_=from_)

    assert_nothing_stored(app, pair)


async def test_from_with_another_users_id_is_forbidden(app: Chat4All, pair: ConversationId) -> None:
    with pytest.raises(Forbidden):
        await app.send("ana", pair, from_=str(app.users["bruno"]))

    assert_nothing_stored(app, pair)


# --- recipients --------------------------------------------------------------------------------


async def test_without_to_every_other_member_receives(app: Chat4All, group: ConversationId) -> None:
    accepted = await app.send("bruno", group)

    assert deliveries_of(app, accepted.message_id) == [
        (key(app, "ana"), Channel.INTERNAL),
        (key(app, "carla"), Channel.INTERNAL),
        ("whatsapp:+5511988887777", Channel.WHATSAPP),
    ]


async def test_to_sends_to_a_subset_only(app: Chat4All, group: ConversationId) -> None:
    accepted = await app.send("ana", group, to=["carla", "whatsapp:+5511988887777"])

    assert deliveries_of(app, accepted.message_id) == [
        (key(app, "carla"), Channel.INTERNAL),
        ("whatsapp:+5511988887777", Channel.WHATSAPP),
    ]
    (stored,) = app.stored_messages()
    assert [r.key for r in stored.recipients] == [key(app, "carla"), "whatsapp:+5511988887777"]


async def test_to_may_name_a_member_by_a_linked_address(app: Chat4All, group: ConversationId) -> None:
    await app.link("carla", "telegram", "777")

    accepted = await app.send("ana", group, to=["telegram:777"])

    assert deliveries_of(app, accepted.message_id) == [
        (key(app, "carla"), Channel.INTERNAL),
        (key(app, "carla"), Channel.TELEGRAM),
    ]


@pytest.mark.parametrize(
    ("to", "message"),
    [
        (["eve"], "not another member"),
        (["ana"], "not another member"),
        (["whatsapp:+5511900001111"], "not another member"),
        (["nobody"], "unknown member"),
        ([], "at least one"),
    ],
)
async def test_to_must_name_other_members(app: Chat4All, group: ConversationId, to: list[str], message: str) -> None:
    await app.register("eve")

    with pytest.raises(BusinessRuleViolation, match=message) as raised:
        await app.send("ana", group, to=to)

    assert raised.value.field == "to"
    assert_nothing_stored(app, group)


# --- channels ------------------------------------------------------------------------------------


async def test_a_linked_recipient_is_reached_on_internal_and_its_platforms(app: Chat4All, pair: ConversationId) -> None:
    await app.link("bruno", "whatsapp", "+5511999998888")
    await app.link("bruno", "instagram", "bruno")

    accepted = await app.send("ana", pair)

    assert [ch for _, ch in deliveries_of(app, accepted.message_id)] == [
        Channel.INTERNAL,
        Channel.INSTAGRAM,
        Channel.WHATSAPP,
    ]


@pytest.mark.parametrize(
    ("channels", "expected"),
    [
        (["whatsapp"], [Channel.WHATSAPP]),
        (["internal"], [Channel.INTERNAL]),
        (["whatsapp", "internal", "whatsapp"], [Channel.INTERNAL, Channel.WHATSAPP]),
        (["all"], [Channel.INTERNAL, Channel.WHATSAPP]),
        (None, [Channel.INTERNAL, Channel.WHATSAPP]),
    ],
)
async def test_requested_channels_filter_the_deliveries(
    app: Chat4All, pair: ConversationId, channels: list[str] | None, expected: list[Channel]
) -> None:
    await app.link("bruno", "whatsapp", "+5511999998888")

    accepted = await app.send("ana", pair, channels=channels)

    assert [ch for _, ch in deliveries_of(app, accepted.message_id)] == expected


async def test_channels_are_stored_without_duplicates(app: Chat4All, pair: ConversationId) -> None:
    await app.send("ana", pair, channels=["internal", "internal"])

    (stored,) = app.stored_messages()
    assert stored.channels == (Channel.INTERNAL,)


async def test_a_recipient_no_requested_channel_reaches_is_named(app: Chat4All, group: ConversationId) -> None:
    await app.link("bruno", "telegram", "1")

    with pytest.raises(BusinessRuleViolation) as raised:
        await app.send("ana", group, channels=["telegram"])

    assert raised.value.field == "channels"
    assert key(app, "carla") in raised.value.message
    assert "whatsapp:+5511988887777" in raised.value.message
    assert key(app, "bruno") not in raised.value.message
    assert_nothing_stored(app, group)


@pytest.mark.parametrize("channels", [[], ["all", "internal"], ["sms"]])
async def test_malformed_channels_are_refused(app: Chat4All, pair: ConversationId, channels: list[str]) -> None:
    with pytest.raises(BusinessRuleViolation) as raised:
        await app.send("ana", pair, channels=channels)

    assert raised.value.field == "channels"
    assert_nothing_stored(app, pair)


# --- payloads ------------------------------------------------------------------------------------


async def test_a_file_payload_naming_no_upload_is_refused(app: Chat4All, pair: ConversationId) -> None:
    with pytest.raises(BusinessRuleViolation) as raised:
        await app.send("ana", pair, payload={"type": "file", "file_id": str(uuid.uuid4()), "caption": "cv"})

    assert raised.value.field == "payload.file_id"
    assert_nothing_stored(app, pair)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"type": "text", "text": ""}, "payload.text"),
        ({"type": "text", "text": "   "}, "payload.text"),
        ({"type": "text", "text": "x" * 4097}, "payload.text"),
        ({"type": "text", "text": 42}, "payload.text"),
        ({"type": "text"}, "payload.text"),
        ({"type": "file", "file_id": "not-a-uuid"}, "payload.file_id"),
        ({"type": "file", "file_id": str(uuid.uuid4()), "caption": 7}, "payload.caption"),
        ({"type": "audio"}, "payload.type"),
        ({}, "payload.type"),
    ],
)
async def test_a_malformed_payload_is_refused(
    app: Chat4All, pair: ConversationId, payload: dict[str, Any], field: str
) -> None:
    with pytest.raises(BusinessRuleViolation) as raised:
        await app.send("ana", pair, payload=payload)

    assert raised.value.field == field
    assert_nothing_stored(app, pair)


async def test_too_much_metadata_is_refused(app: Chat4All, pair: ConversationId) -> None:
    with pytest.raises(BusinessRuleViolation) as raised:
        await app.send("ana", pair, metadata={f"k{i}": i for i in range(51)})

    assert raised.value.field == "metadata"
    assert_nothing_stored(app, pair)


# --- the outbox ----------------------------------------------------------------------------------


async def test_an_accepted_message_writes_its_event_and_its_platform_jobs_to_the_outbox(
    app: Chat4All, pair: ConversationId
) -> None:
    await app.link("bruno", "telegram", "9")

    accepted = await app.send("ana", pair, "hi", metadata={"k": "v"})

    (_, (topic, partition_key, event), (job_topic, job_key, job)) = app.store.state.outbox
    assert (job_topic, job_key) == ("chat.outbound.telegram", str(pair))
    assert (job["type"], job["message_id"], job["to"]) == ("delivery.job", str(accepted.message_id), "telegram:9")
    assert app.store.state.routed == {pair: 1}  # nothing left for the router
    assert (topic, partition_key) == (MESSAGES_TOPIC, str(pair))
    assert event == {
        "type": "message.created",
        "message_id": str(accepted.message_id),
        "conversation_id": str(pair),
        "seq": 1,
        "from": key(app, "ana"),
        "payload": {"type": "text", "text": "hi"},
        "metadata": {"k": "v"},
        "created_at": T0.isoformat(),
        "deliveries": [
            {"recipient": key(app, "bruno"), "channel": "internal"},
            {"recipient": key(app, "bruno"), "channel": "telegram"},
        ],
    }


async def test_a_refused_message_writes_no_event(app: Chat4All, pair: ConversationId) -> None:
    await app.send("ana", pair, "accepted")
    mid = a_message_id()
    await app.send("ana", pair, "original", message_id=mid)
    refusals: list[tuple[type[Exception], str, dict[str, Any]]] = [
        (Forbidden, "eve", {}),
        (BusinessRuleViolation, "ana", {"channels": ["telegram"]}),
        (Conflict, "ana", {"text": "changed", "message_id": mid}),
        (BusinessRuleViolation, "ana", {"payload": {"type": "text", "text": ""}}),
    ]

    for error, sender, args in refusals:
        with pytest.raises(error):
            await app.send(sender, pair, **args)

    assert [e["seq"] for e in app.events(MESSAGES_TOPIC)] == [1, 2]
    assert app.store.state.conversations[pair].last_seq == 2
