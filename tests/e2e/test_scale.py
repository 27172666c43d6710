"""`chat4all scale` on the running stack: routers and channel workers join and leave their consumer groups at run
time, and nothing else is restarted."""

from __future__ import annotations

import uuid

import psutil
import pytest

from tests.e2e.conftest import RunningStack
from tests.e2e.test_pipeline import _conversation, _platform_deliveries, _user
from tests.e2e.test_pipeline_scaling import _router_assignments

pytestmark = pytest.mark.e2e

ADDED = ("router-2", "channels-2")


def _pids(stack: RunningStack) -> dict[str, int]:
    return {rt["name"]: rt["pid"] for rt in stack.state()["runtimes"]}


def _gone(pid: int, created: float) -> bool:
    try:
        process = psutil.Process(pid)
        return process.status() == psutil.STATUS_ZOMBIE or abs(process.create_time() - created) > 1.0
    except psutil.NoSuchProcess:
        return True


def _scale(stack: RunningStack, *counts: str) -> str:
    result = stack.cli("scale", *counts, "--timeout", "60", timeout=90)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    return result.stdout


def test_scale_adds_workers_to_the_running_stack_and_takes_them_away(stack: RunningStack) -> None:
    before = _pids(stack)
    assert not set(ADDED) & set(before), "the shared stack should run one router and one channels worker"
    try:
        table = _scale(stack, "router=2", "channels=2")
        after = _pids(stack)
        assert set(after) == set(before) | set(ADDED)
        assert {name: after[name] for name in before} == before  # nothing else restarted
        kafka = stack.state()["kafka"]["bootstrap"]
        added = {name: psutil.Process(after[name]) for name in ADDED}
        for name, process in added.items():
            assert name in table
            assert process.is_running()
            assert process.cmdline()[-2:] == ["entrypoints.workers", name.rsplit("-", 1)[0]]
            assert process.environ()["CHAT4ALL_KAFKA_BOOTSTRAP"] == kafka  # the stack's own environment
        assert "scaled router: 1 -> 2" in stack.log()
        assert "scaled channels: 1 -> 2" in stack.log()
        routers = (after["router"], after["router-2"])
        stack.wait_until(
            lambda: all(_router_assignments(stack.log()).get(pid) for pid in routers),
            60,
            "the consumer group rebalanced onto router-2",
        )

        born = {process.pid: process.create_time() for process in added.values()}
        _scale(stack, "router=1", "channels=1")
        assert _pids(stack) == before
        for pid, created in born.items():
            stack.wait_until(lambda p=pid, c=created: _gone(p, c), 5, f"pid {pid} gone")
        assert "scaled router: 2 -> 1" in stack.log()
        assert "scaled channels: 2 -> 1" in stack.log()
        stack.wait_until(
            lambda: _router_assignments(stack.log()).get(before["router"]) == set(range(8)),
            60,
            "router owns every partition again",
        )
    finally:
        stack.cli("scale", "router=1", "channels=1", "--timeout", "60", timeout=90)

    ana = _user(stack.http, "ana")
    bob = _user(stack.http, "bob", channel="telegram", external_id=str(uuid.uuid4().int % 10**9))
    conversation = _conversation(stack.http, ana, bob)
    sent = stack.http.post(
        "/v1/messages",
        json={"conversation_id": conversation, "payload": {"type": "text", "text": "after scaling"}},
        headers=ana["headers"],
    )
    assert sent.status_code == 202, sent.text
    stack.wait_until(
        lambda: _platform_deliveries(stack.database_url, [conversation]) == {"DELIVERED": 1},
        60,
        "the message DELIVERED by the stack scaled back",
    )
