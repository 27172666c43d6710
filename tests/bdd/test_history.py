"""Steps for features/messaging/history.feature."""

from __future__ import annotations

import pytest
from pytest_bdd import given, parsers, scenarios, then, when

from application.cursors import decode_history_cursor
from tests.bdd.world import World

pytestmark = pytest.mark.bdd

scenarios("messaging/history.feature")


def read(world: World, viewer: str, limit: int, **position: int) -> None:
    world.reader, world.page_size = viewer, limit
    world.page = world.run(world.app.history(viewer, world.conversation_id, limit=limit, **position))


@given(parsers.parse('{sender} has sent "{text}" to {recipient} only'))
def has_sent_to_one(world: World, sender: str, text: str, recipient: str) -> None:
    world.sent[text] = world.run(world.app.send(sender, world.conversation_id, text, to=[recipient]))


@when(parsers.parse("{viewer} reads the history"))
def reads_history(world: World, viewer: str) -> None:
    read(world, viewer, 50)


@when(parsers.parse("{viewer} reads the history {size:d} messages at a time"))
def reads_history_in_pages(world: World, viewer: str, size: int) -> None:
    read(world, viewer, size)


@when(parsers.parse('{viewer} reads {size:d} messages after "{text}"'))
def reads_after(world: World, viewer: str, size: int, text: str) -> None:
    read(world, viewer, size, after_seq=world.sent[text].seq)


@when(parsers.parse("{viewer} reads the next page"))
def reads_next_page(world: World, viewer: str) -> None:
    assert world.page is not None
    assert world.page.next_cursor is not None, "there is no next page"
    direction, seq = decode_history_cursor(world.page.next_cursor)
    read(world, viewer, world.page_size, **{f"{direction}_seq": seq})


@then("there are more messages")
def more_messages(world: World) -> None:
    assert world.page is not None
    assert world.page.next_cursor is not None


@then("there are no more messages")
def no_more_messages(world: World) -> None:
    assert world.page is not None
    assert world.page.next_cursor is None


@then(parsers.parse('{viewer} does not see "{text}"'))
def does_not_see(world: World, viewer: str, text: str) -> None:
    assert world.page is not None
    assert world.reader == viewer
    shown = [m.payload["text"] for m in world.page.items]
    assert text not in shown
    assert shown  # the viewer does see the rest of the conversation
