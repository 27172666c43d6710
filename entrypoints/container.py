"""The composition root: one dependency-injector container wires every runtime."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from functools import partial
from typing import Any

import argon2
from dependency_injector import containers, providers
from psycopg_pool import AsyncConnectionPool

from adapters.postgres.pool import open_pool
from adapters.postgres.unit_of_work import PostgresUnitOfWork
from adapters.security import Argon2PasswordHasher, JwtTokenIssuer, TokenSettings
from adapters.storage.filesystem import FilesystemObjectStore
from adapters.system import SystemClock, UuidGenerator
from application.bus import MessageBus
from application.handlers import Deps
from application.handlers import Settings as CoreSettings
from application.inbound import InboundDeps
from application.ports import Clock, IdGenerator, ObjectStore, PasswordHasher, UnitOfWork
from application.uploads import FileDeps, FileSettings
from domain.channels import Channel
from entrypoints.channels import inbox_owners
from entrypoints.settings import Settings

Readiness = Callable[[], Awaitable[dict[str, bool]]]


def make_hasher(profile: str) -> Argon2PasswordHasher:
    """Argon2id; the 'test' profile is the cheapest one, for test suites only."""
    params = argon2.profiles.CHEAPEST if profile == "test" else argon2.profiles.RFC_9106_LOW_MEMORY
    return Argon2PasswordHasher(argon2.PasswordHasher.from_parameters(params))


async def _pool(conninfo: str, min_size: int, max_size: int) -> AsyncIterator[AsyncConnectionPool]:
    pool = await open_pool(conninfo, min_size=min_size, max_size=max_size)
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
) -> MessageBus:
    settings = CoreSettings(group_max=group_max, refresh_ttl=timedelta(seconds=refresh_ttl_s))
    return MessageBus(Deps(uow=uow, clock=clock, ids=ids, hasher=hasher, tokens=tokens, settings=settings))


def _inbound(uow: Callable[[], UnitOfWork], clock: Clock, owners: dict[Channel, str]) -> InboundDeps:
    return InboundDeps(uow=uow, clock=clock, inbox_owners=owners)


async def _object_store(settings: Settings | None) -> AsyncIterator[ObjectStore]:
    assert settings is not None, "container_for() sets the settings"
    async with object_store_for(settings) as store:
        yield store


@asynccontextmanager
async def object_store_for(settings: Settings) -> AsyncIterator[ObjectStore]:
    """The filesystem store (embedded default: files under the data dir), or S3/MinIO, for every runtime alike."""
    if settings.storage == "s3":
        # Imported here: the S3 client (aiohttp) costs every runtime's start-up half a second otherwise.
        from miniopy_async.api import Minio

        from adapters.storage.s3 import S3ObjectStore, close_client, ensure_bucket

        if not (settings.s3_endpoint and settings.s3_access_key and settings.s3_secret_key):
            raise SystemExit("CHAT4ALL_STORAGE=s3 needs CHAT4ALL_S3_ENDPOINT, _ACCESS_KEY and _SECRET_KEY")
        client = Minio(
            settings.s3_endpoint,
            access_key=settings.s3_access_key.get_secret_value(),
            secret_key=settings.s3_secret_key.get_secret_value(),
            secure=settings.s3_secure,
            region=settings.s3_region,
        )
        await ensure_bucket(client, settings.s3_bucket)
        try:
            yield S3ObjectStore(client, settings.s3_bucket)
        finally:
            await close_client(client)
        return
    # Links are made by the HTTP runtime, which always has the JWT key; a worker without it signs
    # with a key of its own (it makes no links).
    jwt = settings.jwt_secret
    yield FilesystemObjectStore(
        settings.files_dir or settings.data_dir / "files",
        secret=files_url_key(jwt.get_secret_value()) if jwt is not None else secrets.token_bytes(32),
        public_base_url=http_base_url(settings),
    )


def files_url_key(jwt_secret: str) -> bytes:
    """The key that signs the filesystem store's download URLs: derived from, and not equal to, the JWT key."""
    return hmac.new(jwt_secret.encode(), b"chat4all/file-download-urls/v1", hashlib.sha256).digest()


def http_base_url(settings: Settings) -> str:
    """Where clients reach this HTTP API (CHAT4ALL_PUBLIC_URL, else the listen address)."""
    if settings.public_url:
        return settings.public_url.rstrip("/")
    host = "127.0.0.1" if settings.host in ("", "0.0.0.0") else settings.host  # noqa: S104 - comparing
    return f"http://{host}:{settings.http_port}"


def _files(
    uow: Callable[[], UnitOfWork], clock: Clock, ids: IdGenerator, store: ObjectStore, max_size: int
) -> FileDeps:
    return FileDeps(uow=uow, clock=clock, ids=ids, store=store, settings=FileSettings(max_size=max_size))


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
        _pool, conninfo=config.database_url, min_size=config.db_pool_min, max_size=config.db_pool_max
    )
    uow = providers.Singleton(_postgres_uow, pool=pool)
    readiness = providers.Singleton(_postgres_readiness, pool=pool)
    inbox_owners: providers.Object[dict[Channel, str]] = providers.Object({})
    app_settings: providers.Object[Settings | None] = providers.Object(None)
    object_store = providers.Resource(_object_store, settings=app_settings)
    files = providers.Singleton(
        _files, uow=uow, clock=clock, ids=ids, store=object_store, max_size=config.max_file_size
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
