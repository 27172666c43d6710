"""The root of every error the domain raises."""

from __future__ import annotations

from typing import Protocol


class DomainError(Exception):
    """Something the domain's rules do not allow."""


class BusinessRule(Protocol):
    """A named invariant stakeholders care about."""

    message: str

    def is_broken(self) -> bool:
        """Return True when the rule does not hold."""
        ...


class BusinessRuleViolation(DomainError):
    """A business rule was broken; ``field`` names the offending input when known."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidTransition(DomainError):
    """A state machine was asked for a move its table forbids."""


def check_rule(rule: BusinessRule, *, field: str | None = None) -> None:
    """Raise BusinessRuleViolation when ``rule`` is broken."""
    if rule.is_broken():
        raise BusinessRuleViolation(rule.message, field=field)
