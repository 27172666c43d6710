"""``python -m entrypoints.workers <kind>``: one pipeline worker process (relay, router, channels, status, sweeper)."""

from __future__ import annotations

import argparse
import asyncio
import gc
from collections.abc import Coroutine
from typing import Any

from entrypoints.settings import Settings
from entrypoints.workers.kinds import KINDS
from entrypoints.workers.runner import configure_logging, worker_resources


async def _main(kind: str, settings: Settings) -> None:
    async with worker_resources(settings) as worker:
        # What start-up built lives as long as the process: keep it out of the collector's way.
        gc.collect()
        gc.freeze()
        await KINDS[kind](worker)


def _run(main: Coroutine[Any, Any, None]) -> None:
    """On uvloop where it exists (as the HTTP runtime, through uvicorn): the workers are I/O loops."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - PyPy and Windows have no uvloop; the standard loop works
        asyncio.run(main)
    else:
        uvloop.run(main)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m entrypoints.workers")
    parser.add_argument("kind", choices=sorted(KINDS))
    args = parser.parse_args()
    settings = Settings()
    configure_logging(settings.log_level)
    _run(_main(args.kind, settings))


if __name__ == "__main__":
    main()
