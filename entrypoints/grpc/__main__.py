"""Run the gRPC API: ``python -m entrypoints.grpc`` (CHAT4ALL_HOST:CHAT4ALL_GRPC_PORT, 50051 by default).

SIGTERM or SIGINT stops it gracefully: health turns NOT_SERVING, the calls in flight get up to
``DRAIN_S`` seconds to finish, then the server closes and the pool and store are released.

With ``CHAT4ALL_METRICS_PORT`` it serves ``/metrics`` and ``/health/live`` there too (entrypoints/probe.py).
"""

from __future__ import annotations

import asyncio
import signal

from entrypoints.grpc.server import serve
from entrypoints.logs import configure_logging
from entrypoints.loop import run
from entrypoints.probe import probe_for
from entrypoints.settings import Settings
from entrypoints.tracing import configure_tracing


async def _main(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # /health/live there says the event loop answers; grpc.health.v1 says whether to send calls here.
    async with probe_for(settings):
        await serve(settings, stop=stop)


def main() -> None:
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format, runtime="grpc")
    configure_tracing("grpc")
    run(_main(settings))


if __name__ == "__main__":
    main()
