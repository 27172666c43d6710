"""The HTTP API in process, on the in-memory adapters."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from dependency_injector import providers
from litestar import Litestar
from litestar.testing import AsyncTestClient

from adapters.memory import InMemoryStore
from adapters.memory.objects import InMemoryObjectStore
from entrypoints.container import container_for
from entrypoints.http.app import create_app
from entrypoints.settings import Settings

pytestmark = pytest.mark.unit


async def _ready() -> dict[str, bool]:
    return {"database": True}


def build_app(store: InMemoryStore, **overrides: Any) -> Litestar:
    """The app on ``store``; rate limits off unless ``overrides`` turn them on (all test clients share an address)."""
    overrides.setdefault("rate_limiting", False)
    settings = Settings(jwt_secret="t" * 40, argon2_profile="test", **overrides)
    container = container_for(settings)
    container.pool.override(providers.Object(None))
    container.uow.override(providers.Object(store.uow))
    container.readiness.override(providers.Object(_ready))
    container.object_store.override(providers.Object(InMemoryObjectStore()))
    return create_app(container, settings)


@pytest.fixture
def store() -> InMemoryStore:
    return InMemoryStore()


@pytest.fixture
async def client(store: InMemoryStore) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(build_app(store)) as c:
        yield c


class Api:
    """Small helpers over the test client so tests read as user stories."""

    def __init__(self, client: AsyncTestClient[Litestar]) -> None:
        self.client = client

    async def user(self, name: str, password: str = "correct horse") -> dict[str, Any]:
        r = await self.client.post("/v1/users", json={"username": name, "password": password})
        assert r.status_code == 201, r.text
        t = await self.client.post("/auth/token", json={"username": name, "password": password})
        assert t.status_code == 200, t.text
        body = r.json()
        body["headers"] = {"Authorization": f"Bearer {t.json()['access_token']}"}
        body["refresh_token"] = t.json()["refresh_token"]
        return body

    async def conversation(self, owner: dict[str, Any], *members: str, type_: str = "private") -> dict[str, Any]:
        r = await self.client.post(
            "/v1/conversations", json={"type": type_, "members": list(members)}, headers=owner["headers"]
        )
        assert r.status_code == 201, r.text
        return dict(r.json())

    async def send(self, who: dict[str, Any], conversation_id: str, text: str, **extra: Any) -> Any:
        return await self.client.post(
            "/v1/messages",
            json={"conversation_id": conversation_id, "payload": {"type": "text", "text": text}, **extra},
            headers=who["headers"],
        )


@pytest.fixture
def api(client: AsyncTestClient[Litestar]) -> Api:
    return Api(client)
