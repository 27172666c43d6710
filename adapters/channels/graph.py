"""What Meta's Graph API answers have in common, for the WhatsApp, Messenger and Instagram connectors."""

from __future__ import annotations

import math
from typing import Any

import httpx

from adapters.channels.common import SEND_LIMITS

GRAPH_BASE_URL = "https://graph.facebook.com"
GRAPH_API_VERSION = "v25.0"  # the version channels.md shows (3.3, 3.4)


def graph_code(value: Any) -> int | None:
    """A Graph error code or subcode: an int, or digits in a string (some relays quote it)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def retry_after(response: httpx.Response) -> float | None:
    """The ``Retry-After`` header in seconds, when it is a number (an HTTP date is ignored)."""
    try:
        seconds = float(response.headers.get("retry-after", ""))
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def graph_client(
    token: str, *, base_url: str, api_version: str, timeout: float, transport: httpx.AsyncBaseTransport | None
) -> httpx.AsyncClient:
    """A client for ``<base_url>/<api_version>``, the token in its ``Authorization`` header (never in a URL)."""
    return httpx.AsyncClient(
        base_url=f"{base_url.rstrip('/')}/{api_version.strip('/')}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=timeout,
        transport=transport,
        limits=SEND_LIMITS,
    )
