"""Every error the core can raise has a problem+json mapping; none falls through to a 500."""

from __future__ import annotations

import pytest
from dependency_injector import providers
from litestar.testing import AsyncTestClient

from adapters.memory import InMemoryStore
from entrypoints.container import container_for
from entrypoints.http.app import create_app
from entrypoints.http.errors import ERROR_TABLE, app_error
from entrypoints.settings import Settings
from tests.builders import core_error_classes


@pytest.mark.parametrize("cls", core_error_classes(), ids=lambda c: c.__qualname__)
def test_every_core_error_maps_to_a_client_problem(cls: type[Exception]) -> None:
    assert any(issubclass(cls, mapped) for mapped, _, _ in ERROR_TABLE)
    instance = cls.__new__(cls)
    Exception.__init__(instance, "boom")
    instance.message = "boom"  # type: ignore[attr-defined]
    instance.field = None  # type: ignore[attr-defined]
    problem = app_error(instance)
    assert 400 <= problem.status_code < 500 or problem.status_code == 503
    assert problem.type_ is not None and problem.type_.startswith("https://chat4all.dev/problems/")


async def _down() -> dict[str, bool]:
    return {"database": False}


async def test_ready_is_503_problem_when_the_database_is_down() -> None:
    settings = Settings(jwt_secret="t" * 40, argon2_profile="test")
    container = container_for(settings)
    container.pool.override(providers.Object(None))
    container.uow.override(providers.Object(InMemoryStore().uow))
    container.readiness.override(providers.Object(_down))
    async with AsyncTestClient(create_app(container, settings)) as client:
        r = await client.get("/health/ready")
    assert r.status_code == 503
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["checks"] == {"database": False, "storage": True}
    assert r.headers["retry-after"] == "5"
