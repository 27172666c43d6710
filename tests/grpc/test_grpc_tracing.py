"""A gRPC call is a server span that continues the caller's ``traceparent``, and a send made in it carries the
trace to the log (the outbox rows' headers)."""

from __future__ import annotations

import uuid
from typing import Any

import grpclib.server
import grpclib.testing
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from entrypoints.tracing import trace_grpc_calls
from tests.grpc.support import Grpc, text

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def tracing_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """The in-process channel's server traced as ``serve()`` traces the real one when tracing is on."""

    class Traced(grpclib.server.Server):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            trace_grpc_calls(self)

    monkeypatch.setattr(grpclib.testing, "Server", Traced)


async def test_a_send_continues_the_callers_trace_to_its_events(grpc: Grpc, spans: InMemorySpanExporter) -> None:
    traced = grpc
    ana, _, conv = await traced.pair()
    trace_id, caller_span = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    outbox_before = len(traced.outbox.state.outbox)

    await traced.stub(ana).send_message(
        text(conv, "traced"),
        metadata={"authorization": ana["headers"]["Authorization"], "traceparent": f"00-{trace_id}-{caller_span}-01"},
    )

    (span,) = [s for s in spans.get_finished_spans() if s.name == "/chat4all.v1.Chat4All/SendMessage"]
    assert span.kind is trace.SpanKind.SERVER
    assert f"{span.context.trace_id:032x}" == trace_id
    assert span.parent is not None and f"{span.parent.span_id:016x}" == caller_span
    assert span.attributes is not None and span.attributes["rpc.method"] == "SendMessage"
    carried = traced.outbox.state.outbox_headers
    positions = range(outbox_before, len(traced.outbox.state.outbox))
    assert [carried[i]["traceparent"].split("-")[1] for i in positions] == [trace_id] * len(positions)
    assert positions
