"""``python -m entrypoints.workers <kind>``: one pipeline worker process (relay, router, channels, status, sweeper)."""

from __future__ import annotations

import argparse
import gc

from entrypoints.loop import run
from entrypoints.settings import Settings
from entrypoints.tracing import configure_tracing
from entrypoints.workers.kinds import KINDS
from entrypoints.workers.runner import configure_logging, worker_resources


async def _main(kind: str, settings: Settings) -> None:
    async with worker_resources(settings) as worker:
        # What start-up built lives as long as the process: keep it out of the collector's way.
        gc.collect()
        gc.freeze()
        await KINDS[kind](worker)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m entrypoints.workers")
    parser.add_argument("kind", choices=sorted(KINDS))
    args = parser.parse_args()
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format, kind=args.kind)
    configure_tracing(args.kind)
    run(_main(args.kind, settings))


if __name__ == "__main__":
    main()
