"""The webhook ports over HTTP: URLs checked against the egress policy, calls sent through the guarded session."""

from __future__ import annotations

from collections.abc import Mapping

import aiohttp

from adapters.webhooks.ssrf import EgressPolicy, RefusedAddress, UnsafeUrl, check_url, deliver_post, guarded_session
from application.ports import UrlPolicy, WebhookResponse, WebhookSender, WebhookUnreachable


class EgressUrlPolicy(UrlPolicy):
    """Registration: http(s) URLs whose host is not, and does not spell, an address the policy refuses."""

    def __init__(self, policy: EgressPolicy) -> None:
        self.policy = policy

    def check(self, url: str) -> str:
        try:
            return check_url(url, self.policy)
        except UnsafeUrl as exc:
            raise ValueError(exc.reason) from None


class HttpWebhookSender(WebhookSender):
    """POSTs through one guarded session: every connection's addresses are checked as it opens (DNS rebinding),
    redirects are answers, not followed, and each call ends within ``timeout`` seconds."""

    def __init__(self, policy: EgressPolicy, *, timeout: float = 15.0) -> None:
        self._policy = policy
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> WebhookResponse:
        if self._session is None:
            self._session = guarded_session(self._policy, timeout=self._timeout)
        try:
            answer = await deliver_post(self._session, url, data=body, headers=headers)
        except (UnsafeUrl, RefusedAddress) as exc:
            raise WebhookUnreachable(f"refused by the egress policy: {exc}") from None
        except TimeoutError:
            raise WebhookUnreachable(f"no answer within {self._timeout:g} s") from None
        except aiohttp.ClientError as exc:
            raise WebhookUnreachable(f"could not connect: {exc}") from None
        return WebhookResponse(status=answer.status, retry_after=answer.retry_after)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
