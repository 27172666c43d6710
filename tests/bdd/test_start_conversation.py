"""Steps for features/conversations/start_conversation.feature."""

from __future__ import annotations

import attrs
import parse
import pytest
from pytest_bdd import given, parsers, scenarios, then, when

from application import commands as c
from application.handlers import Settings
from domain.conversations import ConversationType
from tests.bdd.world import World, step

pytestmark = pytest.mark.bdd

scenarios("conversations/start_conversation.feature")


@parse.with_pattern(r".+")
def members(text: str) -> list[tuple[str, str]]:
    """``ana, bruno and the WhatsApp contact +55...`` as (kind, name or address) pairs."""
    *most, last = text.split(" and ")
    out = []
    for part in [p for chunk in most for p in chunk.split(", ")] + [last]:
        contact = parse.parse("the {platform} contact {external_id}", part)
        if contact is not None:
            out.append(("contact", f"{contact['platform'].lower()}:{contact['external_id']}"))
        else:
            out.append(("user", part))
    return out


@given(step("{user} has connected his WhatsApp number {number}"))
def connected_whatsapp(world: World, user: str, number: str) -> None:
    world.run(world.app.link(user, "whatsapp", number))


@given(parsers.parse("groups are limited to {size:d} members"))
def groups_are_limited(world: World, size: int) -> None:
    bus = world.app.bus
    bus.deps = attrs.evolve(bus.deps, settings=Settings(group_max=size))


def start(world: World, creator: str, kind: ConversationType, others: list[str]) -> None:
    command = c.CreateConversation(world.app.users[creator], kind, others)
    world.conversation_view = world.attempt(world.app.handle(command))


@when(step("{creator} starts a private conversation with {others:Names}"))
def starts_private(world: World, creator: str, others: list[str]) -> None:
    start(world, creator, ConversationType.PRIVATE, others)


@when(step("{creator} starts a group with {others:Names}"))
def starts_group(world: World, creator: str, others: list[str]) -> None:
    start(world, creator, ConversationType.GROUP, others)


@then("the conversation is started")
def is_started(world: World) -> None:
    assert world.error is None, world.error
    assert world.conversation_view is not None
    stored = world.app.store.state.conversations[world.conversation_view.conversation_id]
    assert stored.members[0].user_id == world.conversation_view.members[0].user_id


@then(parsers.parse("its members are {expected:Members}", extra_types={"Members": members}))
def members_are(world: World, expected: list[tuple[str, str]]) -> None:
    assert world.error is None, world.error
    assert world.conversation_view is not None
    actual = [(m.kind, m.username if m.kind == "user" else m.address) for m in world.conversation_view.members]
    assert actual == expected


@then(parsers.parse('the conversation is refused because "{reason}"'))
def is_refused(world: World, reason: str) -> None:
    assert reason in world.error_message()
    assert world.conversation_view is None
    assert world.app.store.state.conversations == {}
