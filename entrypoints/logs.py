"""Structured logs for every runtime: one stderr handler, one line per event, JSON (default) or console text.

:func:`configure_logging` routes all stdlib logging (ours, aiokafka, uvicorn, Litestar, grpclib, psycopg) through
structlog's ``ProcessorFormatter`` on one handler, and makes ``structlog.get_logger()`` render the same way.
The core (``domain``, ``application``) keeps logging through the stdlib only.

``CHAT4ALL_LOG_FORMAT=json`` (the default) writes one JSON object per line::

    {"timestamp": "2026-01-05T09:30:12.048213Z", "level": "warning", "runtime": "router", "process": 4242,
     "logger": "adapters.kafka.consumer", "event": "group chat4all-router: partitions revoked: ...", ...}

(one line in fact); ``console`` renders the same fields with structlog's ``ConsoleRenderer``, in colour only
when stderr is a terminal and NO_COLOR is unset.

Every line carries:

- ``timestamp`` (ISO 8601, UTC), ``level``, ``logger``, ``event`` (a stdlib ``%``-message, already formatted),
  ``process`` (the pid) and ``runtime`` (``http``, ``grpc``, ``relay``, ...) when the process has one;
- what the caller bound with ``structlog.contextvars.bind_contextvars`` (``message_id``, ``conversation_id``,
  ``channel``, ``request_id``, ...) and a stdlib call's ``extra={...}``, as top-level keys;
- ``trace_id`` and ``span_id`` (32 and 16 lowercase hex digits) when an OpenTelemetry span with a valid context
  is current;
- ``exception``: the formatted traceback, when the call had one (``log.exception(...)``, ``exc_info=True``).

Redaction, applied to every line before it is rendered:

- the value of any key whose name contains ``password``, ``passwd``, ``secret``, ``token``, ``authorization``,
  ``signature``, ``cookie``, ``api_key`` or ``apikey`` (case-insensitive, ``-`` read as ``_``: ``access_token``,
  ``refresh_token``, ``client_secret``, ``X-Hub-Signature-256``, ``Set-Cookie`` ...) becomes ``"[redacted]"``,
  in nested mappings and sequences too;
- message bodies, the keys ``text``, ``body`` and ``payload`` (at any depth), are dropped from every line
  whose level is not DEBUG: a body shows only in a DEBUG line (so only with CHAT4ALL_LOG_LEVEL=debug),
  never at INFO or above.

Redaction works on keys: a secret formatted into the message itself (``log.info("token %s", t)``) is not found.

The handler replaces console handlers installed before it (``logging.basicConfig``, uvicorn's default config,
Litestar's queue handler), so configuring again, or after a framework configured itself, never doubles a line;
other handlers (files, pytest's capture) stay.
"""

from __future__ import annotations

import datetime as dt
import logging
import logging.handlers
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

import structlog
from opentelemetry import trace
from structlog.typing import EventDict, Processor, WrappedLogger

FORMATS = ("json", "console")
REDACTED = "[redacted]"

# Substrings of the normalized key (lowercase, `-` as `_`) whose values never reach a log line.
SECRET_KEY_PARTS = (
    "password",
    "passwd",
    "secret",
    "token",
    "authorization",
    "signature",
    "cookie",
    "api_key",
    "apikey",
)
# Message bodies: dropped unless the line is DEBUG.
BODY_KEYS = frozenset({"text", "body", "payload"})
# Loggers that chatter at INFO: at WARNING unless we log at DEBUG.
NOISY_LOGGERS = ("aiokafka", "kafka", "uvicorn.access")
# Frameworks whose own config may have given their logger a console handler and cut it from the root.
FRAMEWORK_LOGGERS = ("litestar", "uvicorn", "uvicorn.error", "uvicorn.asgi", "grpclib", "aiokafka", "psycopg")
# The keys a JSON line starts with, in this order.
LEADING_KEYS = ("timestamp", "level", "runtime", "process", "logger", "event")
# Record attributes that are no extra: uvicorn's message with ANSI colours, and what another handler's
# formatter stored on the record before ours saw it (`extra` may not set these).
NOISE_KEYS = ("color_message", "message", "asctime")

_MAX_DEPTH = 10


