"""Workers scale out in their consumer groups, and a broker that lost everything loses no message.

One stack with two routers and two channel-worker processes; a third router joins at run time;
then the broker is killed (Tansu keeps its data in memory: it comes back empty).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import REPO, RunningStack, StackLauncher
from tests.e2e.test_pipeline import _assert_in_seq_order, _conversation, _handed_over, _sends, _user

pytestmark = pytest.mark.e2e

ASSIGNED = "group chat4all-router: partitions assigned: "


@pytest.fixture(scope="module")
def scaled(launch_stack: StackLauncher) -> Iterator[RunningStack]:
    stack = launch_stack(extra_env={"CHAT4ALL_WORKER_PROCESSES": '{"router": 2, "channels": 2}'})
    yield stack
    stack.stop()


def _router_assignments(log: str) -> dict[int, set[int]]:
    """Each router pid's latest partition assignment of chat.messages, from the stack's log (JSON lines)."""
    latest: dict[int, set[int]] = {}
    for line in log.splitlines():
        if ASSIGNED not in line or not line.startswith("{"):
            continue
        entry = json.loads(line)
        parts = str(entry["event"]).partition(ASSIGNED)[2]
        latest[int(entry["process"])] = {int(p) for p in re.findall(r"chat\.messages\[(\d+)\]", parts)}
    return latest


def _send(stack: RunningStack, headers: dict[str, str], conversations: list[str], per_conversation: int) -> list[str]:
    errors: list[str] = []

    def send_all(conv: str) -> None:
        with httpx.Client(base_url=stack.base_url, trust_env=False, timeout=10) as c:
            for i in range(per_conversation):
                r = c.post(
                    "/v1/messages",
                    json={"conversation_id": conv, "payload": {"type": "text", "text": f"s{i}"}},
                    headers=headers,
                )
                if r.status_code != 202:
                    errors.append(f"{r.status_code} {r.text}")

    threads = [threading.Thread(target=send_all, args=(c,)) for c in conversations]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def _setup(stack: RunningStack, n: int) -> tuple[dict[str, str], list[str]]:
    ana = _user(stack.http, "ana")
    people = [_user(stack.http, "sc", channel="telegram", external_id=str(uuid.uuid4().int % 10**9)) for _ in range(n)]
    return ana["headers"], [_conversation(stack.http, ana, p) for p in people]


def _assert_all_once(stack: RunningStack, conversations: list[str], total: int) -> None:
    stack.wait_until(
        lambda: _handed_over(stack.database_url, conversations) == total, 120, f"all {total} deliveries handed over"
    )
    sends = _sends(stack.data_dir, set(conversations))
    counts = Counter((s["message_id"], s["recipient"]) for s in sends)
    assert len(counts) == total
    assert max(counts.values()) == 1, "a delivery reached its platform twice"
    _assert_in_seq_order(sends)


def test_routers_split_the_partitions_and_a_third_takes_over_some_without_loss(scaled: RunningStack) -> None:
    routers = {scaled.runtime("router")["pid"], scaled.runtime("router-2")["pid"]}
    scaled.wait_until(
        lambda: (
            set(_router_assignments(scaled.log())) >= routers
            and all(_router_assignments(scaled.log())[p] for p in routers)
        ),
        60,
        "both routers own partitions",
    )
    split = _router_assignments(scaled.log())
    first, second = (split[p] for p in routers)
    assert first.isdisjoint(second)
    assert first | second == set(range(8))

    headers, conversations = _setup(scaled, 6)
    env = scaled.env | {
        "CHAT4ALL_DATABASE_URL": scaled.database_url,
        "CHAT4ALL_KAFKA_BOOTSTRAP": scaled.state()["kafka"]["bootstrap"],
    }
    third_log = scaled.data_dir.parent / "router-3.log"
    with third_log.open("wb") as out:
        third = subprocess.Popen(
            [sys.executable, "-m", "entrypoints.workers", "router"], env=env, cwd=REPO, stdout=out, stderr=out
        )
    try:
        sender = threading.Thread(target=lambda: _send(scaled, headers, conversations[:3], 150))
        sender.start()
        scaled.wait_until(
            lambda: bool(_router_assignments(third_log.read_text()).get(third.pid)),
            60,
            "the third router owns partitions",
        )
        sender.join()
        assert _send(scaled, headers, conversations[3:], 150) == []
        _assert_all_once(scaled, conversations, 900)
        owned = _router_assignments(scaled.log() + third_log.read_text())
        assert owned[third.pid], "the third router got no partition"
        assert set().union(*owned.values()) == set(range(8))
    finally:
        third.send_signal(signal.SIGTERM)
        try:
            third.wait(15)
        except subprocess.TimeoutExpired:
            third.kill()
            third.wait()


def test_a_broker_that_lost_everything_still_delivers_every_message(scaled: RunningStack) -> None:
    headers, conversations = _setup(scaled, 4)
    assert _send(scaled, headers, conversations, 50) == []
    kafka = scaled.state()["kafka"]["pid"]

    os.kill(kafka, signal.SIGKILL)  # in memory: topics, events and committed offsets are gone
    # Accepted while the broker is down or empty: the outbox keeps them, the sweeper re-drives the rest.
    assert _send(scaled, headers, conversations, 50) == []
    scaled.wait_until(lambda: scaled.state()["kafka"]["pid"] not in (kafka, None), 60, "the broker restarted")

    _assert_all_once(scaled, conversations, 400)


def test_the_scaled_stack_runs_what_it_was_asked_to(scaled: RunningStack) -> None:
    names = [rt["name"] for rt in scaled.state()["runtimes"]]
    assert names.count("router") + names.count("router-2") == 2
    assert {"channels", "channels-2"} <= set(names)
    assert Path(scaled.data_dir / "loopback-sends.jsonl").exists()
