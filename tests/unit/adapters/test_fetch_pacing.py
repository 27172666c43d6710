"""How long a consumer's fetches wait: short while records flow, longer once it has been idle a while."""

from __future__ import annotations

import pytest

from adapters.kafka.consumer import FetchPacing

pytestmark = pytest.mark.unit


def test_fetches_wait_briefly_until_the_consumer_has_been_idle_for_a_while() -> None:
    pacing = FetchPacing(busy_ms=20, idle_ms=100, idle_after_s=1.0)
    assert pacing.after_poll(True, now=10.0) == 20
    assert pacing.after_poll(False, now=10.5) == 20  # a pause between records is not idleness
    assert pacing.after_poll(False, now=10.99) == 20
    assert pacing.after_poll(False, now=11.0) == 100
    assert pacing.after_poll(False, now=60.0) == 100


def test_records_bring_the_short_wait_back_at_once() -> None:
    pacing = FetchPacing(busy_ms=20, idle_ms=100, idle_after_s=1.0)
    assert pacing.after_poll(False, now=1e9) == 100  # long idle
    assert pacing.after_poll(True, now=1e9 + 1) == 20
    assert pacing.after_poll(False, now=1e9 + 1.5) == 20


def test_the_same_wait_for_both_turns_pacing_off() -> None:
    pacing = FetchPacing(busy_ms=20, idle_ms=20)
    assert {pacing.after_poll(got, now=t) for got, t in [(True, 0.0), (False, 5.0), (False, 500.0)]} == {20}


@pytest.mark.parametrize(("busy", "idle"), [(0, 100), (100, 20)])
def test_a_wait_that_is_not_positive_or_an_idle_wait_shorter_than_the_busy_one_is_refused(busy: int, idle: int) -> None:
    with pytest.raises(ValueError, match="fetch waits"):
        FetchPacing(busy_ms=busy, idle_ms=idle)
