"""Shared BDD fixtures and steps: the application core on in-memory adapters, driven from sync steps.

pytest-bdd has no async steps, so each scenario owns an ``asyncio.Runner`` and steps call
``world.run(bus.handle(cmd))``. Steps speak the stakeholders' language; ``World`` remembers what
happened so later steps can refer to "the conversation", "message M1" or "the next page".
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from pytest_bdd import given, then

from domain.conversations import ConversationType
from tests.bdd.world import World, step
from tests.builders import a_chat4all


@pytest.fixture
def runner() -> Iterator[asyncio.Runner]:
    """One event loop per scenario; it only runs while a step runs."""
    with asyncio.Runner() as loop:
        yield loop


@pytest.fixture
def world(runner: asyncio.Runner) -> World:
    return World(runner=runner, app=a_chat4all())


# --- people and conversations ----------------------------------------------------------


@given(step("these people use Chat4All: {people:Names}"))
def people_use_chat4all(world: World, people: list[str]) -> None:
    world.run(world.app.register_all(*people))


@given(step("{creator} has a private conversation with {other}"))
def has_private_conversation(world: World, creator: str, other: str) -> None:
    world.conversation = world.run(world.app.start(creator, other, type=ConversationType.PRIVATE))


@given(step("{creator} has a group with {others:Names}"))
def has_group(world: World, creator: str, others: list[str]) -> None:
    world.conversation = world.run(world.app.start(creator, *others, type=ConversationType.GROUP))


# --- messages ----------------------------------------------------------------------------


@given(step("{sender} has sent {messages:Texts}"))
def has_sent(world: World, sender: str, messages: list[str]) -> None:
    for text in messages:
        world.sent[text] = world.run(world.app.send(sender, world.conversation_id, text))
    world.page = None


@then(step("{viewer} sees the messages {messages:Texts} in this order"))
def sees_messages_in_order(world: World, viewer: str, messages: list[str]) -> None:
    if world.page is None or world.reader != viewer:
        world.page = world.run(world.app.history(viewer, world.conversation_id))
        world.reader = viewer
    assert [m.payload["text"] for m in world.page.items] == messages


@then(step('{sender} sees "{text}" as {status}'))
def sees_status(world: World, sender: str, text: str, status: str) -> None:
    assert world.run(world.app.status(sender, world.message(text))).status == status
