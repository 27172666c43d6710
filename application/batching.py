"""Group commit: callers that arrive while a batch is being written share the next one."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

C = TypeVar("C")
R = TypeVar("R")


class GroupCommit(Generic[C, R]):
    """Runs the commands that arrive while a batch is being written as the next batch.

    There is no timer: a command that finds a free slot runs at once, alone, so a quiet system
    adds no latency; under load each batch holds whatever arrived during the previous write (up
    to ``max_batch``), which turns N transactions (and N fsyncs) into one. ``slots`` batches may
    be in flight at once. ``run`` answers each command with a result or the exception refusing
    it; if ``run`` itself raises, every command of that batch gets the exception.
    """

    def __init__(
        self, run: Callable[[Sequence[C]], Awaitable[Sequence[R | BaseException]]], *, max_batch: int, slots: int
    ) -> None:
        if max_batch < 1 or slots < 1:
            raise ValueError("max_batch and slots are at least 1")
        self._run = run
        self._max_batch = max_batch
        self._free = slots
        self._waiting: list[tuple[C, asyncio.Future[R]]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, command: C) -> R:
        """Queue ``command`` for the next batch and wait for its answer."""
        answer: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((command, answer))
        if self._free:
            self._free -= 1
            task = asyncio.create_task(self._drain())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await answer

    async def _drain(self) -> None:
        batch: list[tuple[C, asyncio.Future[R]]] = []
        try:
            while self._waiting:
                batch, self._waiting = self._waiting[: self._max_batch], self._waiting[self._max_batch :]
                try:
                    results = await self._run([cmd for cmd, _ in batch])
                except Exception as e:  # handed to every caller of the batch
                    results = [e] * len(batch)
                for (_, answer), result in zip(batch, results, strict=True):
                    if answer.done():  # the caller went away (a closed connection)
                        continue
                    if isinstance(result, BaseException):
                        answer.set_exception(result)
                    else:
                        answer.set_result(result)
                batch = []
        finally:
            self._free += 1
            for _, answer in batch:  # cancelled mid-batch (shutdown): nobody waits forever
                answer.cancel()
