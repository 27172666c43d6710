"""The web app (``web/``, built into ``web/dist`` by `make web`) served at ``/``, and ``GET /config.json``.

``GET /`` answers ``index.html`` (``no-cache``: a new build shows at the next load); ``/assets/*`` are Vite's
content-hashed files (cached for a year, ``immutable``); any other file of the build (a favicon) is served from
the top of the directory. Every route is public and left out of the OpenAPI document, except
``/config.json``, what the app needs to know about the server. The app routes with ``#/...``, so there is no
fallback to ``index.html`` for unknown paths. The directory is read on each request: a build made while
the server runs is served at once, and a server started before any build answers 503 at ``/``.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

import anyio
import msgspec
from litestar import Router, get
from litestar.datastructures import CacheControlHeader, MutableScopeHeaders
from litestar.enums import MediaType, ScopeType
from litestar.handlers import HTTPRouteHandler
from litestar.response import File
from litestar.static_files import create_static_files_router
from litestar.types import ASGIApp, Message, Middleware, Receive, Scope, Send

from domain.uploads import DEFAULT_CHUNK_SIZE
from entrypoints.http.controllers import PUBLIC
from entrypoints.http.errors import problem
from entrypoints.settings import Settings

HASHED = "public, max-age=31536000, immutable"
"""Vite names what it puts under ``assets/`` by the hash of its content: a changed file is a new URL."""
UNHASHED = "no-cache"
"""``index.html`` and the other top-level files keep their names across builds: revalidated on each use."""


class ClientConfig(msgspec.Struct):
    """What the web app needs to know about the server it was loaded from."""

    sandbox_url: str | None
    """The channel sandbox's control API (its "phones" view), when one runs beside this server."""
    max_file_size: int
    """The largest file an upload may declare (413 above)."""
    chunk_size: int
    """The chunk size of an upload that does not choose one."""


def origin(url: str) -> str:
    """``scheme://host[:port]`` of a URL (Settings made sure ``web_sandbox_url`` is an http(s) one)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def security_headers(settings: Settings) -> dict[str, str]:
    """The headers of everything the web routes answer.

    A Vite build is one module script and one stylesheet, both files under ``/assets`` (no inline script
    or style); the app talks to this server (REST and WebSocket) and, for its phones view, the sandbox.
    """
    connect = ["'self'", "ws:", "wss:"]
    if settings.web_sandbox_url is not None:
        connect.append(origin(settings.web_sandbox_url))
    csp = "; ".join(
        (
            "default-src 'self'",
            f"connect-src {' '.join(connect)}",
            "img-src 'self' data: blob:",
            "style-src 'self'",
            "script-src 'self' 'wasm-unsafe-eval'",  # hash-wasm compiles its SHA-256 (checksums of uploads)
            "frame-ancestors 'none'",
            "base-uri 'none'",
            "form-action 'self'",
        )
    )
    return {
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }


def with_headers(always: Mapping[str, str], cache_control: str) -> Middleware:
    """Litestar middleware factory: ``always`` on every answer, ``cache_control`` on successful ones only
    (a 404 for a hashed name must not be cached for a year)."""

    def factory(app: ASGIApp) -> ASGIApp:
        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != ScopeType.HTTP:
                await app(scope, receive, send)
                return

            async def sending(message: Message) -> None:
                if message["type"] == "http.response.start":
                    headers = MutableScopeHeaders.from_message(message)
                    for name, value in always.items():
                        headers[name] = value
                    if message["status"] < 400:
                        headers["Cache-Control"] = cache_control
                await send(message)

            await app(scope, receive, sending)

        return middleware

    return factory


def web_routes(settings: Settings) -> list[HTTPRouteHandler | Router]:
    """``GET /``, ``GET /config.json`` and the static files of ``settings.web_dir``."""
    directory = settings.web_dir
    headers = security_headers(settings)
    config = ClientConfig(
        sandbox_url=settings.web_sandbox_url, max_file_size=settings.max_file_size, chunk_size=DEFAULT_CHUNK_SIZE
    )

    @get("/", opt=PUBLIC, include_in_schema=False, middleware=[with_headers(headers, UNHASHED)], name="web/index")
    async def index() -> File:
        """The web app's page, or 503 when it has not been built."""
        page = directory / "index.html"
        if not await anyio.Path(page).is_file():
            raise problem(503, "the web app is not built: run `make web` (it serves web/dist, CHAT4ALL_WEB_DIR)")
        return File(page, media_type=MediaType.HTML, content_disposition_type="inline")

    @get(
        "/config.json",
        opt=PUBLIC,
        operation_id="webConfig",
        tags=["web"],
        cache_control=CacheControlHeader(no_cache=True),
        sync_to_thread=False,
    )
    def client_config() -> ClientConfig:
        """What the web app needs to know: the channel sandbox's URL (null: none), the largest file an
        upload may declare and the default chunk size, in bytes."""
        return config

    assets = create_static_files_router(
        "/assets",
        [directory / "assets"],
        name="web/assets",
        opt=PUBLIC,
        middleware=[with_headers(headers, HASHED)],
    )
    files = create_static_files_router(
        "/", [directory], name="web/files", opt=PUBLIC, middleware=[with_headers(headers, UNHASHED)]
    )
    return [index, client_config, assets, files]
