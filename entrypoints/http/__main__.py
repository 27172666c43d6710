"""Run the HTTP API: `python -m entrypoints.http` (uvicorn, CHAT4ALL_HTTP_WORKERS processes)."""

from __future__ import annotations

import os
import shutil

import uvicorn

from entrypoints.settings import Settings


def main() -> None:
    settings = Settings()
    if settings.http_workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        # Several worker processes share one /metrics view through prometheus-client's multiprocess
        # mode; its directory must start empty, and one per data dir and port leaves nothing behind.
        metrics = settings.data_dir.resolve() / "metrics" / f"http-{settings.http_port}"
        shutil.rmtree(metrics, ignore_errors=True)
        metrics.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics)
    from entrypoints.http.app import app_factory  # imported after the metrics directory is set

    # Build the app once here: uvicorn's multi-worker parent would respawn workers that fail to
    # import forever, hiding the error from the supervisor; failing here exits the runtime instead.
    app_factory()
    uvicorn.run(
        "entrypoints.http.app:app_factory",
        factory=True,
        host=settings.host,
        port=settings.http_port,
        workers=settings.http_workers,
        log_level=settings.log_level,
        access_log=False,
        proxy_headers=False,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
