"""Delivery lanes on the in-memory adapters: conversations side by side, each in order, sharing transactions."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta

import pytest

from application import topics
from application.lanes import DeliveryLanes, Stopped
from application.pipeline import (
    ChannelDeps,
    CircuitBreaker,
    DeliveryJob,
    JobResult,
    Outcome,
    PipelineDeps,
    RetryPolicy,
    relay_outbox,
)
from application.ports import OutboundMessage, UnitOfWork
from domain.channels import Channel
from domain.deliveries import DeliveryStatus
from domain.ids import ConversationId
from tests.builders import Chat4All, FakeClock, FakePublisher, ScriptedConnector, a_chat4all

pytestmark = pytest.mark.unit


class HeldPlatform(ScriptedConnector):
    """A platform that holds the sends of the messages whose text is in ``held`` until ``release``."""

    def __init__(self, *held: str) -> None:
        super().__init__(Channel.TELEGRAM)
        self.held = set(held)
        self.released = asyncio.Event()

    async def send(self, message: OutboundMessage) -> str:
        if message.payload.get("text") in self.held:
            await self.released.wait()
        return await super().send(message)


@pytest.fixture
def app() -> Chat4All:
    return a_chat4all(clock=FakeClock())


class Counted:
    """The store's unit of work, counting how many were opened (one per transaction or read)."""

    def __init__(self, app: Chat4All) -> None:
        self.app = app
        self.opened = 0

    def __call__(self) -> UnitOfWork:
        self.opened += 1
        return self.app.store.uow()


async def conversations(app: Chat4All, count: int) -> list[ConversationId]:
    """ana's private conversations with ``count`` people who are on telegram."""
    await app.register("ana")
    ids = []
    for i in range(count):
        await app.register(f"person{i}")
        await app.link(f"person{i}", "telegram", str(1000 + i))
        ids.append(await app.start("ana", f"person{i}"))
    return ids


async def jobs_of(deps: PipelineDeps, log: FakePublisher) -> list[DeliveryJob]:
    while await relay_outbox(deps):
        pass
    return [DeliveryJob.from_event(e) for e in log.on(topics.outbound(Channel.TELEGRAM))]


def lanes_for(
    deps: PipelineDeps, platform: ScriptedConnector, done: list[tuple[int, JobResult]], **kwargs: object
) -> DeliveryLanes[int]:
    cd = ChannelDeps(
        pipeline=deps,
        connector=platform,
        breaker=CircuitBreaker(deps.clock, threshold=2, reset_after=timedelta(milliseconds=200)),
        retry=RetryPolicy(max_attempts=3, base_delay=0.0, max_delay=0.0),
    )
    return DeliveryLanes(cd, finished=done.extend, step_seconds=0.5, **kwargs)  # type: ignore[arg-type]


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(5_000):  # the lanes run on this loop: let them, a millisecond at a time, for up to 5 s
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("not within 5 s")


async def test_a_conversation_the_platform_holds_up_does_not_hold_up_the_others(app: Chat4All) -> None:
    slow, fast = await conversations(app, 2)
    for i in range(3):
        await app.send("ana", slow, f"slow {i}")
        await app.send("ana", fast, f"fast {i}")
    log = FakePublisher()
    deps = PipelineDeps(uow=app.store.uow, clock=app.clock, publisher=log)
    platform = HeldPlatform("slow 0")
    done: list[tuple[int, JobResult]] = []
    lanes = lanes_for(deps, platform, done)

    for token, job in enumerate(await jobs_of(deps, log)):
        lanes.add(token, job)
    await until(lambda: len(done) == 3)

    assert [m.payload["text"] for m in platform.accepted] == ["fast 0", "fast 1", "fast 2"]
    assert lanes.pending == 3
    platform.released.set()
    await until(lambda: lanes.pending == 0)
    assert [m.payload["text"] for m in platform.accepted if m.conversation_id == slow] == ["slow 0", "slow 1", "slow 2"]
    assert {r.outcome for _, r in done} == {Outcome.HANDED_OVER}
    assert sorted(token for token, _ in done) == list(range(6))  # every token handed back once
    await lanes.close()


async def test_lanes_that_step_together_share_their_transactions(app: Chat4All) -> None:
    ids = await conversations(app, 20)
    for conversation in ids:
        await app.send("ana", conversation)
    log = FakePublisher()
    counted = Counted(app)
    deps = PipelineDeps(uow=counted, clock=app.clock, publisher=log)
    done: list[tuple[int, JobResult]] = []
    lanes = lanes_for(deps, ScriptedConnector(), done)
    jobs = await jobs_of(deps, log)
    counted.opened = 0

    for token, job in enumerate(jobs):
        lanes.add(token, job)
    await until(lambda: lanes.pending == 0)

    assert len(done) == 20
    assert all(s is DeliveryStatus.SENT for dls in app.store.state.deliveries.values() for s in [dls[-1].status])
    # one lane at a time would open 60 (a read, a claim and a record each); together they open a handful
    assert counted.opened <= 9
    await lanes.close()


