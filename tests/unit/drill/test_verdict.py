"""What the load drills compute from what they saw: recovery times, latencies, the verdict."""

from __future__ import annotations

from typing import Any

import pytest

from entrypoints.drill.load import Sender, Sent, latency_summary, percentile
from entrypoints.drill.runner import recovery, verdict

SENDER = Sender("s", {}, "t")


def sent(index: int, acked: float | None, delivered: float | None) -> Sent:
    return Sent(index, f"m{index}", SENDER, "c", due=0.0, acked=acked, delivered=delivered)


def test_recovery_is_when_the_last_message_acknowledged_before_the_disruption_was_delivered() -> None:
    messages = [sent(0, 1.0, 1.5), sent(1, 2.0, 9.0), sent(2, 5.0, 6.0), sent(3, 11.0, 11.2)]
    assert recovery(messages, at=3.0) == 6.0  # #1, acknowledged at 2, delivered at 9
    assert recovery(messages, at=10.0) == 0.0  # everything before 10 was delivered by then


def test_recovery_is_none_while_something_acknowledged_before_was_never_delivered() -> None:
    assert recovery([sent(0, 1.0, None), sent(1, 2.0, 3.0)], at=2.5) is None
    assert recovery([sent(0, 4.0, None)], at=2.5) == 0.0  # acknowledged after: not this disruption's


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([], 50) is None
    assert latency_summary([0.010, 0.020, 0.030]) == {
        "count": 3,
        "p50_ms": 20.0,
        "p95_ms": 30.0,
        "p99_ms": 30.0,
        "max_ms": 30.0,
    }


def _result(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "lost": 0,
        "duplicated": 0,
        "out_of_order": 0,
        "refused": 0,
        "refusals": [],
        "platform_received": 10,
        "delivered": 10,
        "disruptions": [{"what": "kill -9 router", "at_s": 3.0, "recovered_s": 1.0}],
    }
    return base | changes


def test_a_drill_where_every_guarantee_held_passes() -> None:
    assert verdict(_result()) == []


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"lost": 2, "delivered": 8, "platform_received": 8}, "2 accepted messages were not DELIVERED"),
        ({"duplicated": 1}, "1 duplicated platform sends"),
        ({"out_of_order": 3}, "3 platform sends out of per-conversation order"),
        ({"refused": 1, "refusals": ["422: bad"]}, "1 messages were never accepted"),
        ({"platform_received": 9}, "the platform received 9 messages, 10 are DELIVERED"),
        ({"disruptions": [{"what": "kill -9 kafka", "error": "gave up"}]}, "kill -9 kafka: gave up"),
    ],
)
def test_each_broken_guarantee_fails_the_drill_and_is_named(changes: dict[str, Any], says: str) -> None:
    failures = verdict(_result(**changes))
    assert len(failures) == 1
    assert failures[0].startswith(says)


def test_scale_out_phases_count_what_was_accepted_and_delivered_after_each_warm_up() -> None:
    from entrypoints.drill.load import Load
    from entrypoints.drill.runner import Disruption
    from entrypoints.drill.scale_out import WARM_UP_S, phases

    load = Load(target=None, run_id="r", senders=[SENDER], contacts={})  # type: ignore[arg-type]
    load.started = 0.0
    phase = 20.0
    # 10 messages a second; in phase 1 only every other one is delivered (0.05 s later), later all of them
    load.sent = [sent(i, acked=i / 10, delivered=(i / 10 + 0.05 if i >= 200 or i % 2 else None)) for i in range(600)]
    rows = phases(phase)(load, [Disruption("scale to 2", at=20.0), Disruption("scale to 3", at=40.0)])["phases"]

    span = phase - min(WARM_UP_S, phase / 3)
    assert [r["workers"] for r in rows] == [1, 2, 3]
    assert rows[0]["accepted_per_s"] == round(round(span * 10) / span, 1) == 10.0
    assert rows[0]["delivered_per_s"] == round(round(span * 5) / span, 1) == 5.0
    assert rows[0]["backlog_at_end"] == 100  # the even ones of phase 1, never delivered
    assert rows[1]["backlog_at_end"] == 100
    assert rows[2]["delivered_per_s"] == 10.0


def test_scale_out_reports_the_rate_at_which_the_last_workers_drained_the_backlog() -> None:
    from entrypoints.drill.load import Load
    from entrypoints.drill.runner import Disruption
    from entrypoints.drill.scale_out import phases

    load = Load(target=None, run_id="r", senders=[SENDER], contacts={})  # type: ignore[arg-type]
    load.started = 0.0
    # 10 a second for 60 s; the last 100 are delivered after the load: 80 at 20 a second (by 64.0), then a tail of 20
    # over 16 s
    after = [60 + (i + 1) / 20 for i in range(80)] + [64 + (i + 1) * 0.8 for i in range(20)]
    load.sent = [sent(i, acked=i / 10, delivered=(i / 10 if i < 500 else after[i - 500])) for i in range(600)]

    report = phases(20.0)(load, [Disruption("scale to 2", at=20.0), Disruption("scale to 3", at=40.0)])

    assert report["drain"] == {"workers": 3, "delivered": 100, "seconds": 20.0, "delivered_per_s": 20.0}
    assert report["notes"][-1] == (
        "after the load, 3 of each delivered the 100 waiting in 20.0s, the first three quarters at 20.0/s"
    )
