"""Rate limits: how fast each caller may send, log in and make costly calls, and how fast each platform is sent to.

Every limit is a token bucket in the ``RateLimiter`` port (Redis, shared by every process): ``burst`` calls at
once, then ``per_second``. A refused call changes nothing and says when to come back (``RateLimited``). When the
limiter itself is down, calls go through: losing the limits for a while beats refusing every call.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from enum import StrEnum

import attrs

from application import commands as c
from application.errors import RateLimited, Unavailable
from application.ports import Ask, Rate, RateLimiter, Verdict
from domain.channels import Channel

log = logging.getLogger("chat4all.limits")


class Bucket(StrEnum):
    """What a limit counts, and per what."""

    SEND = "send"
    """Messages, per sender."""
    EXPENSIVE = "expensive"
    """Costly calls, per user: new conversations, identities, API clients, webhooks, uploads."""
    LOGIN = "login"
    """Password and client-secret attempts, per account: slows down guessing one account's password."""
    ANONYMOUS = "anonymous"
    """Calls without a token (sign-up, log-in, refresh), per client address: slows down guessing many accounts."""


DEFAULT_RATES: Mapping[Bucket, Rate] = {
    Bucket.SEND: Rate(per_second=50, burst=100),
    Bucket.EXPENSIVE: Rate(per_second=5, burst=20),
    Bucket.LOGIN: Rate(per_second=0.1, burst=10),
    Bucket.ANONYMOUS: Rate(per_second=2, burst=20),
}

_WHAT = {
    Bucket.SEND: "messages",
    Bucket.EXPENSIVE: "requests of this kind",
    Bucket.LOGIN: "log-in attempts for this account",
    Bucket.ANONYMOUS: "requests from this address",
}

Charge = tuple[Bucket, str]
"""A bucket and whose it is (a user id, a username, an address)."""


def charges_of(command: object, client: str | None = None) -> list[Charge]:
    """The buckets ``command`` draws on; ``client`` is the caller's address, for calls made without a token."""
    anonymous: list[Charge] = [(Bucket.ANONYMOUS, client)] if client else []
    match command:
        case c.SendMessage(sender=sender):
            return [(Bucket.SEND, str(sender))]
        case c.IssueTokenForPassword(username=username):
            return [(Bucket.LOGIN, "user:" + username.strip().lower()), *anonymous]
        case c.IssueTokenForClient(client_id=client_id):
            return [(Bucket.LOGIN, "client:" + client_id.strip().lower()), *anonymous]
        case c.RegisterUser() | c.RefreshToken():
            return anonymous
        case c.CreateConversation(creator=user) | c.LinkIdentity(user_id=user) | c.CreateApiClient(owner=user):
            return [(Bucket.EXPENSIVE, str(user))]
        case c.CreateWebhook(owner=user) | c.ReplayWebhookDelivery(owner=user):
            return [(Bucket.EXPENSIVE, str(user))]
    return []


@attrs.frozen
class RateLimits:
    """The request limits: the buckets and their rates (a bucket without a rate is unlimited)."""

    limiter: RateLimiter
    rates: Mapping[Bucket, Rate] = DEFAULT_RATES
    refused: Callable[[Bucket], None] = lambda _: None
    """Told of every refusal (metrics)."""

    async def admit(self, charges: Sequence[Sequence[Charge]]) -> list[RateLimited | None]:
        """For each call's charges: None if let through, else why not. One round trip for them all."""
        asks: list[Ask] = []
        owners: list[tuple[int, Bucket]] = []
        for i, call in enumerate(charges):
            for bucket, key in call:
                rate = self.rates.get(bucket)
                if rate is not None:
                    asks.append(Ask(f"{bucket.value}:{key}", rate))
                    owners.append((i, bucket))
        answers: list[RateLimited | None] = [None] * len(charges)
        if not asks:
            return answers
        try:
            verdicts = await self.limiter.acquire(asks)
        except Unavailable as exc:
            log.warning("rate limits not checked: %s", exc)
            return answers
        for (i, bucket), verdict in zip(owners, verdicts, strict=True):
            if verdict.granted:
                continue
            self.refused(bucket)
            earlier = answers[i]
            if earlier is None or verdict.wait > earlier.retry_after:
                wait = max(1, math.ceil(verdict.wait))
                answers[i] = RateLimited(f"too many {_WHAT[bucket]}; retry in {wait} s", retry_after=verdict.wait)
        return answers

    async def check(self, charges: Sequence[Charge]) -> None:
        """Raise ``RateLimited`` if any of one call's ``charges`` is over its limit."""
        (answer,) = await self.admit([charges])
        if answer is not None:
            raise answer


# --- outbound pacing ----------------------------------------------------------------------


@attrs.frozen
class ChannelPace:
    """How fast one platform may be sent to: over all, and to any one recipient (None: no limit)."""

    overall: Rate | None = None
    per_recipient: Rate | None = None


DEFAULT_PACES: Mapping[Channel, ChannelPace] = {
    # 80 messages/s per business number (error 130429 above), about one per 6 s to one user (131056),
    # which Meta lets a short burst exceed.
    Channel.WHATSAPP: ChannelPace(Rate(per_second=80, burst=80), Rate(per_second=1 / 6, burst=10)),
    # About 30 messages/s over all and one per second per chat, with short bursts.
    Channel.TELEGRAM: ChannelPace(Rate(per_second=30, burst=30), Rate(per_second=1, burst=3)),
    # Meta's Send API: about 250 calls/s per Page for Messenger, 100/s per account for Instagram.
    Channel.MESSENGER: ChannelPace(Rate(per_second=250, burst=250)),
    Channel.INSTAGRAM: ChannelPace(Rate(per_second=100, burst=100)),
}


@attrs.frozen
class Pacer:
    """Keeps a channel worker's sends under the platform's limits, across every worker of the channel.

    A send takes a slot in the channel's bucket and in its recipient's; it waits for a slot up to
    ``max_wait`` seconds (its place is booked meanwhile), and is refused beyond that: the job is deferred
    and offered again, so we are never the ones the platform throttles.
    """

    limiter: RateLimiter
    channel: Channel
    pace: ChannelPace
    max_wait: float = 5.0

    async def slot(self, recipient: str) -> Verdict:
        """Take a slot for one send to ``recipient`` (a platform address)."""
        asks: list[Ask] = []
        if self.pace.per_recipient is not None:
            asks.append(Ask(f"pace:{self.channel.value}:to:{recipient}", self.pace.per_recipient, self.max_wait))
        if self.pace.overall is not None:
            asks.append(Ask(f"pace:{self.channel.value}", self.pace.overall, self.max_wait))
        if not asks:
            return Verdict(granted=True)
        try:
            verdicts = await self.limiter.acquire(asks)
        except Unavailable as exc:
            log.warning("%s: pacing not checked: %s", self.channel.value, exc)
            return Verdict(granted=True)
        refused = [v.wait for v in verdicts if not v.granted]
        if refused:
            return Verdict(granted=False, wait=max(refused))
        return Verdict(granted=True, wait=max(v.wait for v in verdicts))
