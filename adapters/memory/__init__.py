"""In-memory twins of every port, for unit tests, BDD specs and contract tests."""

from adapters.memory.unit_of_work import InMemoryStore, InMemoryUnitOfWork

__all__ = ["InMemoryStore", "InMemoryUnitOfWork"]
