"""The message bus routes every command and query to its handler."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Sequence

import attrs
import pytest

from application import commands as c
from application.batching import GroupCommit
from application.bus import ALL_HANDLERS, BATCH_HANDLERS
from tests.builders import Chat4All


def test_every_command_has_a_handler() -> None:
    commands = {
        obj for _, obj in inspect.getmembers(c, inspect.isclass) if attrs.has(obj) and obj.__module__ == c.__name__
    }

    assert commands
    assert commands == set(ALL_HANDLERS)
    assert set(BATCH_HANDLERS) <= commands
    assert all(inspect.iscoroutinefunction(h) for h in [*ALL_HANDLERS.values(), *BATCH_HANDLERS.values()])


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


# --- group commit ----------------------------------------------------------------------------


class Recorder:
    """A batch runner that records each batch and holds it until released."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()

    async def run(self, commands: Sequence[int]) -> list[int | BaseException]:
        self.batches.append(list(commands))
        await self.release.wait()
        return [ValueError(f"odd {n}") if n % 2 else n * 10 for n in commands]


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_lone_command_runs_at_once_as_a_batch_of_one() -> None:
    recorder = Recorder()
    recorder.release.set()
    group = GroupCommit(recorder.run, max_batch=10, slots=1)

    assert await group.submit(2) == 20
    assert recorder.batches == [[2]]


async def test_commands_arriving_during_a_write_form_the_next_batch() -> None:
    recorder = Recorder()
    group = GroupCommit(recorder.run, max_batch=3, slots=1)

    first = asyncio.ensure_future(group.submit(0))
    await settle()
    rest = [asyncio.ensure_future(group.submit(n)) for n in (2, 4, 6, 8)]
    await settle()
    assert recorder.batches == [[0]]  # the others wait for the write in flight
    recorder.release.set()

    assert await first == 0
    assert await asyncio.gather(*rest) == [20, 40, 60, 80]
    assert recorder.batches == [[0], [2, 4, 6], [8]]


async def test_each_command_gets_its_own_answer_or_error() -> None:
    recorder = Recorder()
    recorder.release.set()
    group = GroupCommit(recorder.run, max_batch=10, slots=1)

    answers = await asyncio.gather(*(group.submit(n) for n in (1, 2, 3)), return_exceptions=True)

    assert [str(a) if isinstance(a, Exception) else a for a in answers] == ["odd 1", 20, "odd 3"]


async def test_a_failing_write_fails_its_batch_only() -> None:
    calls: list[list[int]] = []

    async def flaky(commands: Sequence[int]) -> list[int | BaseException]:
        calls.append(list(commands))
        if len(calls) == 1:
            raise RuntimeError("database down")
        return list(commands)

    group = GroupCommit(flaky, max_batch=10, slots=1)

    with pytest.raises(RuntimeError, match="database down"):
        await group.submit(1)
    assert await group.submit(2) == 2


async def test_several_batches_may_be_in_flight() -> None:
    recorder = Recorder()
    group = GroupCommit(recorder.run, max_batch=10, slots=2)

    waiting = [asyncio.ensure_future(group.submit(2))]
    await settle()
    waiting += [asyncio.ensure_future(group.submit(n)) for n in (4, 6)]
    await settle()
    assert recorder.batches == [[2], [4, 6]]
    recorder.release.set()
    assert await asyncio.gather(*waiting) == [20, 40, 60]


async def test_a_caller_that_goes_away_does_not_disturb_the_others() -> None:
    recorder = Recorder()
    group = GroupCommit(recorder.run, max_batch=10, slots=1)

    gone = asyncio.ensure_future(group.submit(2))
    stays = asyncio.ensure_future(group.submit(4))
    await settle()
    gone.cancel()
    recorder.release.set()

    assert await stays == 40
    assert gone.cancelled()


def test_a_group_commit_needs_room() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        GroupCommit(Recorder().run, max_batch=0, slots=1)
