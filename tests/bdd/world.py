"""The scenario's memory and the step-pattern types shared by every BDD step module."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Coroutine
from datetime import datetime
from typing import Any, TypeVar

import attrs
import parse
from pytest_bdd import parsers

from application import views as v
from application.errors import ApplicationError
from application.handlers import MESSAGES_TOPIC, STATUS_TOPIC
from domain.errors import DomainError
from domain.ids import ConversationId, MessageId
from tests.builders import T0, Chat4All

T = TypeVar("T")


@parse.with_pattern(r"[^,\s]+(?:, [^,\s]+)*")
def names(text: str) -> list[str]:
    """``ana, bruno, carla``"""
    return text.split(", ")


@parse.with_pattern(r'"[^"]*"(?:, "[^"]*")*')
def texts(text: str) -> list[str]:
    """``"one", "two", "three"``"""
    return re.findall(r'"([^"]*)"', text)


@parse.with_pattern(r"\d\d:\d\d")
def clock_time(text: str) -> datetime:
    """``09:05`` on the day the scenario runs."""
    hour, minute = map(int, text.split(":"))
    return T0.replace(hour=hour, minute=minute)


TYPES = {"Names": names, "Texts": texts, "Time": clock_time}


def step(pattern: str) -> Any:
    """A ``parsers.parse`` pattern that knows the Names, Texts and Time types."""
    return parsers.parse(pattern, extra_types=TYPES)


@attrs.define
class World:
    """What a scenario has done so far."""

    runner: asyncio.Runner
    app: Chat4All
    conversation: ConversationId | None = None
    conversation_view: v.ConversationView | None = None
    sent: dict[str, v.Accepted] = attrs.Factory(dict)  # by text
    message_ids: dict[str, MessageId] = attrs.Factory(dict)  # the ids the app chose, by label ("M1")
    answers: list[v.Accepted] = attrs.Factory(list)
    error: Exception | None = None
    page: v.HistoryView | None = None
    reader: str | None = None
    page_size: int = 50
    receipts: dict[str, v.ReadReceipt] = attrs.Factory(dict)
    status_events_seen: int = 0

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.runner.run(coro)

    def attempt(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Run a step whose refusal the scenario expects to check."""
        self.error = None
        try:
            return self.run(coro)
        except (ApplicationError, DomainError) as e:
            self.error = e
            return None

    @property
    def conversation_id(self) -> ConversationId:
        assert self.conversation is not None, "no conversation was started"
        return self.conversation

    def message(self, text: str) -> MessageId:
        return self.sent[text].message_id

    def status_events(self) -> list[Any]:
        return self.app.events(STATUS_TOPIC)

    def message_events(self) -> list[Any]:
        return self.app.events(MESSAGES_TOPIC)

    def error_message(self) -> str:
        assert self.error is not None, "the step was not refused"
        return getattr(self.error, "message", str(self.error))
