"""Request metrics for the gRPC API: a count by method and final status, and a latency histogram by method.

``instrument(server)`` listens to two of grpclib's server events. ``RecvRequest`` starts the call's clock
(and wraps its handler, to see it cancelled); ``SendTrailingMetadata`` is the call's last word, whoever
sends it: a handler answering an error itself, or grpclib turning the handler's return or exception into
a status. Both run in the call's own task, so a context variable joins them. A call that ends without
trailers (the client went away, the server stopped), or whose handler was cancelled, counts as
CANCELLED; streams count once, when they end. Calls grpclib refuses before any handler (an unknown
method, a bad content type) are not counted. Like the HTTP metrics, each label set's children are
cached: a call costs two dictionary lookups and two updates.
"""

from __future__ import annotations

import asyncio
import time
from contextvars import ContextVar
from typing import Any

import grpclib.server
from grpclib.const import Status
from grpclib.events import RecvRequest, SendTrailingMetadata, listen
from prometheus_client import Counter, Histogram

REQUESTS = Counter(
    "chat4all_grpc_requests",
    "gRPC calls ended, by full method name and final status code name (a stream counts once, when it ends; "
    "a call the client abandoned counts as CANCELLED).",
    ["method", "code"],
)
LATENCY = Histogram(
    "chat4all_grpc_request_duration_seconds",
    "Time from receiving a gRPC call to its trailers (a stream: its whole life), by full method name.",
    ["method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)

_counters: dict[tuple[str, Status], Any] = {}
_histograms: dict[str, Any] = {}


class _Call:
    __slots__ = ("cancelled", "done", "method", "started")

    def __init__(self, method: str) -> None:
        self.method = method
        self.started = time.perf_counter()
        self.cancelled = False
        self.done = False


_current: ContextVar[_Call | None] = ContextVar("chat4all_grpc_call", default=None)


def _finish(call: _Call, status: Status) -> None:
    if call.done:
        return
    call.done = True
    if call.cancelled and status is Status.UNKNOWN:
        status = Status.CANCELLED  # grpclib answers a reset stream's cancelled handler with UNKNOWN
    counter = _counters.get((call.method, status))
    if counter is None:
        counter = _counters[(call.method, status)] = REQUESTS.labels(call.method, status.name)
    histogram = _histograms.get(call.method)
    if histogram is None:
        histogram = _histograms[call.method] = LATENCY.labels(call.method)
    counter.inc()
    histogram.observe(time.perf_counter() - call.started)


async def _received(event: RecvRequest) -> None:
    call = _Call(event.method_name)
    _current.set(call)  # in the call's task: the trailers, sent later in it, find it there
    task = asyncio.current_task()
    if task is not None:
        task.add_done_callback(lambda _: _finish(call, Status.CANCELLED))  # no trailers were sent
    handler = event.method_func

    async def timed(stream: grpclib.server.Stream[Any, Any]) -> None:
        try:
            await handler(stream)
        except asyncio.CancelledError:
            call.cancelled = True
            raise

    event.method_func = timed


async def _trailers(event: SendTrailingMetadata) -> None:
    call = _current.get()
    if call is not None:
        _finish(call, event.status)


def instrument(server: grpclib.server.Server) -> None:
    """Count and time every call ``server`` answers (call before it serves)."""
    listen(server, RecvRequest, _received)
    listen(server, SendTrailingMetadata, _trailers)
