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


def check_json_value(value: object, *, field: str, max_depth: int = 16) -> None:
    """Check that a client-supplied JSON value can be stored: no NUL characters, bounded depth.

    Raises:
        BusinessRuleViolation: it cannot.
    """

    def walk(v: object, depth: int) -> None:
        if depth > max_depth:
            raise BusinessRuleViolation(f"{field} is nested deeper than {max_depth} levels", field=field)
        if isinstance(v, str):
            if "\x00" in v:
                raise BusinessRuleViolation(f"{field} contains a NUL character", field=field)
        elif isinstance(v, dict):
            for k, item in v.items():
                walk(k, depth + 1)
                walk(item, depth + 1)
        elif isinstance(v, list | tuple):
            for item in v:
                walk(item, depth + 1)

    walk(value, 0)
