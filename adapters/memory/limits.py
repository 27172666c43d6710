"""Token buckets in one process's memory: the same rules as the Redis limiter, for tests and a lone process."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from application.ports import Ask, RateLimiter, Verdict


class InMemoryRateLimiter(RateLimiter):
    """GCRA: each bucket keeps the theoretical arrival time of its next call (``tat``), nothing else."""

    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        self._now = now
        self._tat: dict[str, float] = {}

    async def acquire(self, asks: Sequence[Ask]) -> list[Verdict]:
        return [self._one(ask) for ask in asks]

    def _one(self, ask: Ask) -> Verdict:
        now = self._now()
        interval = 1.0 / ask.rate.per_second
        tat = max(self._tat.get(ask.key, now), now)
        wait = max(0.0, tat - (ask.rate.burst - 1) * interval - now)
        if wait > ask.max_wait:
            return Verdict(granted=False, wait=wait)
        self._tat[ask.key] = tat + interval
        return Verdict(granted=True, wait=wait)
