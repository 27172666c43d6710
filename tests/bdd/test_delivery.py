"""Steps for features/messaging/delivery.feature: the pipeline's use cases on the in-memory adapters."""

from __future__ import annotations

from datetime import timedelta

import attrs
import pytest
from pytest_bdd import given, scenarios, then, when

from application import topics
from application.pipeline import (
    ChannelDeps,
    CircuitBreaker,
    DeliveryJob,
    PipelineDeps,
    Receipt,
    RetryPolicy,
    apply_receipts,
    deliver_jobs,
    relay_outbox,
    route_events,
)
from domain.channels import Channel
from domain.deliveries import DeliveryStatus
from tests.bdd.world import World, step
from tests.builders import FakePublisher, ScriptedConnector

pytestmark = pytest.mark.bdd

scenarios("messaging/delivery.feature")

PAUSE = timedelta(seconds=10)


@attrs.define
class Platform:
    """The event log, Telegram, and the channel worker's policies, as the scenario sees them."""

    log: FakePublisher
    telegram: ScriptedConnector
    channel: ChannelDeps


async def _no_wait(_: float) -> None:
    return None


@pytest.fixture
def platform(world: World) -> Platform:
    log = FakePublisher()
    deps = PipelineDeps(uow=world.app.store.uow, clock=world.app.clock, publisher=log)
    telegram = ScriptedConnector(Channel.TELEGRAM, lookup=True)  # like the sandbox, it can say what it has
    channel = ChannelDeps(
        pipeline=deps,
        connector=telegram,
        breaker=CircuitBreaker(world.app.clock, threshold=3, reset_after=PAUSE),
        retry=RetryPolicy(max_attempts=5),
        sleep=_no_wait,
    )
    return Platform(log=log, telegram=telegram, channel=channel)


def _jobs(platform: Platform) -> list[DeliveryJob]:
    return [DeliveryJob.from_event(e) for e in platform.log.on(topics.outbound(Channel.TELEGRAM))]


def _relay_and_route(world: World, platform: Platform) -> None:
    deps = platform.channel.pipeline
    while world.run(relay_outbox(deps)):
        pass
    world.run(route_events(deps, platform.log.on(topics.MESSAGES)))


@given(step("{person} uses Telegram"))
def uses_telegram(world: World, person: str) -> None:
    world.run(world.app.link(person, "telegram", "4242"))


@given("Telegram is down")
def telegram_is_down(platform: Platform) -> None:
    platform.telegram.down = True


@when("Telegram is back and the pause is over")
def telegram_is_back(world: World, platform: Platform) -> None:
    platform.telegram.down = False
    world.app.clock.advance(PAUSE)


@given(step('a delivery worker crashed right after Telegram accepted "{text}"'))
def crashed_mid_send(world: World, platform: Platform, text: str) -> None:
    _relay_and_route(world, platform)
    (job,) = [j for j in _jobs(platform) if j.message_id == world.message(text)]
    deps = platform.channel.pipeline

    async def claim_and_send_then_die() -> None:
        async with deps.uow() as uow:
            await uow.sends.claim([job.key], at=deps.clock.now())
            await uow.commit()
        await platform.telegram.send(job.outbound())  # ...and the worker is gone before recording it

    world.run(claim_and_send_then_die())


@when("Chat4All delivers what is waiting")
def delivers(world: World, platform: Platform) -> None:
    _relay_and_route(world, platform)
    world.run(deliver_jobs(platform.channel, _jobs(platform)))


@when(step('Telegram confirms that {person}\'s phone got "{text}"'))
def telegram_confirms(world: World, platform: Platform, person: str, text: str) -> None:
    (sent,) = [m for m in platform.telegram.accepted if m.delivery[0] == world.message(text)]
    receipt = Receipt(Channel.TELEGRAM, DeliveryStatus.DELIVERED, world.app.clock.advance(), delivery=sent.delivery)
    world.run(apply_receipts(platform.channel.pipeline, [receipt]))


@then(step("{person}'s Telegram received {messages:Texts}"))
def telegram_received(world: World, platform: Platform, person: str, messages: list[str]) -> None:
    received = [m.payload["text"] for m in platform.telegram.accepted if str(m.to) == "telegram:4242"]
    assert received == messages  # each once, in the order sent


@then(step("{person}'s Telegram received nothing yet"))
def telegram_received_nothing(platform: Platform, person: str) -> None:
    assert platform.telegram.accepted == []


@then(step('{sender} sees "{text}" delivered on {channel}'))
def sees_delivered_on(world: World, sender: str, text: str, channel: str) -> None:
    view = world.run(world.app.status(sender, world.message(text)))
    assert [(d.channel, d.status) for d in view.deliveries if d.channel == channel] == [(channel, "DELIVERED")]
