"""Trace context across the pieces of one process: carriers in and out, a worker batch's span, traced platform
and webhook calls (on the SDK's in-memory exporter)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from adapters.kafka.consumer import Received
from adapters.tracing import context_of, current_trace_headers, from_kafka_headers, kafka_headers
from application.ports import OutboundMessage, WebhookResponse, WebhookSender
from domain.channels import Channel, ChannelAddress
from domain.ids import ConversationId, MessageId
from entrypoints import tracing
from tests.builders import ScriptedConnector

pytestmark = pytest.mark.unit


def record(headers: Mapping[str, str], offset: int = 0) -> Received:
    return Received(
        topic="chat.outbound.telegram",
        partition=0,
        offset=offset,
        key="k",
        payload={},
        timestamp=dt.datetime.now(dt.UTC),
        headers=headers,
    )


def test_outside_a_span_there_is_no_context_to_carry() -> None:
    assert current_trace_headers() == {}
    assert context_of({}) is None
    assert tracing.trace_headers() is None


def test_a_context_survives_kafka_headers(spans: InMemorySpanExporter) -> None:
    with tracing.tracer.start_as_current_span("request") as span:
        carried = current_trace_headers()
    trace_id = span.get_span_context().trace_id
    assert carried["traceparent"].startswith(f"00-{trace_id:032x}-")
    back = from_kafka_headers([*kafka_headers(carried), ("bad", b"\xff")])
    assert back == carried
    restored = context_of(back)
    assert restored is not None
    assert trace.get_current_span(restored).get_span_context().trace_id == trace_id


def test_a_batch_span_continues_the_first_records_trace_and_links_the_others(spans: InMemorySpanExporter) -> None:
    carried = []
    for name in ("a", "b", "c"):
        with tracing.tracer.start_as_current_span(name):
            carried.append(current_trace_headers())
    with tracing.batch_span("chat4all-router", [record(carried[0]), record({}, 1), record(carried[1], 2)]):
        pass
    with tracing.batch_span("chat4all-router", [record({})]):  # nothing to continue: no span at all
        pass

    finished = {s.name: s for s in spans.get_finished_spans()}
    batch = finished["chat4all-router process"]
    assert batch.context.trace_id == finished["a"].context.trace_id
    assert batch.parent is not None and batch.parent.span_id == finished["a"].context.span_id
    assert [link.context.trace_id for link in batch.links] == [finished["b"].context.trace_id]
    assert batch.attributes is not None and batch.attributes["messaging.batch.message_count"] == 3
    assert len(finished) == 4


async def test_a_platform_call_is_a_client_span_of_the_batch(spans: InMemorySpanExporter) -> None:
    connector = tracing.TracedConnector(ScriptedConnector(Channel.TELEGRAM))
    with tracing.tracer.start_as_current_span("batch") as batch:
        platform_id = await connector.send(
            OutboundMessage(
                delivery=(MessageId(uuid.uuid4()), f"user:{uuid.uuid4()}", Channel.TELEGRAM),
                conversation_id=ConversationId(uuid.uuid4()),
                seq=1,
                to=ChannelAddress.parse("telegram:42"),
                sender="user:x",
                payload={"type": "text", "text": "x"},
            )
        )
    (send,) = [s for s in spans.get_finished_spans() if s.name == "telegram send"]
    assert send.kind is trace.SpanKind.CLIENT
    assert send.parent is not None and send.parent.span_id == batch.get_span_context().span_id
    assert send.attributes is not None and send.attributes["chat4all.platform_message_id"] == platform_id


async def test_a_webhook_call_sends_the_trace_along(spans: InMemorySpanExporter) -> None:
    class Receiver(WebhookSender):
        def __init__(self) -> None:
            self.headers: dict[str, str] = {}

        async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> WebhookResponse:
            self.headers = dict(headers)
            return WebhookResponse(500)

    receiver = Receiver()
    answer = await tracing.TracedWebhookSender(receiver).post(
        "https://x", b"{}", {"X-Chat4All-Event": "message.created"}
    )
    (span,) = spans.get_finished_spans()
    assert answer.status == 500
    assert span.name == "webhook message.created" and not span.status.is_ok
    assert receiver.headers["traceparent"].split("-")[2] == f"{span.context.span_id:016x}"
    assert receiver.headers["X-Chat4All-Event"] == "message.created"
