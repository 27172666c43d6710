"""The web app served at / from CHAT4ALL_WEB_DIR, and GET /config.json, beside the API."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from adapters.memory import InMemoryStore
from domain.uploads import DEFAULT_CHUNK_SIZE
from entrypoints.settings import WEB_DIST, Settings
from tests.api.conftest import Api, build_app

pytestmark = pytest.mark.unit

PAGE = b'<!doctype html><html><head><title>Chat4All</title><script type="module" src="/assets/x-abc123.js"></script>'
SCRIPT = b"console.log('hi')\n"
HASHED = "public, max-age=31536000, immutable"
SANDBOX = "http://127.0.0.1:8081"

Client = AsyncTestClient[Litestar]
ClientFactory = Callable[..., AbstractAsyncContextManager[Client]]


@pytest.fixture
def built(tmp_path: Path) -> Path:
    """A web_dir as `make web` leaves it: index.html, hashed assets, a favicon."""
    dist = tmp_path / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_bytes(PAGE)
    (dist / "assets" / "x-abc123.js").write_bytes(SCRIPT)
    (dist / "favicon.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"/>')
    return dist


@pytest.fixture
def client_with(store: InMemoryStore) -> ClientFactory:
    @asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[Client]:
        async with AsyncTestClient(build_app(store, **overrides)) as client:
            yield client

    return start


def security_headers_of(response: Any) -> dict[str, str]:
    return {k: response.headers.get(k) for k in ("x-content-type-options", "referrer-policy")}


def csp_of(response: Any) -> dict[str, list[str]]:
    directives = [d.split() for d in response.headers["content-security-policy"].split(";") if d.strip()]
    return {d[0]: d[1:] for d in directives}


async def test_the_page_and_its_assets_are_served_with_their_cache_and_security_headers(
    client_with: ClientFactory, built: Path
) -> None:
    async with client_with(web_dir=built) as client:
        page = await client.get("/")
        script = await client.get("/assets/x-abc123.js")
        icon = await client.get("/favicon.svg")
        same_page = await client.get("/index.html")

    assert page.status_code == 200
    assert page.content == PAGE
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["cache-control"] == "no-cache"
    assert security_headers_of(page) == {"x-content-type-options": "nosniff", "referrer-policy": "no-referrer"}
    assert csp_of(page) == {
        "default-src": ["'self'"],
        "connect-src": ["'self'", "ws:", "wss:"],
        "img-src": ["'self'", "data:", "blob:"],
        "style-src": ["'self'"],
        "script-src": ["'self'", "'wasm-unsafe-eval'"],
        "frame-ancestors": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
    }
    assert "attachment" not in page.headers.get("content-disposition", "")

    assert script.status_code == 200
    assert script.content == SCRIPT
    assert script.headers["content-type"].startswith("text/javascript")
    assert script.headers["cache-control"] == HASHED
    assert script.headers["x-content-type-options"] == "nosniff"

    assert icon.status_code == 200
    assert icon.headers["content-type"].startswith("image/svg+xml")
    assert icon.headers["cache-control"] == "no-cache"
    assert same_page.content == PAGE
    assert same_page.headers["cache-control"] == "no-cache"


async def test_a_missing_asset_is_a_problem_that_is_not_cached(client_with: ClientFactory, built: Path) -> None:
    async with client_with(web_dir=built) as client:
        missing = await client.get("/assets/x-000000.js")
        nothing = await client.get("/nothing-here.txt")
        escape = await client.get("/assets/..%2F..%2Fsecret")

    for response in (missing, nothing, escape):
        assert response.status_code == 404
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.headers.get("cache-control") != HASHED
    assert missing.headers["x-content-type-options"] == "nosniff"


async def test_without_a_build_the_page_is_503_and_says_how_to_build_it(
    client_with: ClientFactory, tmp_path: Path
) -> None:
    empty = tmp_path / "dist"
    empty.mkdir()
    async with client_with(web_dir=empty) as client:
        page = await client.get("/")
        absent = await client.get("/assets/x-abc123.js")
        config = await client.get("/config.json")

    assert page.status_code == 503
    assert page.headers["content-type"].startswith("application/problem+json")
    problem = page.json()
    assert problem["type"].endswith("/unavailable")
    assert problem["status"] == 503
    assert "make web" in problem["detail"]
    assert absent.status_code == 404
    assert config.status_code == 200


async def test_a_directory_that_does_not_exist_breaks_nothing_else(client_with: ClientFactory, tmp_path: Path) -> None:
    async with client_with(web_dir=tmp_path / "never-built") as client:
        assert (await client.get("/")).status_code == 503
        assert (await client.get("/favicon.ico")).status_code == 404
        assert (await client.get("/health/live")).json() == {"status": "ok", "checks": {}}


async def test_the_page_is_public_and_the_api_still_answers(client_with: ClientFactory, built: Path) -> None:
    async with client_with(web_dir=built) as client:
        api = Api(client)
        anonymous = await client.get("/", headers={"Authorization": "Bearer not-a-token"})
        ana = await api.user("ana")
        me = await client.get("/v1/me", headers=ana["headers"])
        refused = await client.get("/v1/me")
        live = await client.get("/health/live")
        unknown = await client.get("/v1/nothing-here")

    assert anonymous.status_code == 200
    assert me.status_code == 200 and me.json()["username"] == "ana"
    assert refused.status_code == 401
    assert live.status_code == 200
    assert unknown.status_code in {401, 404}
    assert "content-security-policy" not in me.headers


async def test_the_client_config_names_the_sandbox_when_one_is_configured(client_with: ClientFactory) -> None:
    async with client_with(web_sandbox_url=SANDBOX + "/", max_file_size=12345) as client:
        config = await client.get("/config.json")

    assert config.status_code == 200
    assert config.headers["content-type"].startswith("application/json")
    assert config.headers["cache-control"] == "no-cache"
    assert config.json() == {"sandbox_url": SANDBOX, "max_file_size": 12345, "chunk_size": DEFAULT_CHUNK_SIZE}


async def test_the_client_config_without_a_sandbox(client_with: ClientFactory) -> None:
    async with client_with() as client:
        config = (await client.get("/config.json")).json()

    assert config == {"sandbox_url": None, "max_file_size": Settings().max_file_size, "chunk_size": DEFAULT_CHUNK_SIZE}


async def test_the_sandbox_may_be_reached_from_the_page(client_with: ClientFactory, built: Path) -> None:
    async with client_with(web_dir=built, web_sandbox_url=SANDBOX + "/sandbox") as client:
        page = await client.get("/")

    assert csp_of(page)["connect-src"] == ["'self'", "ws:", "wss:", SANDBOX]


async def test_only_the_client_config_is_in_the_openapi_document(client_with: ClientFactory, built: Path) -> None:
    async with client_with(web_dir=built) as client:
        document = (await client.get("/schema/openapi.json")).json()

    config = document["paths"]["/config.json"]["get"]
    assert (config["operationId"], config["tags"]) == ("webConfig", ["web"])
    assert "security" not in config
    assert not {"/", "/assets/{file_path}", "/{file_path}"} & set(document["paths"])
    assert not [p for p in document["paths"] if "file_path" in p]


def test_the_default_web_dir_is_the_checkout_s_web_dist() -> None:
    assert Settings().web_dir == WEB_DIST
    assert Path(__file__).resolve().parents[2] / "web" / "dist" == WEB_DIST


def test_a_sandbox_url_must_be_http() -> None:
    with pytest.raises(ValueError, match="http"):
        Settings(web_sandbox_url="127.0.0.1:8081")


async def test_the_api_docs_load_swagger_ui_from_the_web_app_not_a_cdn(built: Path, client_with: ClientFactory) -> None:
    (built / "swagger").mkdir()
    (built / "swagger" / "swagger-ui.css").write_text("body{}")
    async with client_with(web_dir=built) as client:
        page = await client.get("/schema/swagger")
        css = await client.get("/swagger/swagger-ui.css")

    assert page.status_code == 200
    assert 'src="/swagger/swagger-ui-bundle.js"' in page.text
    assert 'src="/swagger/swagger-ui-standalone-preset.js"' in page.text
    assert 'href="/swagger/swagger-ui.css"' in page.text
    assert "cdn" not in page.text.lower() and "unpkg" not in page.text.lower()
    assert (css.status_code, css.text) == (200, "body{}")
