"""The delivery state machine: receipts arrive late, twice and out of order, and status only moves forward."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from domain.channels import Channel
from domain.deliveries import (
    IMPLIED_BY_READ,
    LAST_REPORTED,
    RANK,
    Delivery,
    DeliveryStatus,
    StatusChange,
    can_move,
    is_final,
    overall_status,
)
from tests.builders import T0, a_delivery

SENT, FAILED, DELIVERED, READ = (
    DeliveryStatus.SENT,
    DeliveryStatus.FAILED,
    DeliveryStatus.DELIVERED,
    DeliveryStatus.READ,
)


def test_a_new_delivery_is_sent_with_one_history_entry() -> None:
    sut = a_delivery(at=T0)

    assert sut.status is SENT
    assert sut.updated_at == T0
    assert sut.error is None
    assert sut.history == [StatusChange(SENT, T0)]


def test_the_happy_path_records_each_step() -> None:
    sut = a_delivery()
    t1, t2 = T0 + timedelta(seconds=1), T0 + timedelta(seconds=2)

    assert sut.advance(DELIVERED, at=t1)
    assert sut.advance(READ, at=t2)

    assert sut.status is READ
    assert sut.updated_at == t2
    assert [(h.status, h.at) for h in sut.history] == [(SENT, T0), (DELIVERED, t1), (READ, t2)]


@pytest.mark.parametrize("before", [SENT, FAILED])
def test_a_read_that_skips_delivered_fills_it_in(before: DeliveryStatus) -> None:
    sut = a_delivery()
    sut.advance(before, at=T0)
    t1 = T0 + timedelta(seconds=1)

    assert sut.advance(READ, at=t1)

    assert sut.status is READ
    assert sut.history[-2:] == [StatusChange(DELIVERED, t1, IMPLIED_BY_READ), StatusChange(READ, t1)]


def test_a_change_stamped_before_the_last_one_is_recorded_at_the_last_ones_time() -> None:
    sut = a_delivery(at=T0 + timedelta(milliseconds=900))

    assert sut.advance(DELIVERED, at=T0)  # a platform clock in whole seconds

    later = T0 + timedelta(milliseconds=900)
    assert sut.history == [StatusChange(SENT, later), StatusChange(DELIVERED, later)]
    assert sut.updated_at == T0 + timedelta(milliseconds=900)


@pytest.mark.parametrize(("current", "late"), [(READ, DELIVERED), (READ, SENT), (DELIVERED, SENT), (READ, FAILED)])
def test_a_late_receipt_is_ignored(current: DeliveryStatus, late: DeliveryStatus) -> None:
    sut = a_delivery()
    sut.advance(current, at=T0 + timedelta(seconds=1))
    before = list(sut.history)

    assert sut.advance(late, at=T0 + timedelta(seconds=2)) is False
    assert sut.status is current
    assert sut.history == before
    assert sut.updated_at == T0 + timedelta(seconds=1)


@pytest.mark.parametrize("status", list(DeliveryStatus))
def test_a_repeated_receipt_is_ignored(status: DeliveryStatus) -> None:
    sut = a_delivery()
    sut.advance(status, at=T0 + timedelta(seconds=1))
    entries = len(sut.history)

    assert sut.advance(status, at=T0 + timedelta(seconds=2)) is False
    assert len(sut.history) == entries


def test_a_failure_keeps_its_error_until_a_device_reports_delivery() -> None:
    sut = a_delivery()

    assert sut.advance(FAILED, at=T0, error="provider said no")
    assert (sut.status, sut.error) == (FAILED, "provider said no")
    assert sut.history[-1] == StatusChange(FAILED, T0, "provider said no")

    assert sut.advance(DELIVERED, at=T0 + timedelta(seconds=1), error="ignored")
    assert (sut.status, sut.error) == (DELIVERED, None)


@pytest.mark.parametrize("current", list(DeliveryStatus))
@pytest.mark.parametrize("target", list(DeliveryStatus))
def test_can_move_only_up_the_rank(current: DeliveryStatus, target: DeliveryStatus) -> None:
    assert can_move(current, target) is (RANK[target] > RANK[current])


def test_the_key_is_message_recipient_and_channel() -> None:
    sut = a_delivery()

    assert sut.key == (sut.message_id, sut.recipient.key, sut.channel)


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ([], SENT),
        ([READ], READ),
        ([READ, DELIVERED], DELIVERED),
        ([READ, SENT, DELIVERED], SENT),
        ([READ, FAILED], READ),
        ([FAILED, DELIVERED, FAILED], DELIVERED),
        ([FAILED], FAILED),
        ([FAILED, FAILED], FAILED),
    ],
)
def test_overall_status_is_the_lowest_live_one_and_failed_only_when_all_failed(
    statuses: list[DeliveryStatus], expected: DeliveryStatus
) -> None:
    assert overall_status(statuses) is expected


@given(st.lists(st.sampled_from(list(DeliveryStatus))))
def test_overall_status_ignores_order_and_accepts_any_iterable(statuses: list[DeliveryStatus]) -> None:
    result = overall_status(iter(statuses))

    assert result is overall_status(reversed(statuses))
    assert result is overall_status(sorted(statuses))
    if statuses and all(s is FAILED for s in statuses):
        assert result is FAILED
    elif statuses:
        assert result is min((s for s in statuses if s is not FAILED), key=RANK.__getitem__)


# --- order independence -----------------------------------------------------------------

events = st.lists(st.tuples(st.sampled_from(list(DeliveryStatus)), st.integers(0, 1000)), max_size=12)


def final_status(applied: list[tuple[DeliveryStatus, int]]) -> DeliveryStatus:
    sut = a_delivery()
    for status, second in applied:
        sut.advance(status, at=T0 + timedelta(seconds=second), error="e" if status is FAILED else None)
    return sut.status


@given(events, st.data())
def test_the_final_status_depends_only_on_the_set_of_events(
    applied: list[tuple[DeliveryStatus, int]], data: st.DataObject
) -> None:
    # Reorder and duplicate the same receipts: the outcome is the highest status among them.
    extra = data.draw(st.lists(st.sampled_from(applied), max_size=8)) if applied else []
    shuffled = data.draw(st.permutations(applied + extra))

    expected = max([SENT, *(s for s, _ in applied)], key=RANK.__getitem__)
    assert final_status(applied) is expected
    assert final_status(list(shuffled)) is expected


# --- the state machine ------------------------------------------------------------------


class DeliveryMachine(RuleBasedStateMachine):
    """Feed one delivery arbitrary receipts at increasing times and check it only moves forward."""

    def __init__(self) -> None:
        super().__init__()
        self.sut: Delivery = a_delivery(at=T0)
        self.now: datetime = T0
        self.applied: list[DeliveryStatus] = [SENT]
        self.changes = 0
        self.last_rank = RANK[SENT]
        self.last_status = SENT

    @initialize()
    def check_start(self) -> None:
        assert self.sut.history == [StatusChange(SENT, T0)]

    @rule(status=st.sampled_from(list(DeliveryStatus)), step=st.integers(0, 3600))
    def advance(self, status: DeliveryStatus, step: int) -> None:
        self.now += timedelta(seconds=step)
        before = self.sut.status
        changed = self.sut.advance(status, at=self.now, error="boom" if status is FAILED else None)
        self.applied.append(status)
        assert changed is (RANK[status] > RANK[before])
        if changed:
            self.changes += 1
            if status is READ and RANK[before] < RANK[DELIVERED]:
                self.changes += 1  # the DELIVERED it skipped is filled in
                assert self.sut.history[-2] == StatusChange(DELIVERED, self.now, IMPLIED_BY_READ)
            assert self.sut.status is status
            assert self.sut.updated_at == self.now
            assert self.sut.history[-1] == StatusChange(status, self.now, "boom" if status is FAILED else None)
        else:
            assert self.sut.status is before

    @precondition(lambda self: len(self.applied) > 1)
    @rule(data=st.data(), step=st.integers(0, 3600))
    def repeat_an_earlier_event(self, data: st.DataObject, step: int) -> None:
        status = data.draw(st.sampled_from(self.applied))
        before = (self.sut.status, list(self.sut.history), self.sut.updated_at)

        # Every status applied so far is at or below the current one, so a repeat changes nothing.
        assert self.sut.advance(status, at=self.now + timedelta(seconds=step)) is False
        assert (self.sut.status, self.sut.history, self.sut.updated_at) == before
        self.applied.append(status)

    @invariant()
    def rank_never_decreases(self) -> None:
        assert RANK[self.sut.status] >= self.last_rank
        self.last_rank = RANK[self.sut.status]

    @invariant()
    def history_has_one_entry_per_actual_change(self) -> None:
        assert len(self.sut.history) == 1 + self.changes
        ranks = [RANK[h.status] for h in self.sut.history]
        assert ranks == sorted(set(ranks))
        times = [h.at for h in self.sut.history]
        assert times == sorted(times)
        assert self.sut.history[-1].status is self.sut.status

    @invariant()
    def status_is_the_highest_rank_applied(self) -> None:
        assert self.sut.status is max(self.applied, key=RANK.__getitem__)

    @invariant()
    def error_only_while_failed(self) -> None:
        assert (self.sut.error is not None) is (self.sut.status is FAILED)


TestDeliveryMachine = DeliveryMachine.TestCase
TestDeliveryMachine.settings = settings(max_examples=200, stateful_step_count=30, deadline=None)


# --- where a status stops by design -------------------------------------------------------------


@pytest.mark.parametrize(
    ("channel", "status", "handed_over", "final"),
    [
        (Channel.TELEGRAM, SENT, True, True),  # Telegram reports nothing after the hand-over
        (Channel.TELEGRAM, SENT, False, False),  # not sent yet
        (Channel.WHATSAPP, SENT, True, False),  # receipts are still to come
        (Channel.WHATSAPP, DELIVERED, True, False),
        (Channel.INSTAGRAM, DELIVERED, True, False),
        (Channel.INTERNAL, DELIVERED, False, False),
        (Channel.MESSENGER, READ, True, True),
        (Channel.WHATSAPP, FAILED, False, True),
    ],
)
def test_a_delivery_is_final_when_nothing_more_can_move_it(
    channel: Channel, status: DeliveryStatus, handed_over: bool, final: bool
) -> None:
    sut = a_delivery(channel=channel)
    sut.advance(status, at=T0 + timedelta(seconds=1))

    assert is_final(sut, handed_over=handed_over) is final


def test_every_channel_has_a_last_reported_status() -> None:
    assert set(LAST_REPORTED) == set(Channel)
