"""The committable positions of a consumer that finishes records in any order."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.kafka.consumer import Offsets

pytestmark = pytest.mark.unit

P = ("chat.outbound.telegram", 0)
Q = ("chat.outbound.telegram", 1)


def test_a_position_waits_for_the_first_unfinished_record_of_its_partition() -> None:
    offsets = Offsets()
    for offset in (10, 11, 12):
        offsets.taken(*P, offset)
    offsets.taken(*Q, 5)

    offsets.finished(*P, 12)
    offsets.finished(*P, 11)
    assert offsets.positions() == {P: 10, Q: 5}  # 10 is unfinished: nothing after it may be committed

    offsets.finished(*P, 10)
    offsets.finished(*Q, 5)
    assert offsets.positions() == {P: 13, Q: 6}  # all finished: the record after the last one taken


def test_gaps_left_by_skipped_records_do_not_hold_a_position_back() -> None:
    offsets = Offsets()
    offsets.taken(*P, 3)
    offsets.taken(*P, 7)  # 4-6 were not jobs (poll skipped them)

    offsets.finished(*P, 3)
    assert offsets.positions() == {P: 7}
    offsets.finished(*P, 7)
    assert offsets.positions() == {P: 8}


def test_only_moved_positions_are_uncommitted_and_forgotten_partitions_are_left_alone() -> None:
    offsets = Offsets()
    offsets.taken(*P, 0)
    offsets.taken(*Q, 0)
    offsets.finished(*P, 0)
    assert offsets.uncommitted() == {P: 1, Q: 0}

    offsets.committed({P: 1, Q: 0})
    assert offsets.uncommitted() == {}

    offsets.forget([Q])
    offsets.finished(*Q, 0)  # finished after its partition went to another member: ignored
    assert offsets.positions() == {P: 1}
    assert offsets.positions([P, Q]) == {P: 1}


@given(st.permutations(range(20)), st.integers(min_value=0, max_value=20))
def test_the_position_is_the_first_offset_not_finished(order: list[int], finished: int) -> None:
    offsets = Offsets()
    for offset in range(20):
        offsets.taken(*P, offset)
    done = set(order[:finished])
    for offset in order[:finished]:
        offsets.finished(*P, offset)

    expected = min(set(range(20)) - done, default=20)
    assert offsets.positions() == {P: expected}
