"""Behind a proxy: with CHAT4ALL_FORWARDED_ALLOW_IPS the API counts anonymous calls by the address the trusted
proxy forwards (X-Forwarded-For); without it, by the peer's address, whatever a client claims.

The app is served by uvicorn with the runtime's own settings (``server_config``): the forwarded headers are
uvicorn's business (its ProxyHeadersMiddleware), which the in-process test client would bypass.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import uvicorn

from adapters.memory import InMemoryStore
from entrypoints.http.__main__ import server_config
from entrypoints.settings import Settings
from entrypoints.stack.postgres import free_port
from tests.api.conftest import build_app

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]

# One sign-up per address, then 429 for a long while: a second 201 means a second bucket.
ONE_EACH = {"anonymous": {"per_second": 0.001, "burst": 1}}


@asynccontextmanager
async def served(**overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The API under uvicorn on a free loopback port, configured as ``python -m entrypoints.http`` would be."""
    overrides = {"host": "127.0.0.1", "http_port": free_port("127.0.0.1"), **overrides}
    settings = Settings(jwt_secret="t" * 40, argon2_profile="test", **overrides)
    app = build_app(InMemoryStore(), rate_limiting=True, rate_limits=ONE_EACH, **overrides)
    server = uvicorn.Server(server_config(settings, app))
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not serving.done(), "uvicorn stopped before it served"
            await asyncio.sleep(0.01)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.http_port}") as client:
            yield client
    finally:
        server.should_exit = True
        await serving


def sign_up(client: httpx.AsyncClient) -> Callable[[str, str], Any]:
    async def from_(name: str, forwarded_for: str) -> int:
        r = await client.post(
            "/v1/users",
            json={"username": name, "password": "correct horse"},
            headers={"X-Forwarded-For": forwarded_for},
        )
        return r.status_code

    return from_


async def test_a_trusted_proxy_gives_each_forwarded_client_its_own_anonymous_bucket() -> None:
    async with served(forwarded_allow_ips="127.0.0.1") as client:
        signs_up = sign_up(client)
        assert await signs_up("ana", "203.0.113.7") == 201
        assert await signs_up("bruno", "203.0.113.7") == 429  # the same client, out of its bucket
        assert await signs_up("carla", "198.51.100.9") == 201  # another client, its own bucket
        # What a client sent ahead of the proxy's own entry is not believed: the proxy appends the real address.
        assert await signs_up("dora", "198.51.100.77, 203.0.113.7") == 429


async def test_without_trusted_proxies_a_forged_forwarded_address_is_ignored() -> None:
    async with served() as client:
        signs_up = sign_up(client)
        assert await signs_up("ana", "203.0.113.7") == 201
        assert await signs_up("bruno", "198.51.100.9") == 429  # one bucket: the peer's address


async def test_forwarded_headers_from_a_peer_not_trusted_are_ignored() -> None:
    async with served(forwarded_allow_ips="10.0.0.0/8") as client:
        signs_up = sign_up(client)
        assert await signs_up("ana", "203.0.113.7") == 201
        assert await signs_up("bruno", "198.51.100.9") == 429


def test_the_runtime_trusts_forwarded_headers_only_when_told() -> None:
    untrusting = server_config(Settings(), "entrypoints.http.__main__:asgi_app")
    assert untrusting.proxy_headers is False
    trusting = server_config(Settings(forwarded_allow_ips="10.244.0.0/16,172.30.0.10"), "app:app")
    assert trusting.proxy_headers is True
    assert trusting.forwarded_allow_ips == "10.244.0.0/16,172.30.0.10"
