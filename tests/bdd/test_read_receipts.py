"""Steps for features/messaging/read_receipts.feature."""

from __future__ import annotations

from datetime import datetime

import pytest
from pytest_bdd import given, parsers, scenarios, then, when

from application.errors import Forbidden
from tests.bdd.world import World, step

pytestmark = pytest.mark.bdd

scenarios("messaging/read_receipts.feature")


def mark_read(world: World, reader: str, text: str, at: datetime) -> None:
    world.app.clock.set(at)
    world.receipts[text] = world.run(world.app.mark_read(reader, world.message(text)))


@given(step('{reader} reads "{text}" at {at:Time}'))
@when(step('{reader} reads "{text}" at {at:Time}'))
def reads(world: World, reader: str, text: str, at: datetime) -> None:
    mark_read(world, reader, text, at)


@when(step('{reader}\'s phone reports reading "{text}" again at {at:Time}'))
def reports_again(world: World, reader: str, text: str, at: datetime) -> None:
    world.status_events_seen = len(world.status_events())
    mark_read(world, reader, text, at)


@when(parsers.parse('{user} tries to mark "{text}" as read'))
def tries_to_mark_read(world: World, user: str, text: str) -> None:
    world.attempt(world.app.mark_read(user, world.message(text)))


@then(step('{sender} sees that {reader} read "{text}" at {at:Time}'))
def sees_read_at(world: World, sender: str, reader: str, text: str, at: datetime) -> None:
    view = world.run(world.app.status(sender, world.message(text)))
    reads = [e.at for e in view.history if e.status == "READ" and e.recipient.username == reader]
    assert reads == [at] * len(view.deliveries)
    assert reads


@then(step('the receipt says {reader} read "{text}" at {at:Time}'))
def receipt_says(world: World, reader: str, text: str, at: datetime) -> None:
    receipt = world.receipts[text]
    assert receipt.message_id == world.message(text)
    assert receipt.read_at == at


@then("no new read notification has gone out")
def no_new_notification(world: World) -> None:
    assert len(world.status_events()) == world.status_events_seen
    assert world.status_events_seen > 0  # the first receipt was announced


@then("she is not allowed")
def not_allowed(world: World) -> None:
    assert isinstance(world.error, Forbidden)
