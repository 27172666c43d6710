"""entrypoints/logs.py: every stdlib record becomes one structured line, secrets and bodies stay out of it."""

from __future__ import annotations

import io
import json
import logging
import os
import re
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from entrypoints.logs import REDACTED, StructuredHandler, configure_logging

pytestmark = pytest.mark.unit

log = logging.getLogger("chat4all.test_logs")


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    noisy = {name: logging.getLogger(name).level for name in ("aiokafka", "kafka", "uvicorn.access")}
    yield
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)
    for name, noisy_level in noisy.items():
        logging.getLogger(name).setLevel(noisy_level)
    structlog.contextvars.clear_contextvars()
    structlog.reset_defaults()


def configured(level: str = "info", fmt: str = "json", **kw: Any) -> io.StringIO:
    stream = io.StringIO()
    configure_logging(level, fmt, stream=stream, **kw)
    return stream


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def one_line(stream: io.StringIO) -> dict[str, Any]:
    [line] = lines(stream)
    return line


def test_a_formatted_stdlib_warning_is_one_json_line() -> None:
    stream = configured(runtime="relay")

    log.warning("broker %s away for %ds", "kafka:9092", 3)

    assert stream.getvalue().count("\n") == 1
    line = one_line(stream)
    assert line["event"] == "broker kafka:9092 away for 3s"
    assert line["level"] == "warning"
    assert line["logger"] == "chat4all.test_logs"
    assert line["process"] == os.getpid()
    assert line["runtime"] == "relay"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", line["timestamp"])
    assert list(line) == ["timestamp", "level", "runtime", "process", "logger", "event"]


def test_no_runtime_no_runtime_key() -> None:
    stream = configured()

    log.info("hello")

    assert "runtime" not in one_line(stream)


def test_records_below_the_level_are_not_written() -> None:
    stream = configured("warning")

    log.info("quiet")
    log.error("loud")

    assert [line["event"] for line in lines(stream)] == ["loud"]


def test_extra_fields_and_bound_contextvars_are_top_level_keys() -> None:
    stream = configured()

    with structlog.contextvars.bound_contextvars(conversation_id="c-1", channel="telegram", request_id="r-9"):
        log.info("accepted", extra={"message_id": "m-42", "attempt": 2})
    log.info("after")

    first, after = lines(stream)
    assert first["event"] == "accepted"
    assert (first["message_id"], first["attempt"]) == ("m-42", 2)
    assert (first["conversation_id"], first["channel"], first["request_id"]) == ("c-1", "telegram", "r-9")
    assert "conversation_id" not in after


def test_secrets_are_redacted_nested_too() -> None:
    stream = configured()

    log.info(
        "calling the platform",
        extra={
            "password": "hunter2",
            "Authorization": "Bearer abc.def",
            "jwt_secret": "s3cr3t",
            "request": {
                "headers": {"X-Hub-Signature-256": "sha256=ff", "Cookie": "sid=1", "accept": "json"},
                "params": [{"access_token": "EAAB"}, {"api_key": "k"}],
                "client_secret": "cs",
            },
        },
    )

    raw = stream.getvalue()
    for secret in ("hunter2", "abc.def", "s3cr3t", "sha256=ff", "sid=1", "EAAB", '"k"', '"cs"'):
        assert secret not in raw
    line = one_line(stream)
    assert line["password"] == line["Authorization"] == line["jwt_secret"] == REDACTED
    request = line["request"]
    assert request["headers"] == {"X-Hub-Signature-256": REDACTED, "Cookie": REDACTED, "accept": "json"}
    assert request["params"] == [{"access_token": REDACTED}, {"api_key": REDACTED}]
    assert request["client_secret"] == REDACTED


def test_bound_secrets_are_redacted() -> None:
    stream = configured()

    with structlog.contextvars.bound_contextvars(refresh_token="rt-1"):
        log.info("refreshing")

    assert one_line(stream)["refresh_token"] == REDACTED


