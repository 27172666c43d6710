"""Another gRPC implementation (grpcio's C core, as grpcurl and most clients) over a real socket."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc as grpcio  # the fixture is called grpc
import pytest
from grpclib.health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse
from grpclib.reflection.v1.reflection_pb2 import ServerReflectionRequest, ServerReflectionResponse
from grpclib.server import Server

from entrypoints.grpc._generated.chat4all import v1 as pb
from entrypoints.grpc.auth import BearerAuth
from entrypoints.grpc.server import Chat4AllService, services
from entrypoints.stack.postgres import free_port
from tests.grpc.support import CAP, Grpc, text

pytestmark = pytest.mark.unit


@pytest.fixture
async def address(grpc: Grpc) -> AsyncIterator[str]:
    """The same service (on the fixture's bus and store) on a TCP port of its own."""

    async def ready() -> dict[str, bool]:
        return {"database": True}

    service = Chat4AllService(
        bus=grpc.bus,
        files=grpc.files,
        auth=BearerAuth(grpc.bus.deps.tokens.verify),
        max_message_bytes=CAP,
        realtime=grpc.realtime,
    )
    server = Server(services(service, readiness=ready, serving=grpc.serving, max_message_bytes=CAP))
    port = free_port()
    await server.start("127.0.0.1", port)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        # grpclib's close() leaves accepted connections open: wait (5 s at most) until the client's are gone.
        for _ in range(500):
            if all(h.closing for h in server._handlers):
                break
            await asyncio.sleep(0.01)
        server.close()
        await server.wait_closed()


def grpcio_client(address: str, token: str, conversation_id: str) -> dict[str, Any]:
    """What a grpcio (C core) client sees of the server; a blocking client, so the test runs it in a thread."""
    seen: dict[str, Any] = {}
    auth = (("authorization", token),)
    # A subchannel of its own: grpcio's shared pool would keep the connection open after the channel closes.
    with grpcio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
        health = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=HealthCheckRequest.SerializeToString,
            response_deserializer=HealthCheckResponse.FromString,
        )
        seen["health"] = health(HealthCheckRequest(service=""), timeout=10).status
        reflection = channel.stream_stream(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            request_serializer=ServerReflectionRequest.SerializeToString,
            response_deserializer=ServerReflectionResponse.FromString,
        )
        replies = reflection(iter([ServerReflectionRequest(list_services="")]), timeout=10)
        seen["services"] = [[s.name for s in r.list_services_response.service] for r in replies]
        send = channel.unary_unary(
            "/chat4all.v1.Chat4All/SendMessage",
            request_serializer=bytes,
            response_deserializer=pb.SendMessageResponse.parse,
        )
        request = text(conversation_id, "from grpcio", message_id=str(uuid.uuid4()))
        seen["sent"] = [send(request, metadata=auth, timeout=10) for _ in range(2)]
        refusals = {
            "no token": (request, None),
            "bad id": (text("x", "y"), auth),
            "oversize": (text(conversation_id, "x" * (CAP + 1)), auth),
        }
        for name, (message, metadata) in refusals.items():
            try:
                send(message, metadata=metadata, timeout=10)
            except grpcio.RpcError as e:
                seen[name] = (e.code(), dict(e.trailing_metadata() or ()))  # type: ignore[attr-defined]
    return seen


async def test_a_grpcio_client_sends_checks_health_and_reflects(grpc: Grpc, address: str) -> None:
    ana, _, conv = await grpc.pair()
    seen = await asyncio.to_thread(grpcio_client, address, ana["headers"]["Authorization"], conv)
    assert seen["health"] == HealthCheckResponse.SERVING
    assert seen["services"] == [["chat4all.v1.Chat4All", "grpc.health.v1.Health"]]
    first, again = seen["sent"]
    assert first.status == "accepted"
    assert again == first
    assert seen["no token"][0] == grpcio.StatusCode.UNAUTHENTICATED
    assert seen["bad id"] == (
        grpcio.StatusCode.INVALID_ARGUMENT,
        {"chat4all-problem": "invalid", "chat4all-field": "conversation_id"},
    )
    assert seen["oversize"][0] == grpcio.StatusCode.RESOURCE_EXHAUSTED
