"""Presence in Redis: each user's live clients in a hash with their expiry, and one sorted set of when each
online user lapses unless a client is seen again. Every change is one Lua script, so concurrent API
processes agree on transitions (and a lapse is reported once)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from redis.asyncio import Redis
from redis.exceptions import RedisError

from application.errors import Unavailable
from application.ports import PresenceChange, PresenceStore
from domain.ids import UserId
from domain.presence import PresenceStatus

_PREFIX = "c4a:presence:"
_EXPIRY = "c4a:presence:expiry"
_LAST = "c4a:presence:last:"
_RANKS = (PresenceStatus.OFFLINE, PresenceStatus.AWAY, PresenceStatus.ONLINE)

# effective(hash, now) -> strongest live status (0 offline, 1 away, 2 online), latest expiry; drops lapsed clients.
_EFFECTIVE = """
local function effective(hash, now)
  local best, latest = 0, 0
  local all = redis.call('HGETALL', hash)
  for i = 1, #all, 2 do
    local value = all[i + 1]
    local sep = string.find(value, '|', 1, true)
    local status, expires = tonumber(string.sub(value, 1, sep - 1)), tonumber(string.sub(value, sep + 1))
    if expires > now then
      if status > best then best = status end
      if expires > latest then latest = expires end
    else
      redis.call('HDEL', hash, all[i])
    end
  end
  return best, latest
end
"""

# KEYS: hash, expiry set, last seen. ARGV: user, source, status, now ms, expires ms, key ttl ms.
_SEEN = (
    _EFFECTIVE
    + """
local now = tonumber(ARGV[4])
local before = effective(KEYS[1], now)
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3] .. '|' .. ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
local after, latest = effective(KEYS[1], now)
redis.call('ZADD', KEYS[2], latest, ARGV[1])
redis.call('SET', KEYS[3], ARGV[4])
return {before, after}
"""
)

# KEYS: hash, expiry set, last seen. ARGV: user, source, now ms.
_GONE = (
    _EFFECTIVE
    + """
local now = tonumber(ARGV[3])
local before = effective(KEYS[1], now)
redis.call('HDEL', KEYS[1], ARGV[2])
local after, latest = effective(KEYS[1], now)
if after == 0 then redis.call('ZREM', KEYS[2], ARGV[1]) else redis.call('ZADD', KEYS[2], latest, ARGV[1]) end
if before > 0 then redis.call('SET', KEYS[3], ARGV[3]) end
return {before, after}
"""
)

# KEYS: hash, last seen. ARGV: now ms.
_STATE = (
    _EFFECTIVE
    + """
local status = effective(KEYS[1], tonumber(ARGV[1]))
return {status, redis.call('GET', KEYS[2]) or ''}
"""
)

# KEYS: expiry set. ARGV: now ms, limit, hash prefix, last seen prefix. Users' keys are derived here, so
# this runs on a single Redis (not a cluster).
_LAPSED = (
    _EFFECTIVE
    + """
local now = tonumber(ARGV[1])
local out = {}
for _, user in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))) do
  local status, latest = effective(ARGV[3] .. user, now)
  if status == 0 then
    redis.call('ZREM', KEYS[1], user)
    table.insert(out, user)
    table.insert(out, redis.call('GET', ARGV[4] .. user) or '')
  else
    redis.call('ZADD', KEYS[1], latest, user)
  end
end
return out
"""
)


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def _at(raw: bytes | str) -> datetime | None:
    text = raw.decode() if isinstance(raw, bytes) else raw
    return datetime.fromtimestamp(int(text) / 1000, UTC) if text else None


def _change(answer: Sequence[Any]) -> PresenceChange:
    return PresenceChange(before=_RANKS[int(answer[0])], after=_RANKS[int(answer[1])])


class RedisPresence(PresenceStore):
    def __init__(self, redis: Redis) -> None:
        self._seen = redis.register_script(_SEEN)
        self._gone = redis.register_script(_GONE)
        self._state = redis.register_script(_STATE)
        self._lapsed = redis.register_script(_LAPSED)

    async def seen(
        self, user_id: UserId, source: str, status: PresenceStatus, *, at: datetime, ttl: timedelta
    ) -> PresenceChange:
        expires = _ms(at + ttl)
        keep = int(ttl.total_seconds() * 2000)
        keys = [f"{_PREFIX}{user_id}", _EXPIRY, f"{_LAST}{user_id}"]
        args = [str(user_id), source, _RANKS.index(status), _ms(at), expires, keep]
        return _change(await self._call(self._seen, keys, args))

    async def gone(self, user_id: UserId, source: str, *, at: datetime) -> PresenceChange:
        keys = [f"{_PREFIX}{user_id}", _EXPIRY, f"{_LAST}{user_id}"]
        return _change(await self._call(self._gone, keys, [str(user_id), source, _ms(at)]))

    async def state(self, user_id: UserId, *, at: datetime) -> tuple[PresenceStatus, datetime | None]:
        status, last = await self._call(self._state, [f"{_PREFIX}{user_id}", f"{_LAST}{user_id}"], [_ms(at)])
        return _RANKS[int(status)], _at(last)

    async def lapsed(self, *, at: datetime, limit: int) -> Sequence[tuple[UserId, datetime | None]]:
        flat = await self._call(self._lapsed, [_EXPIRY], [_ms(at), limit, _PREFIX, _LAST])
        pairs = zip(flat[::2], flat[1::2], strict=True)
        return [(UserId(UUID(user.decode() if isinstance(user, bytes) else user)), _at(last)) for user, last in pairs]

    @staticmethod
    async def _call(script: Any, keys: list[str], args: list[Any]) -> list[Any]:
        try:
            answer = await script(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            raise Unavailable(f"redis: {exc}") from exc
        return list(answer)
