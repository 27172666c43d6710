"""Run the HTTP API: `python -m entrypoints.http` (uvicorn, CHAT4ALL_HTTP_WORKERS processes)."""

from __future__ import annotations

import os
import tempfile

import uvicorn

from entrypoints.settings import Settings


def main() -> None:
    settings = Settings()
    if settings.http_workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        # Several worker processes share one /metrics view through prometheus-client's multiprocess mode.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="chat4all-metrics-")
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