def test_bodies_are_dropped_at_info_and_kept_at_debug() -> None:
    stream = configured("debug")
    body = {"text": "hello there", "body": "raw", "payload": {"type": "text"}, "nested": {"text": "deep"}}

    log.info("inbound", extra=body)
    log.debug("inbound", extra=body)

    at_info, at_debug = lines(stream)
    assert at_info["level"] == "info"
    assert not {"text", "body", "payload"} & set(at_info)
    assert at_info["nested"] == {}
    assert "hello there" not in stream.getvalue().splitlines()[0]
    assert at_debug["level"] == "debug"
    assert (at_debug["text"], at_debug["body"], at_debug["payload"]) == ("hello there", "raw", {"type": "text"})
    assert at_debug["nested"] == {"text": "deep"}


def test_an_exception_is_rendered_in_the_line() -> None:
    stream = configured()

    try:
        raise ValueError("bad frame")
    except ValueError:
        log.exception("handler failed for %s", "m-1")

    line = one_line(stream)
    assert line["event"] == "handler failed for m-1"
    assert line["level"] == "error"
    assert "Traceback (most recent call last)" in line["exception"]
    assert "ValueError: bad frame" in line["exception"]


def test_trace_and_span_ids_inside_a_span_only() -> None:
    stream = configured()
    tracer = TracerProvider().get_tracer("test_logs")  # a local provider: the global one stays untouched

    with tracer.start_as_current_span("deliver") as span:
        log.info("inside")
    log.info("outside")

    inside, outside = lines(stream)
    context = span.get_span_context()
    assert inside["trace_id"] == f"{context.trace_id:032x}"
    assert inside["span_id"] == f"{context.span_id:016x}"
    assert re.fullmatch(r"[0-9a-f]{32}", inside["trace_id"])
    assert re.fullmatch(r"[0-9a-f]{16}", inside["span_id"])
    assert "trace_id" not in outside
    assert "span_id" not in outside


def test_a_non_recording_span_with_a_valid_context_counts() -> None:
    stream = configured()
    context = trace.SpanContext(trace_id=0xABC, span_id=0xDEF, is_remote=True)

    with trace.use_span(trace.NonRecordingSpan(context)):
        log.info("propagated")

    line = one_line(stream)
    assert (line["trace_id"], line["span_id"]) == (f"{0xABC:032x}", f"{0xDEF:016x}")


def test_structlog_loggers_render_the_same_way() -> None:
    stream = configured(runtime="grpc")

    structlog.get_logger("chat4all.grpc").info("call %s", "Send", message_id="m-7", token="t")

    line = one_line(stream)
    assert (line["event"], line["logger"], line["runtime"]) == ("call Send", "chat4all.grpc", "grpc")
    assert (line["message_id"], line["token"]) == ("m-7", REDACTED)


def test_the_console_format_is_not_json() -> None:
    stream = configured(fmt="console", runtime="router")

    log.warning("rebalancing %d partitions", 4, extra={"group": "chat4all-router"})

    text = stream.getvalue()
    assert "rebalancing 4 partitions" in text
    assert "group=chat4all-router" in text
    assert "runtime=router" in text
    assert "\x1b[" not in text  # not a TTY: no colours
    with pytest.raises(json.JSONDecodeError):
        json.loads(text.splitlines()[0])


def test_configuring_twice_leaves_one_handler() -> None:
    root = logging.getLogger()
    configured()
    second = configured("debug", "console")

    ours = [h for h in root.handlers if isinstance(h, StructuredHandler)]
    assert len(ours) == 1
    assert root.level == logging.DEBUG
    log.info("once")
    assert second.getvalue().count("once") == 1


def test_console_handlers_installed_before_are_replaced_others_kept(caplog: pytest.LogCaptureFixture) -> None:
    root = logging.getLogger()
    basic = logging.StreamHandler()  # what logging.basicConfig() installs: a handler on sys.stderr
    root.addHandler(basic)

    stream = configured()
    log.warning("seen by both")

    assert basic not in root.handlers
    assert caplog.handler in root.handlers  # pytest's capture stays
    assert [r.getMessage() for r in caplog.records] == ["seen by both"]
    assert one_line(stream)["event"] == "seen by both"


def test_noisy_loggers_are_quieted_at_info() -> None:
    configured("info")
    assert logging.getLogger("aiokafka").level == logging.WARNING
    assert logging.getLogger("kafka").level == logging.WARNING
    assert logging.getLogger("uvicorn.access").level == logging.WARNING

    configured("debug")
    assert logging.getLogger("aiokafka").level == logging.NOTSET


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="log format"):
        configure_logging("info", "xml")
