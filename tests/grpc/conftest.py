"""The gRPC API in process (grpclib ChannelFor) on the in-memory adapters, beside REST on the same container."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from dependency_injector import providers
from grpclib.health.check import ServiceStatus
from grpclib.testing import ChannelFor
from litestar import Litestar
from litestar.testing import AsyncTestClient

from adapters.memory import InMemoryStore
from adapters.memory.objects import InMemoryObjectStore
from application.ports import ObjectStore
from entrypoints.container import container_for, resolve
from entrypoints.grpc.auth import BearerAuth
from entrypoints.grpc.server import Chat4AllService, services
from entrypoints.http.app import create_app
from entrypoints.realtime import realtime
from entrypoints.settings import Settings
from tests.api.conftest import Api
from tests.grpc.support import CAP, Grpc

pytestmark = pytest.mark.unit


@pytest.fixture
def object_store() -> ObjectStore:
    return InMemoryObjectStore()


@pytest.fixture
async def grpc(object_store: ObjectStore) -> AsyncIterator[Grpc]:
    settings = Settings(jwt_secret="t" * 40, argon2_profile="test", grpc_max_message_bytes=CAP)
    container = container_for(settings)
    database = {"database": True}

    async def readiness() -> dict[str, bool]:
        return dict(database)

    container.pool.override(providers.Object(None))
    store = InMemoryStore()
    container.uow.override(providers.Object(store.uow))
    container.readiness.override(providers.Object(readiness))
    container.object_store.override(providers.Object(object_store))
    app: Litestar = create_app(container, settings)
    # The test client runs the HTTP app on a loop of its own; gRPC's real-time parts run on this one.
    async with (
        AsyncTestClient(app) as client,  # its lifespan starts the container's resources
        realtime(None, uow=store.uow, clock=container.clock(), presence_ttl=timedelta(seconds=60)) as live,
    ):
        bus = await resolve(container.bus)
        files = await resolve(container.files)
        service = Chat4AllService(
            bus=bus,
            files=files,
            auth=BearerAuth(container.tokens().verify),
            max_message_bytes=CAP,
            realtime=live,
        )
        serving = ServiceStatus()
        serving.set(True)
        served = services(service, readiness=readiness, serving=serving, max_message_bytes=CAP)
        async with ChannelFor(served) as channel:
            yield Grpc(
                channel=channel,
                api=Api(client),
                bus=bus,
                files=files,
                serving=serving,
                database=database,
                realtime=live,
                outbox=store,
            )
