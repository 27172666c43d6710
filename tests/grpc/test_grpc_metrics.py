"""Every gRPC call is counted once by method and final status, and timed, through grpclib's server events."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import grpclib.server
import grpclib.testing
import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.health.v1.health_grpc import HealthStub
from grpclib.health.v1.health_pb2 import HealthCheckRequest
from prometheus_client import REGISTRY

from entrypoints.grpc._generated.chat4all import v1 as pb
from entrypoints.grpc.metrics import instrument
from tests.grpc.support import CAP, Grpc, text

pytestmark = pytest.mark.unit

SEND = "/chat4all.v1.Chat4All/SendMessage"
GET = "/chat4all.v1.Chat4All/GetMessage"
EVENTS = "/chat4all.v1.Chat4All/StreamEvents"
HEALTH = "/grpc.health.v1.Health/Check"


@pytest.fixture
def instrumented(monkeypatch: pytest.MonkeyPatch) -> None:
    """The in-process channel's server instrumented as ``serve()`` instruments the real one."""

    class Instrumented(grpclib.server.Server):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            instrument(self)

    monkeypatch.setattr(grpclib.testing, "Server", Instrumented)


@pytest.fixture
def metered(instrumented: None, grpc: Grpc) -> Grpc:
    return grpc


def calls(method: str, code: str) -> float:
    return REGISTRY.get_sample_value("chat4all_grpc_requests_total", {"method": method, "code": code}) or 0.0


def timed(method: str) -> float:
    return REGISTRY.get_sample_value("chat4all_grpc_request_duration_seconds_count", {"method": method}) or 0.0


async def test_a_call_is_counted_once_with_its_status_and_timed(metered: Grpc) -> None:
    ana, _, conv = await metered.pair()
    ok, refused, timings = calls(SEND, "OK"), calls(SEND, "UNAUTHENTICATED"), timed(SEND)
    missing = calls(GET, "NOT_FOUND")

    await metered.stub(ana).send_message(text(conv, "counted"))
    with pytest.raises(GRPCError) as caught:  # raised: grpclib turns it into the trailers
        await metered.stub().send_message(text(conv, "no token"))
    assert caught.value.status is Status.UNAUTHENTICATED
    with pytest.raises(GRPCError) as caught:  # an application error: the handler sends the trailers itself
        await metered.stub(ana).get_message(pb.GetMessageRequest(message_id=str(uuid.uuid4())))
    assert caught.value.status is Status.NOT_FOUND

    assert calls(SEND, "OK") == ok + 1
    assert calls(SEND, "UNAUTHENTICATED") == refused + 1
    assert timed(SEND) == timings + 2
    assert calls(GET, "NOT_FOUND") == missing + 1


async def test_statuses_grpclib_answers_for_an_exception_and_services_beside_the_api_count(metered: Grpc) -> None:
    ana, _, conv = await metered.pair()
    too_big, checks = calls(SEND, "RESOURCE_EXHAUSTED"), calls(HEALTH, "OK")

    with pytest.raises(GRPCError) as caught:
        await metered.stub(ana).send_message(text(conv, "x" * (CAP + 1)))
    assert caught.value.status is Status.RESOURCE_EXHAUSTED
    await HealthStub(metered.channel).Check(HealthCheckRequest(service=""))

    assert calls(SEND, "RESOURCE_EXHAUSTED") == too_big + 1
    assert calls(HEALTH, "OK") == checks + 1


async def test_a_stream_the_client_abandons_counts_once_as_cancelled(metered: Grpc) -> None:
    _, bob, _ = await metered.pair()
    cancelled, unknown, timings = calls(EVENTS, "CANCELLED"), calls(EVENTS, "UNKNOWN"), timed(EVENTS)
    events = aiter(metered.stub(bob).stream_events(pb.StreamEventsRequest()))
    hello = await asyncio.wait_for(anext(events), 5)
    assert hello.type == "connected"
    assert timed(EVENTS) == timings  # not before it ends

    await events.aclose()  # type: ignore[attr-defined]
    for _ in range(100):
        if timed(EVENTS) > timings:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)

    assert calls(EVENTS, "CANCELLED") == cancelled + 1
    assert calls(EVENTS, "UNKNOWN") == unknown  # not a server error
    assert timed(EVENTS) == timings + 1
