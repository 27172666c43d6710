"""Steps for features/messaging/send_message_once.feature."""

from __future__ import annotations

import uuid

import pytest
from pytest_bdd import parsers, scenarios, then, when

from application.errors import Conflict
from domain.ids import MessageId
from tests.bdd.world import World

pytestmark = pytest.mark.bdd

scenarios("messaging/send_message_once.feature")


def send_as(world: World, sender: str, text: str, label: str) -> None:
    message_id = world.message_ids.setdefault(label, MessageId(uuid.uuid4()))
    accepted = world.attempt(world.app.send(sender, world.conversation_id, text, message_id=message_id))
    if accepted is not None:
        world.answers.append(accepted)
        world.sent.setdefault(text, accepted)
    world.page = None


@when(parsers.parse('{sender} sends "{text}" as message {label}'))
def sends_as(world: World, sender: str, text: str, label: str) -> None:
    send_as(world, sender, text, label)
    assert world.error is None, world.error


@when(parsers.parse('{sender}\'s app sends message {label} "{text}" again'))
def sends_again(world: World, sender: str, label: str, text: str) -> None:
    assert label in world.message_ids, f"message {label} was never sent"
    send_as(world, sender, text, label)


@then("both attempts get the same answer")
def same_answer(world: World) -> None:
    assert world.error is None, world.error
    first, retry = world.answers
    assert retry == first


@then(parsers.parse("{count:d} new-message notification has gone out"))
def notifications_gone_out(world: World, count: int) -> None:
    assert len(world.message_events()) == count


@then(parsers.parse("message {label} is number {seq:d} in the conversation"))
def message_number(world: World, label: str, seq: int) -> None:
    (answer,) = [a for a in world.answers if a.message_id == world.message_ids[label]]
    assert answer.seq == seq


@then(parsers.parse('the retry is refused because "{reason}"'))
def retry_refused(world: World, reason: str) -> None:
    assert isinstance(world.error, Conflict)
    assert reason in world.error_message()
    assert len(world.answers) == 1
