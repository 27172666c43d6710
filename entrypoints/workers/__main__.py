"""``python -m entrypoints.workers <kind>``: one pipeline worker process (relay, router, channels, status, sweeper).

With ``CHAT4ALL_METRICS_PORT`` it serves ``/metrics`` and ``/health/live`` there (entrypoints/probe.py); live
while every loop of the worker comes round within ``CHAT4ALL_WORKER_STALL_S`` (``Worker.beat``).
"""

from __future__ import annotations

import argparse
import gc

from entrypoints.loop import run
from entrypoints.probe import probe_for
from entrypoints.settings import Settings
from entrypoints.tracing import configure_tracing
from entrypoints.workers.kinds import KINDS
from entrypoints.workers.runner import configure_logging, worker_resources


async def _main(kind: str, settings: Settings) -> None:
    # The metrics port first: it answers (live) while the worker waits for the database and the broker.
    async with probe_for(settings) as probe, worker_resources(settings) as worker:
        if probe is not None:
            probe.stalled = worker.stalled
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
