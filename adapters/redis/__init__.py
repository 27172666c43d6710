"""Redis adapters: real-time fan-out across processes, presence and rate limits."""

from adapters.redis.fanout import RedisFanout, user_channel
from adapters.redis.limits import RedisRateLimiter
from adapters.redis.presence import RedisPresence

__all__ = ["RedisFanout", "RedisPresence", "RedisRateLimiter", "user_channel"]