async def test_a_deferred_job_stays_at_the_head_of_its_lane_and_goes_when_the_platform_is_back(app: Chat4All) -> None:
    (conversation,) = await conversations(app, 1)
    for i in range(3):
        await app.send("ana", conversation, f"m{i}")
    log = FakePublisher()
    deps = PipelineDeps(uow=app.store.uow, clock=app.clock, publisher=log)
    platform = ScriptedConnector()
    platform.down = True
    done: list[tuple[int, JobResult]] = []
    lanes = lanes_for(deps, platform, done)

    for token, job in enumerate(await jobs_of(deps, log)):
        lanes.add(token, job)
    await until(lambda: any(r.outcome is Outcome.DEFERRED for _, r in done))

    assert lanes.pending == 3  # the circuit opened: nothing failed, everything waits
    assert platform.accepted == []
    platform.down = False
    app.clock.advance(timedelta(seconds=1))  # the breaker lets a probe through
    await until(lambda: lanes.pending == 0)
    assert [m.payload["text"] for m in platform.accepted] == ["m0", "m1", "m2"]
    await lanes.close()


async def test_dropped_jobs_leave_their_lanes_after_the_step_under_way(app: Chat4All) -> None:
    first, second = await conversations(app, 2)
    for i in range(2):
        await app.send("ana", first, f"first {i}")
    await app.send("ana", second, "second")
    log = FakePublisher()
    deps = PipelineDeps(uow=app.store.uow, clock=app.clock, publisher=log)
    platform = HeldPlatform("first 0")
    done: list[tuple[int, JobResult]] = []
    lanes = lanes_for(deps, platform, done)
    jobs = await jobs_of(deps, log)
    for token, job in enumerate(jobs):
        lanes.add(token, job)
    await until(lambda: platform.calls == 1)  # "second" went; "first 0" is being sent

    dropping = asyncio.create_task(lanes.drop(lambda token: jobs[token].conversation_id == first))
    await asyncio.sleep(0.01)
    assert not dropping.done()  # it waits for the send under way
    platform.released.set()

    assert await dropping == 1  # "first 1": never sent, left to whoever reads it again
    assert [m.payload["text"] for m in platform.accepted] == ["second", "first 0"]
    assert lanes.pending == 0
    await lanes.close()


async def test_closing_waits_for_the_steps_under_way_and_starts_no_more(app: Chat4All) -> None:
    (conversation,) = await conversations(app, 1)
    for i in range(3):
        await app.send("ana", conversation, f"m{i}")
    log = FakePublisher()
    deps = PipelineDeps(uow=app.store.uow, clock=app.clock, publisher=log)
    platform = HeldPlatform("m0")
    done: list[tuple[int, JobResult]] = []
    lanes = lanes_for(deps, platform, done)
    for token, job in enumerate(await jobs_of(deps, log)):
        lanes.add(token, job)
    await until(lambda: platform.calls == 0 and lanes.pending == 3)
    await asyncio.sleep(0.01)

    closing = asyncio.create_task(lanes.close())
    await asyncio.sleep(0.01)
    assert not closing.done()
    platform.released.set()
    await closing

    assert [m.payload["text"] for m in platform.accepted] == ["m0"]  # the first step held one job
    assert lanes.pending == 2
    with pytest.raises(RuntimeError):
        lanes.add(99, (await jobs_of(deps, log))[0])


async def test_an_outage_is_waited_out_and_a_stop_during_it_leaves_the_jobs_unfinished(app: Chat4All) -> None:
    (conversation,) = await conversations(app, 1)
    await app.send("ana", conversation)
    log = FakePublisher()
    deps = PipelineDeps(uow=app.store.uow, clock=app.clock, publisher=log)
    tries: list[int] = []

    async def stopping(step: Callable[[], object]) -> object:
        tries.append(1)
        raise Stopped

    done: list[tuple[int, JobResult]] = []
    lanes = lanes_for(deps, ScriptedConnector(), done, retrying=stopping)
    (job,) = await jobs_of(deps, log)

    lanes.add(0, job)
    await until(lambda: bool(tries))
    await lanes.close()

    assert tries == [1]
    assert done == []
    assert lanes.pending == 1
    assert lanes.failure is None  # stopping is not a failure


async def test_a_bug_in_a_step_stops_the_lanes_and_is_kept_for_the_worker_to_raise(app: Chat4All) -> None:
    (conversation,) = await conversations(app, 1)
    await app.send("ana", conversation)
    log = FakePublisher()
    deps = PipelineDeps(uow=app.store.uow, clock=app.clock, publisher=log)

    class Broken(ScriptedConnector):
        async def send(self, message: OutboundMessage) -> str:
            raise ZeroDivisionError

    done: list[tuple[int, JobResult]] = []
    lanes = lanes_for(deps, Broken(), done)
    (job,) = await jobs_of(deps, log)

    lanes.add(0, job)
    await until(lambda: lanes.failure is not None)

    assert isinstance(lanes.failure, ZeroDivisionError)
    with pytest.raises(RuntimeError):
        lanes.add(1, job)
    await lanes.close()
