"""Redis adapters: real-time fan-out across processes and presence."""

from adapters.redis.fanout import RedisFanout, user_channel
from adapters.redis.presence import RedisPresence

__all__ = ["RedisFanout", "RedisPresence", "user_channel"]
