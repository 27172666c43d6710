"""Messages over gRPC: the same use cases and rules as REST, errors as status codes."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from entrypoints.grpc._generated.chat4all import v1 as pb
from entrypoints.grpc._generated.google.protobuf import Struct
from tests.grpc.support import Grpc, text

pytestmark = pytest.mark.unit


async def refused(call: object) -> GRPCError:
    with pytest.raises(GRPCError) as caught:
        await call  # type: ignore[misc]
    return caught.value


# --- auth -------------------------------------------------------------------------------------


async def test_a_call_without_a_token_is_unauthenticated(grpc: Grpc) -> None:
    _, _, conv = await grpc.pair()
    err = await refused(grpc.stub().send_message(text(conv, "hi")))
    assert err.status is Status.UNAUTHENTICATED
    assert "bearer token" in (err.message or "")


@pytest.mark.parametrize(
    "credentials",
    ["Bearer not-a-jwt", "Basic YW5hOnB3", "Bearer", "bearer   "],
)
async def test_a_bad_token_is_unauthenticated_and_sends_nothing(grpc: Grpc, credentials: str) -> None:
    ana, _, conv = await grpc.pair()
    err = await refused(grpc.stub(token=credentials).send_message(text(conv, "hi")))
    assert err.status is Status.UNAUTHENTICATED
    page = await grpc.stub(ana).list_messages(pb.ListMessagesRequest(conversation_id=conv))
    assert page.items == []


async def test_a_token_signed_with_another_key_or_expired_is_unauthenticated(grpc: Grpc) -> None:
    ana, _, conv = await grpc.pair()
    real = ana["headers"]["Authorization"].removeprefix("Bearer ")
    claims = jwt.decode(real, options={"verify_signature": False})
    forged = jwt.encode(claims, "x" * 40, algorithm="HS256")
    now = datetime.now(UTC)
    expired = jwt.encode(
        claims
        | {"iat": int((now - timedelta(hours=2)).timestamp()), "exp": int((now - timedelta(hours=1)).timestamp())},
        "t" * 40,
        algorithm="HS256",
    )
    for token in (forged, expired):
        err = await refused(grpc.stub(token=f"Bearer {token}").send_message(text(conv, "hi")))
        assert err.status is Status.UNAUTHENTICATED


async def test_the_scheme_is_case_insensitive(grpc: Grpc) -> None:
    ana, _, conv = await grpc.pair()
    token = ana["headers"]["Authorization"].removeprefix("Bearer ")
    answer = await grpc.stub(token=f"bearer {token}").send_message(text(conv, "hi"))
    assert answer.status == "accepted"


# --- SendMessage ------------------------------------------------------------------------------


async def test_send_is_accepted_and_readable_over_rest(grpc: Grpc) -> None:
    ana, bob, conv = await grpc.pair()
    meta = Struct.from_dict({"priority": "high", "n": 3, "tags": ["a", 1.5]})
    answer = await grpc.stub(ana).send_message(text(conv, "Olá!", metadata=meta, channels=["internal"]))
    assert answer.status == "accepted"
    assert answer.conversation_id == conv
    assert answer.seq == 1
    assert answer.created_at is not None and answer.created_at.tzinfo is not None
    uuid.UUID(answer.message_id)

    r = await grpc.api.client.get(f"/v1/conversations/{conv}/messages", headers=bob["headers"])
    assert r.status_code == 200, r.text
    [item] = r.json()["items"]
    assert item["message_id"] == answer.message_id
    assert item["payload"] == {"type": "text", "text": "Olá!"}
    assert item["metadata"] == {"priority": "high", "n": 3, "tags": ["a", 1.5]}
    assert item["channels"] == ["internal"]
    assert item["from"]["username"] == "ana"


async def test_send_is_idempotent_on_message_id(grpc: Grpc) -> None:
    ana, _, conv = await grpc.pair()
    mid = str(uuid.uuid4())
    stub = grpc.stub(ana)
    first = await stub.send_message(text(conv, "once", message_id=mid))
    again = await stub.send_message(text(conv, "once", message_id=mid))
    assert again == first
    assert first.message_id == mid
    page = await stub.list_messages(pb.ListMessagesRequest(conversation_id=conv))
    assert [m.message_id for m in page.items] == [mid]


async def test_a_message_id_reused_for_another_body_is_already_exists(grpc: Grpc) -> None:
    ana, _, conv = await grpc.pair()
    mid = str(uuid.uuid4())
    stub = grpc.stub(ana)
    await stub.send_message(text(conv, "first", message_id=mid))
    err = await refused(stub.send_message(text(conv, "second", message_id=mid)))
    assert err.status is Status.ALREADY_EXISTS
    page = await stub.list_messages(pb.ListMessagesRequest(conversation_id=conv))
    assert [m.payload.text.text for m in page.items if m.payload and m.payload.text] == ["first"]


async def test_a_retry_over_grpc_of_a_rest_send_is_the_same_message(grpc: Grpc) -> None:
    ana, _, conv = await grpc.pair()
    mid = str(uuid.uuid4())
    r = await grpc.api.send(ana, conv, "both ways", message_id=mid, metadata={"n": 1})
    assert r.status_code == 202, r.text
    answer = await grpc.stub(ana).send_message(
        text(conv, "both ways", message_id=mid, metadata=Struct.from_dict({"n": 1}))
    )
    assert (answer.message_id, answer.seq) == (mid, r.json()["seq"])


async def test_error_status_and_field(grpc: Grpc) -> None:
    ana, _, conv = await grpc.pair()
    stub = grpc.stub(ana)
    cases = [
        (text("not-a-uuid", "x"), Status.INVALID_ARGUMENT, "conversation_id"),
        (text(conv, "x", message_id="nope"), Status.INVALID_ARGUMENT, "message_id"),
        (text(conv, "x" * 4097), Status.INVALID_ARGUMENT, "payload.text"),
        (pb.SendMessageRequest(conversation_id=conv), Status.INVALID_ARGUMENT, "payload"),
        (text(conv, "x", channels=["fax"]), Status.INVALID_ARGUMENT, "channels"),
        (text(str(uuid.uuid4()), "x"), Status.NOT_FOUND, None),
        (text(conv, "x", **{"from_": "bob"}), Status.PERMISSION_DENIED, None),
    ]
    for request, status, field in cases:
        async with stub.channel.request(
            "/chat4all.v1.Chat4All/SendMessage",
            pb.Chat4AllBase().__mapping__()["/chat4all.v1.Chat4All/SendMessage"].cardinality,
            pb.SendMessageRequest,
            pb.SendMessageResponse,
            metadata=stub.metadata,
        ) as call:
            await call.send_message(request, end=True)
            with pytest.raises(GRPCError) as caught:
                await call.recv_message()
            assert caught.value.status is status, (request, caught.value)
            trailers = call.trailing_metadata or {}
            assert trailers.get("chat4all-field") == field, (request, dict(trailers))
            assert trailers.get("chat4all-problem")
    page = await stub.list_messages(pb.ListMessagesRequest(conversation_id=conv))
    assert page.items == []


async def test_a_non_member_may_not_send(grpc: Grpc) -> None:
    _, _, conv = await grpc.pair()
    eve = await grpc.api.user("eve")
    err = await refused(grpc.stub(eve).send_message(text(conv, "hi")))
    assert err.status is Status.PERMISSION_DENIED


async def test_a_file_payload_needs_a_completed_upload(grpc: Grpc) -> None:
    ana, _, conv = await grpc.pair()
    request = pb.SendMessageRequest(
        conversation_id=conv, payload=pb.Payload(file=pb.FilePayload(file_id=str(uuid.uuid4())))
    )
    err = await refused(grpc.stub(ana).send_message(request))
    assert err.status is Status.INVALID_ARGUMENT
    assert "file_id" in (err.message or "")


# --- SendMessages (the batching stream) ---------------------------------------------------------


async def test_a_send_stream_answers_each_request_in_order(grpc: Grpc) -> None:
    ana, _, conv = await grpc.pair()
    repeated = str(uuid.uuid4())

    async def requests() -> AsyncIterator[pb.SendMessageRequest]:
        for i in range(50):
            yield text(conv, f"m{i}")
        yield text(conv, "dup", message_id=repeated)
        yield text("bad", "x")
        yield text(conv, "dup", message_id=repeated)
        yield text(conv, "x" * 5000)
        yield text(conv, "last")

    results = [r async for r in grpc.stub(ana).send_messages(requests())]
    assert [r.index for r in results] == list(range(55))
    accepted = [r.accepted for r in results[:50]]
    assert all(a is not None for a in accepted)
    assert [a.seq for a in accepted if a is not None] == list(range(1, 51))
    assert results[50].accepted is not None and results[50].accepted.message_id == repeated
    assert results[51].error == pb.Error(
        code=Status.INVALID_ARGUMENT.value, message="conversation_id is a UUID", field="conversation_id"
    )
    assert results[52].accepted == results[50].accepted  # idempotent inside one stream too
    assert results[53].error is not None and results[53].error.field == "payload.text"
    assert results[54].accepted is not None and results[54].accepted.seq == 52

    page = await grpc.stub(ana).list_messages(pb.ListMessagesRequest(conversation_id=conv, limit=200))
    assert len(page.items) == 52


async def test_a_send_stream_needs_a_token(grpc: Grpc) -> None:
    _, _, conv = await grpc.pair()

    async def requests() -> AsyncIterator[pb.SendMessageRequest]:
        yield text(conv, "hi")

    with pytest.raises(GRPCError) as caught:
        _ = [r async for r in grpc.stub(token="Bearer nope").send_messages(requests())]
    assert caught.value.status is Status.UNAUTHENTICATED


# --- reading ------------------------------------------------------------------------------------


async def test_get_message_for_its_sender_and_recipient_only(grpc: Grpc) -> None:
    ana, bob, conv = await grpc.pair()
    sent = await grpc.stub(ana).send_message(text(conv, "hello bob", metadata=Struct.from_dict({"k": "v"})))
    for who in (ana, bob):
        m = await grpc.stub(who).get_message(pb.GetMessageRequest(message_id=sent.message_id))
        assert (m.message_id, m.conversation_id, m.seq) == (sent.message_id, conv, 1)
        assert m.payload == pb.Payload(text=pb.TextPayload(text="hello bob"))
        assert m.from_ is not None and m.from_.username == "ana"
        assert [r.username for r in m.to] == ["bob"]
        assert m.metadata is not None and m.metadata.to_dict() == {"k": "v"}
        assert m.created_at == sent.created_at

    eve = await grpc.api.user("eve")
    for who, message_id in ((eve, sent.message_id), (ana, str(uuid.uuid4()))):
        err = await refused(grpc.stub(who).get_message(pb.GetMessageRequest(message_id=message_id)))
        assert err.status is Status.NOT_FOUND
    err = await refused(grpc.stub(ana).get_message(pb.GetMessageRequest(message_id="x")))
    assert err.status is Status.INVALID_ARGUMENT


async def test_get_message_is_not_found_for_a_member_it_was_not_sent_to(grpc: Grpc) -> None:
    ana, bob = await grpc.api.user("ana"), await grpc.api.user("bob")
    await grpc.api.user("cid")
    conv = await grpc.api.conversation(ana, "bob", "cid", type_="group")
    cid = await grpc.api.client.post("/auth/token", json={"username": "cid", "password": "correct horse"})
    cid_stub = grpc.stub(token=f"Bearer {cid.json()['access_token']}")
    sent = await grpc.stub(ana).send_message(text(str(conv["conversation_id"]), "only bob", to=["bob"]))
    assert (await grpc.stub(bob).get_message(pb.GetMessageRequest(message_id=sent.message_id))).seq == 1
    err = await refused(cid_stub.get_message(pb.GetMessageRequest(message_id=sent.message_id)))
    assert err.status is Status.NOT_FOUND


async def test_list_messages_pages_as_rest(grpc: Grpc) -> None:
    ana, bob, conv = await grpc.pair()
    stub = grpc.stub(ana)
    for i in range(5):
        await stub.send_message(text(conv, f"m{i}"))
    latest = await stub.list_messages(pb.ListMessagesRequest(conversation_id=conv, limit=2))
    assert [m.seq for m in latest.items] == [4, 5]
    assert latest.next_cursor
    before = await stub.list_messages(pb.ListMessagesRequest(conversation_id=conv, limit=2, cursor=latest.next_cursor))
    assert [m.seq for m in before.items] == [2, 3]
    after = await stub.list_messages(pb.ListMessagesRequest(conversation_id=conv, limit=10, after_seq=3))
    assert [m.seq for m in after.items] == [4, 5]
    assert after.next_cursor == ""
    rest = await grpc.api.client.get(f"/v1/conversations/{conv}/messages?limit=2", headers=bob["headers"])
    assert [m["message_id"] for m in rest.json()["items"]] == [m.message_id for m in latest.items]

    eve = await grpc.api.user("eve")
    cases = [
        (grpc.stub(eve), pb.ListMessagesRequest(conversation_id=conv), Status.PERMISSION_DENIED),
        (stub, pb.ListMessagesRequest(conversation_id=str(uuid.uuid4())), Status.NOT_FOUND),
        (stub, pb.ListMessagesRequest(conversation_id=conv, limit=201), Status.INVALID_ARGUMENT),
        (stub, pb.ListMessagesRequest(conversation_id=conv, cursor="bogus"), Status.INVALID_ARGUMENT),
        (stub, pb.ListMessagesRequest(conversation_id=conv, after_seq=1, before_seq=3), Status.INVALID_ARGUMENT),
        (stub, pb.ListMessagesRequest(conversation_id=conv, after_seq=-1), Status.INVALID_ARGUMENT),
    ]
    for who, request, status in cases:
        err = await refused(who.list_messages(request))
        assert err.status is status, (request, err)


async def test_list_messages_since(grpc: Grpc) -> None:
    ana, _, conv = await grpc.pair()
    stub = grpc.stub(ana)
    first = await stub.send_message(text(conv, "old"))
    assert first.created_at is not None
    page = await stub.list_messages(
        pb.ListMessagesRequest(conversation_id=conv, since=first.created_at - timedelta(seconds=1))
    )
    assert [m.seq for m in page.items] == [1]
    page = await stub.list_messages(
        pb.ListMessagesRequest(conversation_id=conv, since=first.created_at + timedelta(hours=1))
    )
    assert page.items == []


async def test_list_conversations(grpc: Grpc) -> None:
    ana, bob, conv = await grpc.pair()
    await grpc.api.user("cid")
    group = await grpc.api.conversation(ana, "bob", "cid", type_="group")
    await grpc.stub(ana).send_message(text(conv, "bump"))  # most recent activity first
    page = await grpc.stub(ana).list_conversations(pb.ListConversationsRequest())
    assert [x.conversation_id for x in page.items] == [conv, str(group["conversation_id"])]
    first = page.items[0]
    assert first.type == "private"
    assert sorted(m.username for m in first.members) == ["ana", "bob"]
    assert first.last_seq == 1
    assert first.created_at is not None and first.last_activity_at is not None
    assert first.last_message is not None and first.last_message.payload.text.text == "bump"
    assert first.unread_count == 0  # ana sent it
    assert page.items[1].last_message is None and page.items[1].unread_count == 0

    one = await grpc.stub(ana).list_conversations(pb.ListConversationsRequest(limit=1))
    assert len(one.items) == 1 and one.next_cursor
    rest = await grpc.stub(ana).list_conversations(pb.ListConversationsRequest(limit=1, cursor=one.next_cursor))
    assert [x.conversation_id for x in rest.items] == [str(group["conversation_id"])]
    assert [x.conversation_id for x in (await grpc.stub(bob).list_conversations(pb.ListConversationsRequest())).items]
    err = await refused(grpc.stub(ana).list_conversations(pb.ListConversationsRequest(limit=101)))
    assert err.status is Status.INVALID_ARGUMENT


async def test_a_conversation_shows_its_last_message_as_list_messages_does_and_the_unread_count(grpc: Grpc) -> None:
    ana, bob, conv = await grpc.pair()
    sent = [await grpc.stub(ana).send_message(text(conv, body)) for body in ("one", "two")]
    await grpc.stub(bob).send_message(text(conv, "three"))
    await grpc.stub(ana).send_message(text(conv, "four"))

    before = (await grpc.stub(bob).list_conversations(pb.ListConversationsRequest())).items[0]
    history = await grpc.stub(bob).list_messages(pb.ListMessagesRequest(conversation_id=conv))
    await grpc.stub(bob).mark_read(pb.MarkReadRequest(message_id=sent[1].message_id))
    after = (await grpc.stub(bob).list_conversations(pb.ListConversationsRequest())).items[0]

    assert before.unread_count == 3  # one, two and four: not his own
    assert before.last_message is not None and before.last_message.seq == 4
    assert after.last_message == history.items[-1]  # the same message, as ListMessages shows it
    assert after.unread_count == 1  # two and every earlier one were read


async def test_message_status_and_mark_read(grpc: Grpc) -> None:
    ana, bob, conv = await grpc.pair()
    first = await grpc.stub(ana).send_message(text(conv, "one", channels=["internal"]))
    second = await grpc.stub(ana).send_message(text(conv, "two", channels=["internal"]))

    status = await grpc.stub(ana).get_message_status(pb.GetMessageStatusRequest(message_id=first.message_id))
    assert status.message_id == first.message_id
    assert status.status == "SENT"
    [delivery] = status.deliveries
    assert (delivery.channel, delivery.status, delivery.final) == ("internal", "SENT", False)
    assert delivery.recipient is not None and delivery.recipient.username == "bob"
    assert [h.status for h in status.history] == ["SENT"]

    read = await grpc.stub(bob).mark_read(pb.MarkReadRequest(message_id=second.message_id))
    assert (read.message_id, read.status) == (second.message_id, "READ")
    again = await grpc.stub(bob).mark_read(pb.MarkReadRequest(message_id=second.message_id))
    assert again.read_at == read.read_at  # idempotent
    earlier = await grpc.stub(ana).get_message_status(pb.GetMessageStatusRequest(message_id=first.message_id))
    assert earlier.status == "READ"  # reading a message reads the earlier ones
    rest = await grpc.api.client.get(f"/v1/messages/{first.message_id}/status", headers=ana["headers"])
    assert rest.json()["status"] == "READ"

    err = await refused(grpc.stub(ana).mark_read(pb.MarkReadRequest(message_id=first.message_id)))
    assert err.status is Status.PERMISSION_DENIED  # the sender
    for call in (
        grpc.stub(ana).mark_read(pb.MarkReadRequest(message_id=str(uuid.uuid4()))),
        grpc.stub(ana).get_message_status(pb.GetMessageStatusRequest(message_id=str(uuid.uuid4()))),
    ):
        assert (await refused(call)).status is Status.NOT_FOUND


# --- StreamEvents ----------------------------------------------------------------------------------


async def test_stream_events_authenticates_first(grpc: Grpc) -> None:
    with pytest.raises(GRPCError) as caught:
        _ = [e async for e in grpc.stub().stream_events(pb.StreamEventsRequest())]
    assert caught.value.status is Status.UNAUTHENTICATED


async def test_stream_events_streams_the_websockets_frames_and_pushes_deliver(grpc: Grpc) -> None:
    ana, bob, conv = await grpc.pair()
    events = aiter(grpc.stub(bob).stream_events(pb.StreamEventsRequest()))
    try:
        hello = await asyncio.wait_for(anext(events), 5)
        assert hello.type == "connected"
        assert json.loads(hello.json)["user_id"] == bob["user_id"]
        accepted = await grpc.stub(ana).send_message(text(conv, "over the stream"))
        await grpc.push()
        event = await asyncio.wait_for(anext(events), 5)
        assert event.type == "message.created"
        frame = json.loads(event.json)
        assert (frame["message_id"], frame["payload"]["text"]) == (accepted.message_id, "over the stream")

        async def delivered() -> bool:
            status = await grpc.stub(ana).get_message_status(pb.GetMessageStatusRequest(message_id=accepted.message_id))
            return status.status == "DELIVERED"

        for _ in range(100):
            if await delivered():
                break
            await asyncio.sleep(0.02)
        assert await delivered()  # pushed over gRPC counts as received, as over the WebSocket
    finally:
        await events.aclose()  # type: ignore[attr-defined]
