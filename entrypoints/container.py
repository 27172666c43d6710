"""The composition root: one dependency-injector container wires every runtime."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from functools import partial
from typing import Any

import argon2
from dependency_injector import containers, providers
from psycopg_pool import AsyncConnectionPool

from adapters.postgres.pool import open_pool
from adapters.postgres.unit_of_work import PostgresUnitOfWork
from adapters.security import Argon2PasswordHasher, JwtTokenIssuer, TokenSettings
from adapters.system import SystemClock, UuidGenerator
from adapters.webhooks import EgressUrlPolicy
from application.bus import MessageBus
from application.handlers import Deps
from application.handlers import Settings as CoreSettings
from application.inbound import InboundDeps
from application.limits import RateLimits
from application.ports import Clock, IdGenerator, ObjectStore, PasswordHasher, UnitOfWork, UrlPolicy
from application.uploads import FileDeps, FileSettings
from domain.channels import Channel
from entrypoints.channels import inbox_owners
from entrypoints.limits import egress_policy, rate_limits_for
from entrypoints.realtime import redis_for
from entrypoints.settings import Settings
from entrypoints.storage import object_store_for

Readiness = Callable[[], Awaitable[dict[str, bool]]]


def make_hasher(profile: str) -> Argon2PasswordHasher:
    """Argon2id; the 'test' profile is the cheapest one, for test suites only."""
    params = argon2.profiles.CHEAPEST if profile == "test" else argon2.profiles.RFC_9106_LOW_MEMORY
    return Argon2PasswordHasher(argon2.PasswordHasher.from_parameters(params))


async def _pool(
    conninfo: str, min_size: int, max_size: int, acquire_timeout: float
) -> AsyncIterator[AsyncConnectionPool]:
    pool = await open_pool(conninfo, min_size=min_size, max_size=max_size, acquire_timeout=acquire_timeout)
    try:
        yield pool
    finally:
        await pool.close()


def _postgres_uow(pool: AsyncConnectionPool) -> Callable[[], UnitOfWork]:
    return partial(PostgresUnitOfWork, pool)


def _postgres_readiness(pool: AsyncConnectionPool) -> Readiness:
    async def ready() -> dict[str, bool]:
        try:
            async with pool.connection(timeout=2) as conn:
                await conn.execute("select 1")
            return {"database": True}
        except Exception:
            return {"database": False}

    return ready


def _bus(
    uow: Callable[[], UnitOfWork],
    clock: Clock,
    ids: IdGenerator,
    hasher: PasswordHasher,
    tokens: JwtTokenIssuer,
    group_max: int,
    refresh_ttl_s: int,
    limits: RateLimits | None,
    webhook_urls: UrlPolicy,
) -> MessageBus:
    settings = CoreSettings(group_max=group_max, refresh_ttl=timedelta(seconds=refresh_ttl_s))
    deps = Deps(
        uow=uow, clock=clock, ids=ids, hasher=hasher, tokens=tokens, settings=settings, webhook_urls=webhook_urls
    )
    return MessageBus(deps, limits=limits)


def _webhook_urls(settings: Settings | None) -> UrlPolicy:
    assert settings is not None, "container_for() sets the settings"
    return EgressUrlPolicy(egress_policy(settings))


def _limits(settings: Settings | None, redis: Any) -> RateLimits | None:
    assert settings is not None, "container_for() sets the settings"
    return rate_limits_for(settings, redis)


def _inbound(uow: Callable[[], UnitOfWork], clock: Clock, owners: dict[Channel, str]) -> InboundDeps:
    return InboundDeps(uow=uow, clock=clock, inbox_owners=owners)


async def _object_store(settings: Settings | None) -> AsyncIterator[ObjectStore]:
    assert settings is not None, "container_for() sets the settings"
    async with object_store_for(settings) as store:
        yield store


def _files(
    uow: Callable[[], UnitOfWork],
    clock: Clock,
    ids: IdGenerator,
    store: ObjectStore,
    max_size: int,
    limits: RateLimits | None,
) -> FileDeps:
    return FileDeps(uow=uow, clock=clock, ids=ids, store=store, settings=FileSettings(max_size=max_size), limits=limits)


class Container(containers.DeclarativeContainer):
    """Every provider a runtime needs; tests override ``uow`` and ``readiness``."""

    config = providers.Configuration()

    clock = providers.Singleton(SystemClock)
    ids = providers.Singleton(UuidGenerator)
    hasher = providers.Singleton(make_hasher, profile=config.argon2_profile)
    token_settings = providers.Singleton(
        TokenSettings, secret=config.jwt_secret, ttl=providers.Factory(timedelta, seconds=config.access_token_ttl_s)
    )
    tokens = providers.Singleton(JwtTokenIssuer, settings=token_settings)

    pool = providers.Resource(
        _pool,
        conninfo=config.database_url,
        min_size=config.db_pool_min,
        max_size=config.db_pool_max,
        acquire_timeout=config.db_acquire_timeout_s,
    )
    uow = providers.Singleton(_postgres_uow, pool=pool)
    readiness = providers.Singleton(_postgres_readiness, pool=pool)
    inbox_owners: providers.Object[dict[Channel, str]] = providers.Object({})
    app_settings: providers.Object[Settings | None] = providers.Object(None)
    object_store = providers.Resource(_object_store, settings=app_settings)
    redis = providers.Singleton(redis_for, config.redis_url)
    """The runtime's Redis client (None without CHAT4ALL_REDIS_URL); the runtime closes it when it stops."""
    limits = providers.Singleton(_limits, settings=app_settings, redis=redis)
    webhook_urls = providers.Singleton(_webhook_urls, settings=app_settings)
    files = providers.Singleton(
        _files, uow=uow, clock=clock, ids=ids, store=object_store, max_size=config.max_file_size, limits=limits
    )
    inbound = providers.Singleton(_inbound, uow=uow, clock=clock, owners=inbox_owners)
    bus = providers.Singleton(
        _bus,
        uow=uow,
        clock=clock,
        ids=ids,
        hasher=hasher,
        tokens=tokens,
        group_max=config.group_max,
        refresh_ttl_s=config.refresh_token_ttl_s,
        limits=limits,
        webhook_urls=webhook_urls,
    )


def container_for(settings: Settings) -> Container:
    """A container configured from ``settings``."""
    if settings.jwt_secret is None:
        raise SystemExit("CHAT4ALL_JWT_SECRET is not set")
    secret = settings.jwt_secret.get_secret_value()
    if len(secret) < 32:
        raise SystemExit("CHAT4ALL_JWT_SECRET must be at least 32 characters")
    c = Container()
    values: dict[str, Any] = settings.model_dump()
    values["jwt_secret"] = secret
    c.config.from_dict(values)
    c.inbox_owners.override(inbox_owners(settings))
    c.app_settings.override(settings)
    return c


async def resolve(provider: Any) -> Any:
    """Await a provider that may be async because an async resource sits under it."""
    value = provider()
    if isinstance(value, Awaitable):
        return await value
    return value
