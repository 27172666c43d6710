"""The standard health service and server reflection answer without a token."""

from __future__ import annotations

import pytest
from google.protobuf.descriptor_pb2 import FileDescriptorProto
from grpclib.health.v1.health_grpc import HealthStub
from grpclib.health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse
from grpclib.reflection.v1.reflection_grpc import ServerReflectionStub
from grpclib.reflection.v1.reflection_pb2 import ServerReflectionRequest, ServerReflectionResponse
from grpclib.reflection.v1alpha.reflection_grpc import ServerReflectionStub as AlphaReflectionStub
from grpclib.reflection.v1alpha.reflection_pb2 import ServerReflectionRequest as AlphaRequest

from entrypoints.grpc._generated.chat4all import v1 as pb
from tests.grpc.support import Grpc

pytestmark = pytest.mark.unit

SERVICE = "chat4all.v1.Chat4All"


async def status_of(grpc: Grpc, service: str) -> int:
    reply = await HealthStub(grpc.channel).Check(HealthCheckRequest(service=service))
    assert reply is not None
    return int(reply.status)


async def test_health_follows_the_database_and_shutdown(grpc: Grpc) -> None:
    for service in ("", SERVICE):
        assert await status_of(grpc, service) == HealthCheckResponse.SERVING
    grpc.serving.set(False)  # a stopping server
    assert await status_of(grpc, SERVICE) == HealthCheckResponse.NOT_SERVING
    grpc.serving.set(True)
    assert await status_of(grpc, "") == HealthCheckResponse.SERVING


async def test_health_is_not_serving_without_the_database(grpc: Grpc) -> None:
    grpc.database["database"] = False
    assert await status_of(grpc, "") == HealthCheckResponse.NOT_SERVING


@pytest.mark.parametrize("service", ["redis", "storage"])
async def test_health_is_not_serving_while_any_backing_service_fails(grpc: Grpc, service: str) -> None:
    """The server runs the HTTP API's readiness checks (``api_readiness``): Redis and the file store count too."""
    grpc.database[service] = False
    assert await status_of(grpc, SERVICE) == HealthCheckResponse.NOT_SERVING


async def reflect(grpc: Grpc, **request: str | bool) -> ServerReflectionResponse:
    async with ServerReflectionStub(grpc.channel).ServerReflectionInfo.open() as call:
        await call.send_message(ServerReflectionRequest(**request), end=True)
        reply = await call.recv_message()
    assert reply is not None
    return reply


def files(reply: ServerReflectionResponse) -> dict[str, FileDescriptorProto]:
    out = {}
    for raw in reply.file_descriptor_response.file_descriptor_proto:
        proto = FileDescriptorProto.FromString(raw)
        out[proto.name] = proto
    return out


async def test_reflection_lists_and_describes_the_api(grpc: Grpc) -> None:
    listed = await reflect(grpc, list_services="")
    assert {s.name for s in listed.list_services_response.service} == {SERVICE, "grpc.health.v1.Health"}

    found = files(await reflect(grpc, file_containing_symbol=SERVICE))
    proto = found["chat4all/v1/chat4all.proto"]
    assert proto.package == "chat4all.v1"
    [service] = proto.service
    rpcs = {m.name: (m.client_streaming, m.server_streaming) for m in service.method}
    assert rpcs == {
        "SendMessage": (False, False),
        "SendMessages": (True, True),
        "GetMessage": (False, False),
        "ListConversations": (False, False),
        "ListMessages": (False, False),
        "GetMessageStatus": (False, False),
        "MarkRead": (False, False),
        "StreamEvents": (False, True),
        "UploadFile": (True, False),
    }
    # Every RPC reflection describes is one the server routes (and the other way round).
    assert {p.rsplit("/", 1)[1] for p in pb.Chat4AllBase().__mapping__()} == set(rpcs)
    assert set(proto.dependency) == {"google/protobuf/struct.proto", "google/protobuf/timestamp.proto"}
    for dependency in proto.dependency:
        assert dependency in files(await reflect(grpc, file_by_filename=dependency))
    health = files(await reflect(grpc, file_containing_symbol="grpc.health.v1.Health"))
    assert [p.package for p in health.values()] == ["grpc.health.v1"]
    missing = await reflect(grpc, file_containing_symbol="chat4all.v1.Nope")
    assert missing.error_response.error_code == 5  # NOT_FOUND


async def test_the_older_reflection_protocol_answers_too(grpc: Grpc) -> None:
    async with AlphaReflectionStub(grpc.channel).ServerReflectionInfo.open() as call:
        await call.send_message(AlphaRequest(list_services=""), end=True)
        reply = await call.recv_message()
    assert reply is not None
    assert SERVICE in {s.name for s in reply.list_services_response.service}
