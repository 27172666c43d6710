"""Run the gRPC API: ``python -m entrypoints.grpc`` (CHAT4ALL_HOST:CHAT4ALL_GRPC_PORT, 50051 by default).

SIGTERM or SIGINT stops it gracefully: health turns NOT_SERVING, the calls in flight get up to
``DRAIN_S`` seconds to finish, then the server closes and the pool and store are released.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from entrypoints.grpc.server import serve
from entrypoints.loop import run
from entrypoints.settings import Settings


async def _main(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve(settings, stop=stop)


def main() -> None:
    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"
    )
    run(_main(settings))


if __name__ == "__main__":
    main()
