"""Token buckets in Redis, shared by every process: GCRA, one key per bucket holding the theoretical arrival
time of its next call, read and moved in one Lua script on the server's clock (processes' clocks may differ).

Each bucket is one key, so the script is safe on Redis Cluster too.
"""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis
from redis.exceptions import RedisError

from application.errors import Unavailable
from application.ports import Ask, RateLimiter, Verdict

_PREFIX = "c4a:rate:"

# KEYS: the bucket. ARGV: interval ms, tolerance ms ((burst - 1) * interval), longest wait ms.
# Returns {granted 0|1, wait ms as a string} (Redis would truncate a Lua number to an integer).
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local interval, tolerance, max_wait = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local wait = tat - tolerance - now
if wait < 0 then wait = 0 end
if wait > max_wait then return {0, tostring(wait)} end
local next = tat + interval
redis.call('SET', KEYS[1], tostring(next), 'PX', math.ceil(next - now) + 1000)
return {1, tostring(wait)}
"""


class RedisRateLimiter(RateLimiter):
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._acquire = redis.register_script(_ACQUIRE)

    async def acquire(self, asks: Sequence[Ask]) -> list[Verdict]:
        if not asks:
            return []
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for ask in asks:
                    interval = 1000.0 / ask.rate.per_second
                    args = (interval, (ask.rate.burst - 1) * interval, ask.max_wait * 1000.0)
                    await self._acquire(keys=[_PREFIX + ask.key], args=args, client=pipe)
                answers = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise Unavailable(f"rate limiter: {exc}") from exc
        return [Verdict(granted=int(granted) == 1, wait=float(wait) / 1000.0) for granted, wait in answers]
