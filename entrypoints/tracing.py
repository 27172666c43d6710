"""OpenTelemetry tracing: on when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._TRACES_ENDPOINT``) is set, else nothing.

One trace follows a message end to end: the HTTP request that accepts it (Litestar's OpenTelemetry plugin) -> its
outbox rows (the request's ``traceparent`` is stored with them) -> the Kafka records the relay publishes (headers)
-> each worker's batch (a span whose parent is the first record's context, linked to every other record's) ->
the platform call (a client span around the connector) -> the receipts it publishes and the status they apply ->
the outbound webhook calls (a client span, and ``traceparent`` sent to the receiver).

Spans go to the OTLP/HTTP exporter in batches; the exporter reads the standard ``OTEL_EXPORTER_OTLP_*`` variables
(endpoint, headers, timeout). Without an endpoint no provider is installed: the API's no-op tracer makes every
span here free, and no trace context is written anywhere.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from adapters.tracing import context_of, current_trace_headers
from application.ports import (
    ChannelCapabilities,
    ChannelConnector,
    ChannelError,
    DeliveryKey,
    OutboundMessage,
    WebhookResponse,
    WebhookSender,
    WebhookUnreachable,
)
from domain.channels import Channel

if TYPE_CHECKING:
    from adapters.kafka.consumer import Received

_ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")

tracer = trace.get_tracer("chat4all")


def tracing_enabled() -> bool:
    return any(os.environ.get(name) for name in _ENDPOINTS)


def configure_tracing(runtime: str) -> bool:
    """Install a tracer provider exporting over OTLP/HTTP, if an endpoint is set; True if it did.

    The service is ``OTEL_SERVICE_NAME``, else ``chat4all``; the runtime (``http``, ``router``, ...) is the
    ``service.instance.id`` prefix and the ``chat4all.runtime`` attribute of every span.
    """
    if not tracing_enabled():
        return False
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create(
        {
            "service.name": os.environ.get("OTEL_SERVICE_NAME", "chat4all"),
            "service.instance.id": f"{runtime}-{os.getpid()}",
            "chat4all.runtime": runtime,
        }
    )
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(), schedule_delay_millis=1000))
    trace.set_tracer_provider(provider)
    atexit.register(provider.shutdown)  # flush what is buffered when the process ends
    return True


def trace_grpc_calls(server: Any) -> None:
    """A server span around every call ``server`` answers (grpclib has no OpenTelemetry instrumentation): it
    continues the caller's ``traceparent`` metadata, and a send made inside it carries it to the log."""
    from grpclib.events import RecvRequest, listen

    async def received(event: RecvRequest) -> None:
        handler = event.method_func
        parent = context_of({k: v for k, v in event.metadata.items() if isinstance(v, str)})
        method = event.method_name
        service, _, name = method.lstrip("/").rpartition("/")

        async def traced(stream: Any) -> None:
            attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}
            with tracer.start_as_current_span(method, context=parent, kind=SpanKind.SERVER, attributes=attributes):
                await handler(stream)

        event.method_func = traced

    listen(server, RecvRequest, received)


def trace_headers() -> dict[str, str] | None:
    """The current request's trace context, to carry with the events it causes; None when tracing is off."""
    return current_trace_headers() or None


@contextmanager
def batch_span(group: str, batch: Sequence[Received]) -> Iterator[None]:
    """A consumer span around one batch of records: the child of the first record's trace, linked to the others'.

    Batches mix records of many requests; the parent keeps a single message's trace in one piece from the API to
    the worker (the usual case at low load, and the one to look at), the links keep the others reachable.
    """
    contexts = [c for c in (context_of(r.headers) for r in batch) if c is not None]
    if not contexts:
        yield
        return
    parent, *others = contexts
    links = [Link(trace.get_current_span(c).get_span_context()) for c in others[:128]]
    topics = sorted({r.topic for r in batch})
    with tracer.start_as_current_span(
        f"{group} process",
        context=parent,
        kind=SpanKind.CONSUMER,
        links=links,
        attributes={
            "messaging.system": "kafka",
            "messaging.consumer.group.name": group,
            "messaging.destination.name": ",".join(topics),
            "messaging.batch.message_count": len(batch),
        },
    ):
        yield


class TracedConnector(ChannelConnector):
    """A connector whose platform calls are client spans of the current trace."""

    def __init__(self, inner: ChannelConnector) -> None:
        self.inner = inner
        self.channel: Channel = inner.channel
        self.capabilities: ChannelCapabilities = inner.capabilities

    async def send(self, message: OutboundMessage) -> str:
        with tracer.start_as_current_span(
            f"{self.channel.value} send",
            kind=SpanKind.CLIENT,
            attributes={
                "chat4all.channel": self.channel.value,
                "chat4all.message_id": str(message.delivery[0]),
                "chat4all.conversation_id": str(message.conversation_id),
            },
        ) as span:
            try:
                platform_id = await self.inner.send(message)
            except ChannelError as exc:
                span.set_status(Status(StatusCode.ERROR, exc.reason))
                span.set_attribute("chat4all.permanent", exc.permanent)
                raise
            span.set_attribute("chat4all.platform_message_id", platform_id)
            return platform_id

    async def find_sent(self, delivery: DeliveryKey) -> str | None:
        return await self.inner.find_sent(delivery)

    async def close(self) -> None:
        await self.inner.close()


class TracedWebhookSender(WebhookSender):
    """Webhook calls as client spans, with ``traceparent`` sent along so the receiver can continue the trace."""

    def __init__(self, inner: WebhookSender) -> None:
        self.inner = inner

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> WebhookResponse:
        event = headers.get("X-Chat4All-Event", "webhook")
        attributes: dict[str, Any] = {"http.request.method": "POST", "chat4all.webhook.event": event}
        with tracer.start_as_current_span(f"webhook {event}", kind=SpanKind.CLIENT, attributes=attributes) as span:
            try:
                answer = await self.inner.post(url, body, {**headers, **current_trace_headers()})
            except WebhookUnreachable as exc:
                span.set_status(Status(StatusCode.ERROR, exc.reason))
                raise
            span.set_attribute("http.response.status_code", answer.status)
            if not 200 <= answer.status < 300:
                span.set_status(Status(StatusCode.ERROR, f"answered {answer.status}"))
            return answer
