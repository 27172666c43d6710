"""The Litestar application: REST API, health, metrics and OpenAPI documents."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any
from uuid import UUID

from litestar import Litestar, Request, get
from litestar.config.app import AppConfig
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.plugins.prometheus import PrometheusController
from litestar.response import Redirect, Response
from litestar.security.jwt import JWTAuth, Token

from application.bus import MessageBus
from domain.ids import UserId
from entrypoints.channels import webhooks_for
from entrypoints.container import Container, container_for, resolve
from entrypoints.health import api_readiness
from entrypoints.http import schemas as s
from entrypoints.http.controllers import (
    PUBLIC,
    AuthController,
    ConversationsController,
    MessagesController,
    UsersController,
)
from entrypoints.http.errors import EXCEPTION_HANDLERS, PROBLEM_DETAILS, PROBLEM_JSON
from entrypoints.http.files import FilesController, blob
from entrypoints.http.metrics import request_metrics
from entrypoints.http.realtime import PresenceController, SyncController, realtime_socket
from entrypoints.http.subscriptions import WebhooksController
from entrypoints.http.tokens import CachedToken
from entrypoints.http.web import web_routes
from entrypoints.http.webhooks import webhook, webhook_handshake
from entrypoints.realtime import channels_plugin, realtime
from entrypoints.settings import Settings
from entrypoints.tracing import tracing_enabled


async def _user_from_token(token: Token, _: ASGIConnection[Any, Any, Any, Any]) -> UserId | None:
    try:
        return UserId(UUID(token.sub))
    except ValueError:
        return None


@get("/health/live", opt=PUBLIC, operation_id="live", tags=["operations"])
async def live() -> s.Health:
    """The process is up."""
    return s.Health(status="ok")


READY_RETRY_AFTER_S = 5
"""What a 503 of /health/ready asks a caller to wait: about a readiness probe's period."""


@get("/health/ready", opt=PUBLIC, operation_id="ready", tags=["operations"])
async def ready(state: State) -> Response[s.Health]:
    """Every backing service this process needs answers: PostgreSQL, Redis (when configured) and the file store
    (`checks` names each); 503 when one does not. Kafka is not checked: the API reaches it through the outbox."""
    checks = await state.readiness()
    ok = all(checks.values())
    return Response(
        s.Health(status="ok" if ok else "unavailable", checks=checks),
        status_code=200 if ok else 503,
        media_type="application/json" if ok else PROBLEM_JSON,
        headers=None if ok else {"Retry-After": str(READY_RETRY_AFTER_S)},
    )


@get("/docs", opt=PUBLIC, include_in_schema=False)
async def docs() -> Redirect:
    return Redirect("/schema/swagger")


class Metrics(PrometheusController):
    path = "/metrics"
    opt = PUBLIC


def _operation_level_security(app_config: AppConfig) -> AppConfig:
    """JWTAuth declares bearer auth for every operation; the controllers declare it where it applies."""
    if app_config.openapi_config is not None:
        app_config.openapi_config.security = None
    return app_config


def _metrics_outermost(app_config: AppConfig) -> AppConfig:
    """Request metrics wrap authentication too, so refused requests are counted with their status."""
    app_config.middleware.insert(0, request_metrics)
    return app_config


def _span_name(scope: Any) -> tuple[str, dict[str, Any]]:
    """Spans named by method and route template (the raw path would make one name per id)."""
    route = str(scope.get("path_template") or scope.get("path", ""))
    return f"{scope.get('method', 'WS')} {route}", {"http.route": route}


def tracing_plugins() -> list[Any]:
    """Litestar's OpenTelemetry plugin when tracing is on (``OTEL_EXPORTER_OTLP_ENDPOINT``), else none."""
    if not tracing_enabled():
        return []
    from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryPlugin

    config = OpenTelemetryConfig(
        scope_span_details_extractor=_span_name,
        exclude_spans=["receive", "send"],  # one span per request, not one per ASGI message
        exclude=["^/metrics$", "^/health/"],
    )
    return [OpenTelemetryPlugin(config)]


