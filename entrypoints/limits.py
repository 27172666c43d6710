"""What a runtime holds calls to, built from its settings: the rate limits and platform paces
(``CHAT4ALL_RATE_LIMITS``, ``CHAT4ALL_CHANNEL_PACES``; in Redis when there is one, else in this process), and
where webhook calls may go (``CHAT4ALL_WEBHOOK_ALLOW_*``)."""

from __future__ import annotations

from prometheus_client import Counter
from redis.asyncio import Redis

from adapters.memory.limits import InMemoryRateLimiter
from adapters.redis import RedisRateLimiter
from adapters.webhooks import EgressPolicy
from application.limits import DEFAULT_PACES, DEFAULT_RATES, Bucket, ChannelPace, Pacer, RateLimits
from application.ports import Rate, RateLimiter
from domain.channels import Channel
from entrypoints.settings import RateSetting, Settings

RATE_LIMITED = Counter(
    "chat4all_rate_limited", "Calls refused by a rate limit (429, RESOURCE_EXHAUSTED), by limit.", ["limit"]
)


def limiter_for(redis: Redis | None) -> RateLimiter:
    return RedisRateLimiter(redis) if redis is not None else InMemoryRateLimiter()


def _rate(setting: RateSetting | None) -> Rate | None:
    return None if setting is None else Rate(per_second=setting.per_second, burst=setting.burst)


def _refused(bucket: Bucket) -> None:
    RATE_LIMITED.labels(bucket.value).inc()


def rate_limits_for(settings: Settings, redis: Redis | None) -> RateLimits | None:
    """The request limits: the defaults, overridden by the settings; None when rate limiting is off."""
    if not settings.rate_limiting:
        return None
    rates: dict[Bucket, Rate] = dict(DEFAULT_RATES)
    for name, setting in settings.rate_limits.items():
        rate = _rate(setting)
        if rate is None:
            rates.pop(Bucket(name), None)
        else:
            rates[Bucket(name)] = rate
    for bucket in Bucket:
        RATE_LIMITED.labels(bucket.value)
    return RateLimits(limiter_for(redis), rates=rates, refused=_refused)


def pacer_for(settings: Settings, channel: Channel, limiter: RateLimiter) -> Pacer | None:
    """The pace of ``channel``'s sends; None when pacing is off."""
    if not settings.pacing:
        return None
    pace = DEFAULT_PACES.get(channel, ChannelPace())
    override = settings.channel_paces.get(channel.value)
    if override is not None:
        pace = ChannelPace(overall=_rate(override.overall), per_recipient=_rate(override.per_recipient))
    return Pacer(limiter, channel, pace, max_wait=settings.pacing_max_wait_s)


def egress_policy(settings: Settings) -> EgressPolicy:
    """Where webhook calls may go: public addresses, plus loopback or private ones if the operator allows."""
    return EgressPolicy(allow_loopback=settings.webhook_allow_loopback, allow_private=settings.webhook_allow_private)
