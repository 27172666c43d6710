"""What every aiokafka client of ours does when it starts: bounded in time, and ``Unavailable`` if it cannot."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from aiokafka.errors import KafkaError

from application.errors import Unavailable


@contextlib.asynccontextmanager
async def starting(client: Any, bootstrap: str, seconds: float | None) -> AsyncIterator[None]:
    """Run the block that starts ``client`` within ``seconds``.

    A broker error, a network error or the timeout stops the half-started client and becomes
    ``Unavailable``, the error the use cases know how to wait out.
    """
    try:
        async with asyncio.timeout(seconds):
            yield
    except (KafkaError, OSError, TimeoutError) as exc:
        with contextlib.suppress(Exception):
            await client.stop()
        raise Unavailable(f"kafka at {bootstrap} is unavailable: {exc!r}") from exc
