"""Outbound webhooks over HTTP, behind the egress guard that keeps user-registered URLs off our own infrastructure."""

from adapters.webhooks.sender import EgressUrlPolicy, HttpWebhookSender
from adapters.webhooks.ssrf import (
    MAX_BODY_BYTES,
    MAX_URL_LENGTH,
    EgressPolicy,
    GuardedResolver,
    RefusedAddress,
    Response,
    UnsafeUrl,
    address_allowed,
    check_url,
    deliver_post,
    guarded_session,
    parse_retry_after,
    refusal_of,
    resolve_checked,
)

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_URL_LENGTH",
    "EgressPolicy",
    "EgressUrlPolicy",
    "GuardedResolver",
    "HttpWebhookSender",
    "RefusedAddress",
    "Response",
    "UnsafeUrl",
    "address_allowed",
    "check_url",
    "deliver_post",
    "guarded_session",
    "parse_retry_after",
    "refusal_of",
    "resolve_checked",
]
