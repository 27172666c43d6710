"""Real-time frames over Redis pub/sub: one channel per user, which every process holding a socket of theirs
subscribes to (Litestar's channels plugin does, with its Redis backend, on the same channel names)."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError

from application.errors import Unavailable
from application.ports import Fanout, Frame
from domain.ids import UserId

_encode = msgspec.json.Encoder().encode


def user_channel(user_id: UserId) -> str:
    """The pub/sub channel of a user's live connections."""
    return f"c4a:user:{user_id}"


class RedisFanout(Fanout):
    """Publishes each frame once per user, a whole batch in one round trip."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def push(self, frames: Sequence[tuple[Frame, Sequence[UserId]]]) -> None:
        if not frames:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for frame, users in frames:
                    data = _encode(frame)
                    for user_id in users:
                        pipe.publish(user_channel(user_id), data)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise Unavailable(f"redis: {exc}") from exc
