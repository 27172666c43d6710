"""The platforms' webhooks: ``/webhooks/whatsapp|messenger|instagram|telegram``.

No bearer token here: each call proves its origin with the platform's own signature (Meta's
``X-Hub-Signature-256``, Telegram's secret token), checked on the raw body before anything is
parsed or stored. A missing proof is 401, a wrong one 403, a channel without its secret 404.
Everything a verified call carries is durable before the platform gets its 200 (otherwise it
retries, and the platform ids make its retries harmless).
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, get, post
from litestar.datastructures import State
from litestar.enums import MediaType
from litestar.params import FromPath
from prometheus_client import Counter

from application.inbound import ChannelWebhook, Received, receive
from domain.channels import PLATFORMS, Channel
from entrypoints.channels import count_inbound
from entrypoints.http.controllers import PUBLIC
from entrypoints.http.errors import problem

RECEIPTS = Counter("chat4all_inbound_receipts", "Receipts the platforms' webhooks brought, by channel.", ["channel"])
REFUSED = Counter(
    "chat4all_webhook_refusals",
    "Webhook calls refused, by channel and reason (unsigned, forged).",
    ["channel", "reason"],
)

_NAMES = {c.value: c for c in PLATFORMS}


class WebhookReceived(msgspec.Struct):
    """What a webhook call brought: messages accepted, duplicates and unrouted, and receipts queued."""

    accepted: int
    duplicates: int
    unrouted: int
    receipts: int


def _webhook(state: State, channel: str) -> ChannelWebhook:
    hooks: dict[Channel, ChannelWebhook] = state.webhooks
    found = _NAMES.get(channel)
    hook = hooks.get(found) if found is not None else None
    if hook is None:
        raise problem(404, f"no webhook is configured for {channel!r}")
    return hook


@get(
    "/webhooks/{channel:str}",
    opt=PUBLIC,
    media_type=MediaType.TEXT,
    tags=["webhooks"],
    operation_id="webhookHandshake",
    summary="Meta's subscription check: answers hub.challenge when hub.verify_token is ours",
)
async def webhook_handshake(channel: FromPath[str], request: Request[Any, Any, Any], state: State) -> str:
    hook = _webhook(state, channel)
    answer = hook.handshake(dict(request.query_params))
    if answer is None:
        raise problem(403, "the subscription check failed")
    return answer


@post(
    "/webhooks/{channel:str}",
    opt=PUBLIC,
    status_code=200,
    tags=["webhooks"],
    operation_id="webhook",
    summary="A platform's signed webhook call: inbound messages and receipts",
)
async def webhook(channel: FromPath[str], request: Request[Any, Any, Any], state: State) -> WebhookReceived:
    hook = _webhook(state, channel)
    body = await request.body()
    if hook.signature_header not in request.headers:
        REFUSED.labels(channel, "unsigned").inc()
        raise problem(401, f"the {hook.signature_header} header is missing")
    if not hook.verify(body, request.headers):
        REFUSED.labels(channel, "forged").inc()
        raise problem(403, f"the {hook.signature_header} header does not match the body")
    try:
        inbound = hook.parse(body)
    except ValueError as exc:
        raise problem(400, str(exc)) from exc
    outcomes = await receive(state.inbound, inbound)
    count_inbound(hook.channel, outcomes)
    receipts = len(inbound.receipts) + len(inbound.watermarks)
    if receipts:
        RECEIPTS.labels(channel).inc(receipts)
    return WebhookReceived(
        accepted=outcomes.count(Received.ACCEPTED),
        duplicates=outcomes.count(Received.DUPLICATE),
        unrouted=outcomes.count(Received.UNROUTED),
        receipts=receipts,
    )