class StructuredHandler(logging.Handler):
    """Ours: writes each formatted record as one line to ``stream``, or to whatever ``sys.stderr`` is then."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__()
        self._stream = stream

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stderr

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            stream = self.stream
            stream.write(line + "\n")
            stream.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)


def _secret_key(key: object) -> bool:
    if not isinstance(key, str):
        return False
    name = key.lower().replace("-", "_")
    return any(part in name for part in SECRET_KEY_PARTS)


def _scrub(value: Any, keep_bodies: bool, depth: int = 0) -> Any:
    """``value`` with secret values masked and (unless ``keep_bodies``) bodies dropped; never mutates ``value``."""
    if depth > _MAX_DEPTH:
        return value
    if isinstance(value, Mapping):
        scrubbed: dict[Any, Any] = {}
        for key, item in value.items():
            if not keep_bodies and isinstance(key, str) and key.lower() in BODY_KEYS:
                continue
            scrubbed[key] = REDACTED if _secret_key(key) else _scrub(item, keep_bodies, depth + 1)
        return scrubbed
    if isinstance(value, list | tuple):
        return [_scrub(item, keep_bodies, depth + 1) for item in value]
    return value


def redact(_logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Mask secret values and, below DEBUG, drop message bodies (see the module docstring)."""
    keep_bodies = event_dict.get("level", method_name) == "debug"
    for key in list(event_dict):
        if key.startswith("_") or key == "event":  # structlog's own (_record, _from_structlog) and the message
            continue
        if not keep_bodies and key.lower() in BODY_KEYS:
            del event_dict[key]
        elif _secret_key(key):
            event_dict[key] = REDACTED
        elif isinstance(event_dict[key], Mapping | list | tuple):
            event_dict[key] = _scrub(event_dict[key], keep_bodies)
    return event_dict


def add_trace_context(_logger: WrappedLogger, _method_name: str, event_dict: EventDict) -> EventDict:
    """``trace_id`` and ``span_id`` of the current OpenTelemetry span, when its context is valid."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict.setdefault("trace_id", trace.format_trace_id(context.trace_id))
        event_dict.setdefault("span_id", trace.format_span_id(context.span_id))
    return event_dict


def _add_process(runtime: str | None) -> Processor:
    def add_process(_logger: WrappedLogger, _method_name: str, event_dict: EventDict) -> EventDict:
        event_dict["process"] = os.getpid()
        if runtime is not None:
            event_dict.setdefault("runtime", runtime)
        return event_dict

    return add_process


def _drop_noise(_logger: WrappedLogger, _method_name: str, event_dict: EventDict) -> EventDict:
    for key in NOISE_KEYS:
        event_dict.pop(key, None)
    return event_dict


def _leading_keys_first(_logger: WrappedLogger, _method_name: str, event_dict: EventDict) -> EventDict:
    return {**{key: event_dict[key] for key in LEADING_KEYS if key in event_dict}, **event_dict}


def _json_default(value: object) -> object:
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    return str(value)


def _level_number(level: str) -> int:
    number = logging.getLevelName(level.upper())
    return number if isinstance(number, int) else logging.INFO


def _replaceable(handler: logging.Handler) -> bool:
    """Is ``handler`` a console handler that ours replaces (ours, basicConfig's, uvicorn's, Litestar's queue)?"""
    if isinstance(handler, StructuredHandler | logging.handlers.QueueHandler):
        return True
    consoles = (sys.stderr, sys.stdout, sys.__stderr__, sys.__stdout__)
    return type(handler) is logging.StreamHandler and any(handler.stream is console for console in consoles)


def _shared_processors(runtime: str | None) -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_process(runtime),
        add_trace_context,
        structlog.processors.StackInfoRenderer(),
        _drop_noise,
        redact,
    ]


def _renderers(fmt: str, stream: TextIO) -> Sequence[Processor]:
    if fmt == "json":
        return [
            structlog.processors.format_exc_info,
            _leading_keys_first,
            structlog.processors.JSONRenderer(ensure_ascii=False, default=_json_default),
        ]
    isatty = getattr(stream, "isatty", None)
    colors = bool(isatty is not None and isatty()) and "NO_COLOR" not in os.environ
    # plain tracebacks: rich's would print the frames' locals, secrets included
    return [structlog.dev.ConsoleRenderer(colors=colors, exception_formatter=structlog.dev.plain_traceback)]


def configure_logging(
    level: str, fmt: str = "json", *, runtime: str | None = None, stream: TextIO | None = None
) -> None:
    """Send every log record of this process, at ``level`` and above, to one handler on ``stream`` (default: the
    current ``sys.stderr``) rendered as ``fmt`` (``json`` or ``console``); ``runtime`` names the process in each
    line. Idempotent: configuring again replaces the previous configuration.
    """
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {FORMATS}, not {fmt!r}")
    number = _level_number(level)
    shared = _shared_processors(runtime)

    handler = StructuredHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *_renderers(fmt, handler.stream)],
        )
    )

    root = logging.getLogger()
    for old in [h for h in root.handlers if _replaceable(h)]:
        root.removeHandler(old)
        if isinstance(old, StructuredHandler):
            old.close()  # not the others: closing Litestar's queue handler may stop a listener it stops at exit
    root.addHandler(handler)
    root.setLevel(number)

    for name in FRAMEWORK_LOGGERS:
        logger = logging.getLogger(name)
        stripped = [h for h in logger.handlers if _replaceable(h)]
        for old in stripped:
            logger.removeHandler(old)
        if stripped:
            logger.propagate = True
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if number <= logging.DEBUG else max(number, logging.WARNING))

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.stdlib.PositionalArgumentsFormatter(),
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


__all__ = ["REDACTED", "StructuredHandler", "add_trace_context", "configure_logging", "redact"]
