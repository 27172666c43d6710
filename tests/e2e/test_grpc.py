"""The gRPC API of a real `chat4all up`: idempotent sends, refused tokens, and one store shared with REST."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.health.v1.health_grpc import HealthStub
from grpclib.health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse

from entrypoints.grpc._generated.chat4all import v1 as pb
from entrypoints.stack.postgres import free_port
from tests.e2e.conftest import RunningStack, StackLauncher

pytestmark = pytest.mark.e2e

READY_TIMEOUT = 30.0


async def _serving(port: int) -> bool:
    channel = Channel("127.0.0.1", port)
    try:
        reply = await HealthStub(channel).Check(HealthCheckRequest(service="chat4all.v1.Chat4All"), timeout=2)
        return reply is not None and reply.status == HealthCheckResponse.SERVING
    except (OSError, GRPCError, TimeoutError):
        return False
    finally:
        channel.close()


@pytest.fixture(scope="module")
def grpc_stack(launch_stack: StackLauncher) -> Iterator[tuple[RunningStack, int]]:
    """A stack of its own, on a free gRPC port (the default 50051 may be another stack's)."""
    port = free_port()
    stack = launch_stack(extra_env={"CHAT4ALL_GRPC_PORT": str(port)})
    deadline = time.monotonic() + READY_TIMEOUT
    while not asyncio.run(_serving(port)):
        if time.monotonic() > deadline:
            pytest.fail(f"the gRPC health service did not answer SERVING within {READY_TIMEOUT:.0f}s\n{stack.log()}")
        time.sleep(0.2)
    assert stack.runtime("grpc")["url"] == f"grpc://127.0.0.1:{port}"
    yield stack, port
    stack.stop()  # exit 0, no process left: the gRPC runtime stops on SIGTERM too


def user(http: httpx.Client, name: str) -> dict[str, Any]:
    r = http.post("/v1/users", json={"username": name, "password": "correct horse"})
    assert r.status_code == 201, r.text
    t = http.post("/auth/token", json={"username": name, "password": "correct horse"})
    assert t.status_code == 200, t.text
    return {
        "name": name,
        "token": t.json()["access_token"],
        "headers": {"Authorization": f"Bearer {t.json()['access_token']}"},
    }


def conversation(http: httpx.Client, owner: dict[str, Any], other: str) -> str:
    r = http.post("/v1/conversations", json={"type": "private", "members": [other]}, headers=owner["headers"])
    assert r.status_code == 201, r.text
    return str(r.json()["conversation_id"])


@pytest.fixture
async def channel(grpc_stack: tuple[RunningStack, int]) -> AsyncIterator[Channel]:
    ch = Channel("127.0.0.1", grpc_stack[1])
    yield ch
    ch.close()


def text(conversation_id: str, body: str, **extra: Any) -> pb.SendMessageRequest:
    return pb.SendMessageRequest(
        conversation_id=conversation_id, payload=pb.Payload(text=pb.TextPayload(text=body)), **extra
    )


async def test_a_grpc_send_is_idempotent_and_readable_over_rest(
    grpc_stack: tuple[RunningStack, int], channel: Channel
) -> None:
    stack, _ = grpc_stack
    run = uuid.uuid4().hex[:6]
    ana, bob = user(stack.http, f"ana{run}"), user(stack.http, f"bob{run}")
    conv = conversation(stack.http, ana, bob["name"])
    stub = pb.Chat4AllStub(channel, metadata={"authorization": f"Bearer {ana['token']}"})

    mid = str(uuid.uuid4())
    first = await stub.send_message(text(conv, "Olá over gRPC", message_id=mid, channels=["internal"]))
    again = await stub.send_message(text(conv, "Olá over gRPC", message_id=mid, channels=["internal"]))
    assert again == first
    assert (first.status, first.message_id, first.seq) == ("accepted", mid, 1)
    with pytest.raises(GRPCError) as caught:
        await stub.send_message(text(conv, "another body", message_id=mid))
    assert caught.value.status is Status.ALREADY_EXISTS

    r = stack.http.get(f"/v1/conversations/{conv}/messages", headers=bob["headers"])
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert [(m["message_id"], m["payload"]["text"], m["from"]["username"]) for m in items] == [
        (mid, "Olá over gRPC", ana["name"])
    ]
    status = stack.http.get(f"/v1/messages/{mid}/status", headers=ana["headers"])
    assert status.status_code == 200, status.text
    assert [d["channel"] for d in status.json()["deliveries"]] == ["internal"]


async def test_grpc_refuses_a_bad_or_missing_token(grpc_stack: tuple[RunningStack, int], channel: Channel) -> None:
    stack, _ = grpc_stack
    run = uuid.uuid4().hex[:6]
    ana = user(stack.http, f"ana{run}")
    conv = conversation(stack.http, ana, user(stack.http, f"bob{run}")["name"])
    for metadata in ({"authorization": "Bearer not.a.token"}, {"authorization": f"Basic {ana['token']}"}, None):
        with pytest.raises(GRPCError) as caught:
            await pb.Chat4AllStub(channel, metadata=metadata).send_message(text(conv, "nope"))
        assert caught.value.status is Status.UNAUTHENTICATED
    r = stack.http.get(f"/v1/conversations/{conv}/messages", headers=ana["headers"])
    assert r.json()["items"] == []


async def test_a_file_uploaded_over_grpc_downloads_over_rest(
    grpc_stack: tuple[RunningStack, int], channel: Channel
) -> None:
    stack, _ = grpc_stack
    ana = user(stack.http, f"ana{uuid.uuid4().hex[:6]}")
    data = hashlib.sha256(b"e2e").digest() * 10_000  # 320 000 bytes: 2 chunks of 256 KiB, sent as 64 KiB messages
    chunk = 256 * 1024

    async def requests() -> AsyncIterator[pb.UploadFileRequest]:
        checksum = "sha256:" + hashlib.sha256(data).hexdigest()
        yield pb.UploadFileRequest(
            start=pb.NewUpload(filename="e2e.bin", size=len(data), chunk_size=chunk, checksum=checksum)
        )
        for offset in range(0, len(data), 64 * 1024):
            yield pb.UploadFileRequest(index=offset // chunk, data=data[offset : offset + 64 * 1024])

    done = await pb.Chat4AllStub(channel, metadata={"authorization": f"Bearer {ana['token']}"}).upload_file(requests())
    assert (done.status, done.size, done.total_chunks) == ("completed", len(data), 2)
    link = stack.http.get(f"/v1/files/{done.file_id}/download", headers=ana["headers"])
    assert link.status_code == 200, link.text
    blob = stack.http.get(link.json()["download_url"])  # an absolute URL: the stack's own link
    assert blob.status_code == 200
    assert blob.content == data


async def test_stream_events_carries_a_rest_message_and_refuses_a_bad_token(
    grpc_stack: tuple[RunningStack, int], channel: Channel
) -> None:
    stack, _ = grpc_stack
    run = uuid.uuid4().hex[:6]
    ana, bob = user(stack.http, f"ana{run}"), user(stack.http, f"bob{run}")
    conv = conversation(stack.http, ana, bob["name"])
    with pytest.raises(GRPCError) as caught:
        _ = [e async for e in pb.Chat4AllStub(channel).stream_events(pb.StreamEventsRequest())]
    assert caught.value.status is Status.UNAUTHENTICATED

    stub = pb.Chat4AllStub(channel, metadata={"authorization": f"Bearer {bob['token']}"})
    events = aiter(stub.stream_events(pb.StreamEventsRequest()))
    try:
        assert (await asyncio.wait_for(anext(events), 10)).type == "connected"
        sent = await asyncio.to_thread(
            stack.http.post,
            "/v1/messages",
            json={"conversation_id": conv, "payload": {"type": "text", "text": "to your stream"}},
            headers=ana["headers"],
        )
        assert sent.status_code == 202, sent.text
        while (event := await asyncio.wait_for(anext(events), 10)).type != "message.created":
            pass
        assert json.loads(event.json)["message_id"] == sent.json()["message_id"]
    finally:
        await events.aclose()  # type: ignore[attr-defined]
