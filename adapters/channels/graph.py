"""What Meta's Graph API answers have in common, for the WhatsApp, Messenger and Instagram connectors."""

from __future__ import annotations

import math
from typing import Any

import httpx

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
