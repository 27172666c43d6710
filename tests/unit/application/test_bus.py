"""The message bus routes every command and query to its handler."""

from __future__ import annotations

import inspect

import attrs
import pytest

from application import commands as c
from application.handlers import HANDLERS
from tests.builders import Chat4All


def test_every_command_has_a_handler() -> None:
    commands = {
        obj for _, obj in inspect.getmembers(c, inspect.isclass) if attrs.has(obj) and obj.__module__ == c.__name__
    }

    assert commands
    assert commands == set(HANDLERS)
    assert all(inspect.iscoroutinefunction(handler) for handler in HANDLERS.values())


async def test_an_unknown_command_is_a_type_error(app: Chat4All) -> None:
    @attrs.frozen
    class Unknown:
        pass

    with pytest.raises(TypeError, match="no handler for Unknown"):
        await app.handle(Unknown())


async def test_the_bus_returns_the_handlers_answer(app: Chat4All) -> None:
    view = await app.handle(c.RegisterUser("ana", "long enough"))

    assert view.username == "ana"
    assert view.user_id in app.store.state.users
