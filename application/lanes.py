"""Delivery lanes: a channel worker serves each conversation's jobs as they arrive, conversations side by side.

A worker that takes a batch of jobs, sends them and only then takes the next is as slow as the batch's deepest
conversation: with a platform that answers in a second, a batch holding twenty jobs of one conversation takes
twenty seconds while the other conversations' lanes stand idle, and adding workers does not help (each batch
still waits for its deepest conversation). Here every conversation has a lane of its own: its jobs go to the
platform one after another in the order they came, while up to ``ChannelDeps.concurrency`` lanes send at once
and new jobs keep arriving behind them.

Lanes that step at the same time share their transactions (group commit, :class:`GroupCommit`): one claim
transaction and one record transaction for all of them, so a fast platform costs about what a batch did.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractContextManager
from typing import Generic, TypeVar

from application.batching import GroupCommit
from application.pipeline import (
    ChannelDeps,
    DeliveryJob,
    DeliveryPlan,
    JobResult,
    Outcome,
    plan_deliveries,
    record_deliveries,
)
from domain.ids import ConversationId

T = TypeVar("T")
R = TypeVar("R")

Retrying = Callable[[Callable[[], Awaitable[R]]], Awaitable[R]]
"""Runs a database step until it succeeds, waiting out outages; raises :class:`Stopped` when the worker stops."""


class Stopped(Exception):
    """The worker is stopping while a step waits out an outage: the lane leaves its jobs unfinished."""


async def _once(step: Callable[[], Awaitable[R]]) -> R:
    return await step()


class DeliveryLanes(Generic[T]):
    """A lane per conversation; each job comes with a token (the record it was read from) handed back when done.

    - A lane sends its jobs in the order they were added, a *step* at a time: the step's jobs are claimed in
      the send ledger together and sent in seq order, and what the platform took is recorded while the next job
      goes out (``deliver_jobs``'s three steps): each send by itself when sends take longer than
      ``record_after``, else together at the end of the step. A step holds as many jobs as the platform sends
      in about ``step_seconds`` (at least one, at most ``max_step``): a slow platform is not kept waiting for a
      claim before each send, a fast one shares transactions over many, and a rebalance or a stop waits for
      at most about that long.
    - Deferred jobs (circuit open, the platform's pace used up, a send in doubt) stay at the head of their lane,
      which waits and tries again: only that conversation waits.
    - ``finished`` hears every step's outcomes, with their tokens; the DEFERRED ones are still in the lane.
    - A failure that is not an outage (a bug) stops the lanes: :attr:`failure` holds it.
    """

    def __init__(
        self,
        d: ChannelDeps,
        *,
        finished: Callable[[Sequence[tuple[T, JobResult]]], None],
        retrying: Retrying[object] = _once,
        span: Callable[[Sequence[T]], AbstractContextManager[None]] | None = None,
        step_seconds: float = 3.0,
        max_step: int = 64,
        record_after: float = 0.05,
        max_batch: int = 256,
    ) -> None:
        self._d = d
        self._finished = finished
        self._retrying = retrying
        self._span = span
        self._step_seconds = step_seconds
        self._max_step = max_step
        self._record_after = record_after
        self._queues: dict[ConversationId, deque[tuple[T, DeliveryJob]]] = {}
        self._stepping: dict[ConversationId, tuple[list[tuple[T, DeliveryJob]], asyncio.Event]] = {}
        """The lanes in a step: the step's jobs, and what is set when it ends."""
        self._drops: list[Callable[[T], bool]] = []
        """What the ``drop`` calls under way take out (the deferred jobs of the steps they wait for)."""
        self._tasks: dict[ConversationId, asyncio.Task[None]] = {}
        self._gate = asyncio.Semaphore(d.concurrency)
        self._closing = asyncio.Event()
        self._progress = asyncio.Event()
        self._pending = 0
        self._per_job: float | None = None
        """Seconds a job's send takes, averaged over recent steps."""
        self.failure: BaseException | None = None
        self._planner: GroupCommit[Sequence[DeliveryJob], DeliveryPlan] = GroupCommit(
            self._plan, max_batch=max_batch, slots=1
        )
        self._recorder: GroupCommit[Sequence[JobResult], None] = GroupCommit(self._record, max_batch=max_batch, slots=1)

    # -- what the consumer calls ------------------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Jobs added and not finished (deferred ones included)."""
        return self._pending

    def add(self, token: T, job: DeliveryJob) -> None:
        """Queue ``job`` behind the earlier jobs of its conversation."""
        if self._closing.is_set():
            raise RuntimeError("the lanes are closed")
        conversation = job.conversation_id
        self._queues.setdefault(conversation, deque()).append((token, job))
        self._pending += 1
        if conversation not in self._tasks:
            self._tasks[conversation] = asyncio.create_task(self._serve(conversation), name=f"lane {conversation}")

    async def progressed(self) -> None:
        """Return once some job finished (or was dropped) since the last call, or the lanes stopped."""
        self._progress.clear()
        await self._progress.wait()

    async def drop(self, which: Callable[[T], bool]) -> int:
        """Take the jobs whose token ``which`` names out of their lanes; return once no step holds one any more.

        For a rebalance: the partitions this worker loses go to another, which reads their jobs again from the
        last commit. Queued jobs leave at once; a step under way is finished (its sends are not abandoned half
        way), and those of its jobs that were deferred leave after it. Returns how many queued jobs left.
        """
        dropped = 0
        for queue in self._queues.values():
            kept = [(token, job) for token, job in queue if not which(token)]
            dropped += len(queue) - len(kept)
            queue.clear()
            queue.extend(kept)
        self._pending -= dropped
        self._progress.set()
        self._drops.append(which)
        try:
            await asyncio.gather(
                *(done.wait() for head, done in self._stepping.values() if any(which(token) for token, _ in head))
            )
        finally:
            self._drops.remove(which)
        return dropped

    async def close(self) -> None:
        """Start no more steps; return once the steps under way are done. Unfinished jobs stay unfinished."""
        self._closing.set()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    # -- a lane -----------------------------------------------------------------------------------------------------

    async def _serve(self, conversation: ConversationId) -> None:
        queue = self._queues[conversation]
        try:
            while not self._closing.is_set():
                async with self._gate:
                    if not queue or self._closing.is_set():
                        break
                    head = [queue.popleft() for _ in range(min(self._step_size(), len(queue)))]
                    done = asyncio.Event()
                    self._stepping[conversation] = (head, done)
                    try:
                        results = await self._step(head)
                    except Stopped:
                        queue.extendleft(reversed(head))  # unfinished: read again by whoever owns them next
                        raise
                    finally:
                        del self._stepping[conversation]
                        done.set()
                    deferred = [
                        (token, job)
                        for (token, job), r in zip(head, results, strict=True)
                        if r.outcome is Outcome.DEFERRED and not any(drop(token) for drop in self._drops)
                    ]
                    queue.extendleft(reversed(deferred))
                    self._pending -= len(head) - len(deferred)
                    self._progress.set()
                    self._finished([(token, r) for (token, _), r in zip(head, results, strict=True)])
                if deferred:
                    await self._wait(self._wait_for(results))
        except Stopped:
            pass
        except Exception as exc:  # a bug, not an outage: stop taking work, let the worker crash and restart
            self.failure = exc
            self._closing.set()
            self._progress.set()
        finally:
            del self._tasks[conversation]
            if not queue:
                del self._queues[conversation]

    async def _step(self, head: Sequence[tuple[T, DeliveryJob]]) -> list[JobResult]:
        jobs = [job for _, job in head]
        with self._span([token for token, _ in head]) if self._span is not None else contextlib.nullcontext():
            plan = await self._retrying(lambda: self._planner.submit(jobs))
            assert isinstance(plan, DeliveryPlan)
            recording: list[asyncio.Task[object]] = []
            unrecorded: list[JobResult] = []
            last = time.monotonic()

            async def recorded(results: list[JobResult]) -> object:
                return await self._retrying(lambda: self._recorder.submit(results))

            def flush() -> None:
                nonlocal unrecorded, last
                if unrecorded:
                    recording.append(asyncio.create_task(recorded(unrecorded)))
                    unrecorded = []
                last = time.monotonic()

            def record(result: JobResult) -> None:
                # A slow platform's sends are recorded one by one while the next goes out; a fast one's together.
                unrecorded.append(result)
                if time.monotonic() - last >= self._record_after:
                    flush()

            started = time.monotonic()
            try:
                served = await plan.send(self._d, record)
            finally:
                flush()
                await asyncio.gather(*recording, return_exceptions=True)  # none is left behind
            self._learn(time.monotonic() - started, sum(1 for r in served.values() if r.attempts))
            for task in recording:
                task.result()  # a record that could not be made (Stopped, or a bug) ends the step with it
            return plan.results(served)

    def _step_size(self) -> int:
        if self._per_job is None:
            return 1  # the platform's pace is not known yet: learn it from one send
        return max(1, min(self._max_step, int(self._step_seconds / max(self._per_job, 1e-6))))

    def _learn(self, seconds: float, sent: int) -> None:
        if sent:
            each = seconds / sent
            self._per_job = each if self._per_job is None else 0.8 * self._per_job + 0.2 * each

    def _wait_for(self, results: Sequence[JobResult]) -> float:
        paced = [r.retry_in for r in results if r.outcome is Outcome.DEFERRED and r.retry_in is not None]
        return max(self._d.breaker.retry_in(), min(paced, default=0.0), 0.1)

    async def _wait(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), seconds)

    # -- shared transactions ----------------------------------------------------------------------------------------

    async def _plan(self, batches: Sequence[Sequence[DeliveryJob]]) -> list[DeliveryPlan]:
        return await plan_deliveries(self._d, batches)

    async def _record(self, batches: Sequence[Sequence[JobResult]]) -> list[None]:
        await record_deliveries(self._d.pipeline, batches)
        return [None] * len(batches)
