"""The event loop every runtime that runs its own (gRPC, workers) starts: uvloop where it exists."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on uvloop (as uvicorn runs the HTTP runtime), else on the standard loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - PyPy and Windows have no uvloop; the standard loop works
        asyncio.run(main)
    else:
        uvloop.run(main)
