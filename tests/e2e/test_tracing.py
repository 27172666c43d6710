"""One trace from the HTTP request that accepts a message to the workers that deliver it, exported over OTLP/HTTP
to a collector on loopback (a stack of its own, started with OTEL_EXPORTER_OTLP_ENDPOINT)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.e2e.conftest import RunningStack, StackLauncher
from tests.e2e.platforms import a_user

pytestmark = pytest.mark.e2e


class Collector:
    """An OTLP/HTTP trace receiver: keeps (trace id, span name, runtime, parent span id, span id) of every span."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                with collector.lock:
                    for resource_spans in request.resource_spans:
                        attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                        for scope_spans in resource_spans.scope_spans:
                            for span in scope_spans.spans:
                                collector.spans.append(
                                    {
                                        "trace_id": span.trace_id.hex(),
                                        "span_id": span.span_id.hex(),
                                        "parent": span.parent_span_id.hex(),
                                        "name": span.name,
                                        "runtime": attributes.get("chat4all.runtime"),
                                    }
                                )
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def trace(self, trace_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return [s for s in self.spans if s["trace_id"] == trace_id]


@pytest.fixture(scope="module")
def collector() -> Iterator[Collector]:
    c = Collector()
    yield c
    c.server.shutdown()
    c.server.server_close()


@pytest.fixture(scope="module")
def traced(launch_stack: StackLauncher, collector: Collector) -> Iterator[RunningStack]:
    stack = launch_stack(extra_env={"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url})
    yield stack
    stack.stop()


def test_one_trace_spans_the_api_and_the_workers_that_deliver_the_message(
    traced: RunningStack, collector: Collector
) -> None:
    http = traced.http
    ana = a_user(http, "ana")
    bob = a_user(http, "bob", channel="telegram", external_id=str(uuid.uuid4().int % 10**9))
    members = {"type": "private", "members": [bob["username"]]}
    conv = http.post("/v1/conversations", json=members, headers=ana["headers"])
    trace_id = uuid.uuid4().hex
    sent = http.post(
        "/v1/messages",
        json={"conversation_id": conv.json()["conversation_id"], "payload": {"type": "text", "text": "traced"}},
        headers={**ana["headers"], "traceparent": f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"},
    )
    assert sent.status_code == 202, sent.text

    def spans_of(runtime: str, name: str) -> list[dict[str, Any]]:
        return [s for s in collector.trace(trace_id) if s["runtime"] == runtime and s["name"] == name]

    traced.wait_until(
        lambda: bool(
            spans_of("http", "POST /v1/messages")
            and spans_of("channels", "chat4all-channel-telegram process")
            and spans_of("channels", "telegram send")
            and spans_of("status", "chat4all-status process")
        ),
        90,  # a loaded CI machine took 50 s just to start this stack's workers; 45 s for the spans was once too short
        "spans of the API, the telegram channel worker and the status worker in the request's trace",
    )
    (request,) = spans_of("http", "POST /v1/messages")
    (send,) = spans_of("channels", "telegram send")
    (batch,) = spans_of("channels", "chat4all-channel-telegram process")
    assert batch["parent"] == request["span_id"]  # the job's record carried the request's context
    assert send["parent"] == batch["span_id"]
    assert {s["runtime"] for s in collector.trace(trace_id)} >= {"http", "channels", "status"}
