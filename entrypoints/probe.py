"""A process's own metrics and liveness on a port of its own (``CHAT4ALL_METRICS_PORT``): the gRPC API and the
workers, which serve no HTTP otherwise.

``GET /metrics`` is prometheus-client's exposition of this process's registry, or, when
``PROMETHEUS_MULTIPROC_DIR`` is set, of the multiprocess directory (as the HTTP API's ``/metrics``).
``GET /health/live`` answers in the process's own event loop: no answer means a blocked loop; 503 means the
process says it is stuck (``stalled`` names what); 200 otherwise.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess

if TYPE_CHECKING:
    from aiohttp import web

    from entrypoints.settings import Settings

Stalled = Callable[[], Sequence[str]]
"""What of the process has stopped making progress (nothing: it is live)."""


def _nothing_stalled() -> Sequence[str]:
    return ()


def _registry() -> CollectorRegistry:
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path:
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    return registry


class Probe:
    """``GET /metrics`` and ``GET /health/live`` on ``host:port`` (port 0: any free one, see ``port``)."""

    def __init__(self, host: str, port: int, *, stalled: Stalled = _nothing_stalled) -> None:
        from aiohttp import web  # here: a process without a metrics port does not pay for importing it

        self.host = host
        self.requested_port = port
        self.stalled = stalled
        self._registry = _registry()
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/health/live", self._live)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        self.port: int | None = None

    async def _metrics(self, _: web.Request) -> web.Response:
        from aiohttp import web

        body = generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _live(self, _: web.Request) -> web.Response:
        from aiohttp import web

        stuck = list(self.stalled())
        if stuck:
            return web.json_response({"status": "stalled", "stalled": stuck}, status=503)
        return web.json_response({"status": "ok"})

    async def start(self) -> None:
        from aiohttp import web

        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.requested_port, reuse_address=True)
        await site.start()
        address = self._runner.addresses[0]
        self.port = int(address[1])

    async def stop(self) -> None:
        await self._runner.cleanup()


def probe_for(
    settings: Settings, *, stalled: Stalled = _nothing_stalled
) -> contextlib.AbstractAsyncContextManager[Probe | None]:
    """``serving`` on CHAT4ALL_METRICS_HOST (else CHAT4ALL_HOST) and CHAT4ALL_METRICS_PORT (unset: none)."""
    return serving(settings.metrics_host or settings.host, settings.metrics_port, stalled=stalled)


@contextlib.asynccontextmanager
async def serving(host: str, port: int | None, *, stalled: Stalled = _nothing_stalled) -> AsyncIterator[Probe | None]:
    """A running ``Probe`` for the block (``None`` when ``port`` is: the process serves no metrics port)."""
    if port is None:
        yield None
        return
    probe = Probe(host, port, stalled=stalled)
    await probe.start()
    try:
        yield probe
    finally:
        await probe.stop()
