"""Rate limits on calls (per sender, per account, per address) and the platforms' pace, on the in-memory limiter."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

import pytest

from adapters.memory.limits import InMemoryRateLimiter
from application import commands as c
from application.errors import RateLimited, Unavailable
from application.limits import Bucket, ChannelPace, Pacer, RateLimits, charges_of
from application.ports import Ask, Rate, RateLimiter, Verdict
from domain.channels import Channel
from domain.ids import ConversationId, UserId
from tests.builders import a_chat4all

pytestmark = pytest.mark.unit


class Ticks:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class DownLimiter(RateLimiter):
    async def acquire(self, asks: Sequence[Ask]) -> list[Verdict]:
        raise Unavailable("redis is down")


def limits(ticks: Ticks, **rates: Rate) -> RateLimits:
    return RateLimits(InMemoryRateLimiter(ticks), rates={Bucket(k): r for k, r in rates.items()})


def test_each_call_draws_on_its_buckets() -> None:
    ana = UserId(uuid.uuid4())
    send = c.SendMessage(ana, ConversationId(uuid.uuid4()), {"type": "text", "text": "hi"})
    assert charges_of(send) == [(Bucket.SEND, str(ana))]
    assert charges_of(c.IssueTokenForPassword(" Ana ", "pw"), "10.0.0.7") == [
        (Bucket.LOGIN, "user:ana"),
        (Bucket.ANONYMOUS, "10.0.0.7"),
    ]
    assert charges_of(c.IssueTokenForClient("app-1", "s")) == [(Bucket.LOGIN, "client:app-1")]
    assert charges_of(c.RegisterUser("ana", "pw"), "10.0.0.7") == [(Bucket.ANONYMOUS, "10.0.0.7")]
    assert charges_of(c.RefreshToken("r"), None) == []
    assert charges_of(c.LinkIdentity(ana, "telegram", "1")) == [(Bucket.EXPENSIVE, str(ana))]
    assert charges_of(c.GetUser(ana)) == []


async def test_over_the_limit_a_call_is_refused_with_when_to_come_back_and_later_let_through() -> None:
    ticks = Ticks()
    lim = limits(ticks, send=Rate(per_second=2, burst=3))
    charge = [(Bucket.SEND, "ana")]
    for _ in range(3):
        await lim.check(charge)
    with pytest.raises(RateLimited) as refused:
        await lim.check(charge)
    assert refused.value.retry_after == pytest.approx(0.5)
    assert "too many messages; retry in 1 s" in refused.value.message
    await lim.check([(Bucket.SEND, "bob")])  # another sender has a bucket of its own
    ticks.now += 0.5
    await lim.check(charge)


async def test_a_call_is_refused_for_the_longest_wait_of_its_buckets_and_unlimited_buckets_never_refuse() -> None:
    ticks = Ticks()
    lim = limits(ticks, login=Rate(per_second=0.1, burst=1), anonymous=Rate(per_second=1, burst=1))
    call = [(Bucket.LOGIN, "user:ana"), (Bucket.ANONYMOUS, "10.0.0.7"), (Bucket.SEND, "unlimited")]
    assert await lim.admit([call]) == [None]
    (refused,) = await lim.admit([call])
    assert refused is not None and refused.retry_after == pytest.approx(10.0)


async def test_a_limiter_that_is_down_lets_calls_through() -> None:
    lim = RateLimits(DownLimiter(), rates={Bucket.SEND: Rate(per_second=1, burst=1)})
    assert await lim.admit([[(Bucket.SEND, "ana")]] * 3) == [None, None, None]


async def test_refusals_are_counted_by_bucket() -> None:
    seen: list[Bucket] = []
    lim = RateLimits(InMemoryRateLimiter(Ticks()), rates={Bucket.LOGIN: Rate(1, 1)}, refused=seen.append)
    await lim.admit([[(Bucket.LOGIN, "x")]] * 3)
    assert seen == [Bucket.LOGIN, Bucket.LOGIN]


async def test_the_bus_refuses_sends_over_the_senders_limit_in_a_batch_and_runs_the_rest() -> None:
    ticks = Ticks()
    app = a_chat4all(limits=limits(ticks, send=Rate(per_second=1, burst=2)))
    await app.register_all("ana", "bruno")
    conv = await app.start("ana", "bruno")
    ana = app.users["ana"]

    def send(i: int) -> c.SendMessage:
        return c.SendMessage(ana, conv, {"type": "text", "text": f"m{i}"})

    answers = await asyncio.gather(*(app.bus.handle(send(i)) for i in range(4)), return_exceptions=True)
    assert [type(a).__name__ for a in answers] == ["Accepted", "Accepted", "RateLimited", "RateLimited"]
    assert len(app.store.state.messages) == 2  # the refused ones changed nothing
    ticks.now += 1
    await app.bus.handle(send(5))
    assert len(app.store.state.messages) == 3


async def test_the_bus_limits_log_ins_per_account_and_per_address() -> None:
    ticks = Ticks()
    app = a_chat4all(limits=limits(ticks, login=Rate(per_second=0.1, burst=2), anonymous=Rate(per_second=1, burst=5)))
    await app.register("ana")
    attempts = [
        await _outcome(app.bus.handle(c.IssueTokenForPassword("ana", "wrong password"), client=f"10.0.0.{i}"))
        for i in range(3)
    ]
    assert attempts == ["AuthenticationFailed", "AuthenticationFailed", "RateLimited"]
    guesses = [
        await _outcome(app.bus.handle(c.IssueTokenForPassword(f"user{i}", "guess"), client="10.9.9.9"))
        for i in range(6)
    ]
    assert guesses == ["AuthenticationFailed"] * 5 + ["RateLimited"]


async def _outcome(call: object) -> str:
    try:
        await call  # type: ignore[misc]
    except Exception as exc:
        return type(exc).__name__
    return "ok"


# --- pacing ---------------------------------------------------------------------------------


async def test_a_pacer_books_slots_up_to_its_longest_wait_then_refuses() -> None:
    ticks = Ticks()
    pace = ChannelPace(overall=Rate(per_second=10, burst=10), per_recipient=Rate(per_second=1, burst=2))
    pacer = Pacer(InMemoryRateLimiter(ticks), Channel.TELEGRAM, pace, max_wait=1.0)
    verdicts = [await pacer.slot("telegram:42") for _ in range(4)]
    assert verdicts[:3] == [Verdict(True, 0.0), Verdict(True, 0.0), Verdict(True, 1.0)]
    assert not verdicts[3].granted and verdicts[3].wait == pytest.approx(2.0)
    assert await pacer.slot("telegram:7") == Verdict(True, 0.0)  # another chat has its own pace


async def test_a_pacer_without_limits_or_limiter_lets_everything_through() -> None:
    assert await Pacer(DownLimiter(), Channel.WHATSAPP, ChannelPace()).slot("x") == Verdict(True)
    down = Pacer(DownLimiter(), Channel.WHATSAPP, ChannelPace(overall=Rate(1, 1)))
    assert await down.slot("x") == Verdict(True)
