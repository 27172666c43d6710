"""The W3C trace context in and out of carriers: outbox rows, Kafka record headers, outgoing HTTP calls.

Through OpenTelemetry's API and its global propagator (``traceparent``, ``tracestate``, ``baggage``). Without a
tracer provider (no OTEL_EXPORTER_OTLP_ENDPOINT) no span is ever current, and each call costs one lookup.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from opentelemetry import propagate, trace
from opentelemetry.context import Context


def current_trace_headers() -> dict[str, str]:
    """The current span's context as headers; empty outside a span."""
    if not trace.get_current_span().get_span_context().is_valid:
        return {}
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def context_of(headers: Mapping[str, str]) -> Context | None:
    """The trace context ``headers`` carry, or None when they carry none."""
    if "traceparent" not in headers:
        return None
    return propagate.extract(headers)


def kafka_headers(headers: Mapping[str, str]) -> list[tuple[str, bytes]]:
    return [(k, v.encode()) for k, v in headers.items()]


def from_kafka_headers(headers: Iterable[tuple[str, bytes]] | None) -> dict[str, str]:
    found: dict[str, str] = {}
    for key, value in headers or ():
        try:
            found[key] = value.decode()
        except (UnicodeDecodeError, AttributeError):
            continue
    return found
