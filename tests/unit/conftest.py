"""Fixtures for the unit tests: pure domain tests and the application core on in-memory adapters."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.builders import Chat4All, FakeClock, a_chat4all

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in item.path.parents:
            item.add_marker(pytest.mark.unit)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def app(clock: FakeClock) -> Chat4All:
    return a_chat4all(clock=clock)
