"""Run the HTTP API: `python -m entrypoints.http`.

Under `chat4all up` (``CHAT4ALL_HTTP_REUSE_PORT=1``) each API process is a runtime of its own: it binds the
shared port with SO_REUSEPORT, so the kernel spreads connections over the processes and the supervisor
restarts each on its own. Run by hand, it serves with uvicorn's CHAT4ALL_HTTP_WORKERS processes instead.
"""

from __future__ import annotations

import os
import shutil
import socket
from typing import TYPE_CHECKING

import uvicorn

from entrypoints.logs import configure_logging
from entrypoints.settings import Settings
from entrypoints.tracing import configure_tracing

if TYPE_CHECKING:
    from litestar import Litestar


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` that other processes may bind as well (SO_REUSEPORT)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def asgi_app() -> Litestar:
    """uvicorn's factory: the API, then our logging, in every process that serves (uvicorn's workers too).

    Building a Litestar app installs Litestar's own logging config (a text handler on the root logger);
    configuring ours after it replaces that handler.
    """
    from entrypoints.http.app import app_factory  # imported after main() set the metrics directory

    settings = Settings()
    configure_tracing("http")
    application = app_factory()
    configure_logging(settings.log_level, settings.log_format, runtime="http")
    return application


APP_FACTORY = "entrypoints.http.__main__:asgi_app"


def server_config(settings: Settings, app: str | Litestar, *, workers: int = 1) -> uvicorn.Config:
    """uvicorn's settings for the API: ``app`` is the factory's import path, or an app (the tests').

    X-Forwarded-For and X-Forwarded-Proto are believed only from the proxies of CHAT4ALL_FORWARDED_ALLOW_IPS
    (uvicorn's ProxyHeadersMiddleware then rewrites the request's client address and scheme, which the
    per-address limits and the traces read); without it they are ignored, so no client can name its own address.
    """
    trusted = settings.forwarded_allow_ips
    return uvicorn.Config(
        app,
        factory=isinstance(app, str),
        host=settings.host,
        port=settings.http_port,
        workers=workers,
        log_level=settings.log_level,
        log_config=None,  # keep our handler: uvicorn's own records go through it
        access_log=False,
        proxy_headers=trusted is not None,
        forwarded_allow_ips=trusted,
        timeout_graceful_shutdown=10,
        ws_max_size=settings.ws_max_frame_bytes,  # a bigger client frame closes the socket with 1009
        ws_per_message_deflate=settings.ws_compression,
    )


def main() -> None:
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format, runtime="http")
    shared_port = os.environ.get("CHAT4ALL_HTTP_REUSE_PORT") == "1"
    workers = 1 if shared_port else settings.http_workers
    if workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        # Several worker processes share one /metrics view through prometheus-client's multiprocess
        # mode; its directory must start empty, and one per data dir and port leaves nothing behind.
        metrics = settings.data_dir.resolve() / "metrics" / f"http-{settings.http_port}"
        shutil.rmtree(metrics, ignore_errors=True)
        metrics.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics)
    # Build the app once here: uvicorn's multi-worker parent would respawn workers that fail to
    # import forever, hiding the error from the supervisor; failing here exits the runtime instead.
    asgi_app()
    config = server_config(settings, APP_FACTORY, workers=workers)
    if shared_port:
        uvicorn.Server(config).run(sockets=[reuse_port_socket(settings.host, settings.http_port)])
    elif workers > 1:
        from uvicorn.supervisors import Multiprocess

        Multiprocess(config, sockets=[config.bind_socket()]).run()
    else:
        uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
