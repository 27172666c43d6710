"""The stores a contract suite runs on, and helpers to arrange their state."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from adapters.memory import InMemoryStore
from adapters.postgres import Pool, PostgresUnitOfWork
from application.ports import UnitOfWork
from domain.conversations import Conversation
from domain.deliveries import Delivery
from domain.messages import Message
from domain.users import User

Outboxed = tuple[str, str, dict[str, Any]]


class Backend(Protocol):
    """A source of units of work over one store, and a peek at what its outbox committed."""

    name: str

    def __call__(self) -> UnitOfWork: ...

    async def outbox(self) -> list[Outboxed]: ...


class MemoryBackend:
    name = "memory"

    def __init__(self) -> None:
        self.store = InMemoryStore()

    def __call__(self) -> UnitOfWork:
        return self.store.uow()

    async def outbox(self) -> list[Outboxed]:
        return [(topic, key, dict(event)) for topic, key, event in self.store.state.outbox]


class PostgresBackend:
    name = "postgres"

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    def __call__(self) -> UnitOfWork:
        return PostgresUnitOfWork(self.pool)

    async def outbox(self) -> list[Outboxed]:
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT topic, key, payload FROM outbox ORDER BY id")
            return [(topic, key, payload) for topic, key, payload in await cur.fetchall()]


# --- arranging stored state -------------------------------------------------------------


async def store(
    backend: Backend,
    *,
    users: Sequence[User] = (),
    conversations: Sequence[Conversation] = (),
    messages: Sequence[tuple[Message, Sequence[Delivery]]] = (),
) -> None:
    """Add and commit, in one unit of work."""
    async with backend() as uow:
        for u in users:
            await uow.users.add(u)
        for c in conversations:
            await uow.conversations.add(c)
        for m, deliveries in messages:
            await uow.messages.add(m, deliveries)
        await uow.commit()