def create_app(container: Container, settings: Settings) -> Litestar:
    """Build the HTTP application around an already configured container."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await resolve(container.init_resources)
        app.state.bus = await resolve(container.bus)
        app.state.readiness = api_readiness(
            await resolve(container.readiness), redis, await resolve(container.object_store)
        )
        app.state.inbound = await resolve(container.inbound)
        app.state.webhooks = webhooks_for(settings)
        app.state.files = await resolve(container.files)
        app.state.tokens = container.tokens()
        app.state.ws_max_frame_bytes = settings.ws_max_frame_bytes
        app.state.ws_queue = settings.ws_queue
        live = realtime(
            redis,
            uow=await resolve(container.uow),
            clock=container.clock(),
            presence_ttl=timedelta(seconds=settings.presence_ttl_s),
            channels=channels,
        )
        # Everything built so far lives as long as the process: keep it out of the collector's
        # way, so full collections under load walk only request garbage (tens of ms less at p99).
        gc.collect()
        gc.freeze()
        gc.set_threshold(20_000, 20, 20)
        try:
            async with live as app.state.realtime:
                yield
        finally:
            if redis is not None:
                await redis.aclose()
            await resolve(container.shutdown_resources)

    def bus(state: State) -> MessageBus:
        bus_: MessageBus = state.bus
        return bus_

    redis = container.redis()
    channels = channels_plugin(redis)
    token_settings = container.token_settings()
    jwt_auth = JWTAuth[UserId, CachedToken](
        token_cls=CachedToken,
        retrieve_user_handler=_user_from_token,
        token_secret=token_settings.secret,
        algorithm=token_settings.algorithm,
        accepted_audiences=[token_settings.audience],
        accepted_issuers=[token_settings.issuer],
        require_claims=["exp", "iat", "sub"],
        exclude=["^/schema", "^/docs$"],
        description="An access token from POST /auth/token",
    )
    return Litestar(
        route_handlers=[
            AuthController,
            UsersController,
            ConversationsController,
            MessagesController,
            FilesController,
            PresenceController,
            SyncController,
            WebhooksController,
            realtime_socket,
            blob,
            webhook_handshake,
            webhook,
            live,
            ready,
            docs,
            Metrics,
            *web_routes(settings),  # /, /config.json and the build's files (only top-level paths no route has)
        ],
        dependencies={"bus": Provide(bus, sync_to_thread=False)},
        exception_handlers=EXCEPTION_HANDLERS,
        plugins=[PROBLEM_DETAILS, channels, *tracing_plugins()],
        lifespan=[lifespan],
        on_app_init=[jwt_auth.on_app_init, _operation_level_security, _metrics_outermost],
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="Chat4All",
            version="1.0.0",
            path="/schema",
            # Swagger UI's files come with the web app (`make web`, web/dist/swagger), not from a CDN.
            render_plugins=[
                SwaggerRenderPlugin(
                    js_url="/swagger/swagger-ui-bundle.js",
                    css_url="/swagger/swagger-ui.css",
                    standalone_preset_js_url="/swagger/swagger-ui-standalone-preset.js",
                    favicon='<link rel="icon" type="image/svg+xml" href="/favicon.svg">',
                )
            ],
            description="One API for WhatsApp, Instagram Direct, Messenger, Telegram and Chat4All clients.",
            components=Components(
                security_schemes={"BearerToken": SecurityScheme(type="http", scheme="bearer", bearer_format="JWT")}
            ),
        ),
        debug=False,
    )


def app_factory() -> Litestar:
    """The production entry point (uvicorn --factory): everything from CHAT4ALL_* variables."""
    settings = Settings()
    return create_app(container_for(settings), settings)


__all__ = ["Request", "app_factory", "create_app"]
