"""One scripted session through the real bus gives the same answers on PostgreSQL as in memory."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from adapters.memory import InMemoryStore
from adapters.postgres import Pool, PostgresUnitOfWork
from adapters.security import JwtTokenIssuer, TokenSettings
from application import commands as c
from application.bus import MessageBus
from application.errors import ApplicationError
from application.handlers import Deps, Settings
from application.ports import UnitOfWork
from domain.conversations import ConversationType
from domain.errors import DomainError
from domain.ids import MessageId
from tests.builders import FakeClock, FakePasswordHasher

pytestmark = pytest.mark.integration


class CountingIds:
    def __init__(self) -> None:
        self.n = 0

    def new(self) -> uuid.UUID:
        self.n += 1
        return uuid.UUID(int=self.n * 7919)


async def session(uow: Callable[[], UnitOfWork]) -> list[Any]:
    """Every answer of a session that touches every repository; errors are answers too."""
    clock = FakeClock()
    bus = MessageBus(
        Deps(
            uow=uow,
            clock=clock,
            ids=CountingIds(),
            hasher=FakePasswordHasher(),
            tokens=JwtTokenIssuer(TokenSettings(secret="x" * 32)),
            settings=Settings(history_max=3, list_max=2),
        )
    )
    answers: list[Any] = []

    async def ask(command: object) -> Any:
        clock.advance(timedelta(seconds=1, microseconds=17))
        try:
            answer = await bus.handle(command)
        except (ApplicationError, DomainError) as e:
            answer = (type(e).__name__, str(e), getattr(e, "field", None))
        answers.append(answer)
        return answer

    alice, bob, carol = [
        (await ask(c.RegisterUser(n, "a long enough password"))).user_id for n in ("alice", "bob", "carol")
    ]
    await ask(c.RegisterUser("alice", "another long password"))
    await ask(c.GetUser(bob))
    await ask(c.LinkIdentity(bob, "telegram", "12345"))
    await ask(c.LinkIdentity(bob, "instagram", "@Bob.B"))
    await ask(c.LinkIdentity(carol, "telegram", "12345"))
    await ask(c.LinkIdentity(bob, "telegram", "999"))
    await ask(c.ListIdentities(bob))
    await ask(c.UnlinkIdentity(bob, "instagram"))
    await ask(c.UnlinkIdentity(bob, "instagram"))
    private = (await ask(c.CreateConversation(alice, ConversationType.PRIVATE, ["bob"]))).conversation_id
    group = (
        await ask(
            c.CreateConversation(
                alice, ConversationType.GROUP, ["bob", str(carol), "whatsapp:+5511999998888"], {"topic": "launch"}
            )
        )
    ).conversation_id
    await ask(c.CreateConversation(carol, ConversationType.GROUP, ["alice", "telegram:12345"]))
    await ask(c.GetConversation(bob, group))
    await ask(
        c.GetConversation(
            bob, (await ask(c.CreateConversation(alice, ConversationType.PRIVATE, ["carol"]))).conversation_id
        )
    )
    first = await ask(c.ListConversations(alice, limit=2))
    await ask(c.ListConversations(alice, limit=2, cursor=first.next_cursor))
    fixed = MessageId(uuid.UUID(int=42))
    for i in range(5):
        await ask(c.SendMessage(sender=alice, conversation_id=group, payload={"type": "text", "text": f"hi {i}"}))
    await ask(c.SendMessage(sender=bob, conversation_id=group, payload={"type": "text", "text": "yo"}, to=["alice"]))
    await ask(
        c.SendMessage(
            sender=alice,
            conversation_id=group,
            payload={"type": "text", "text": "tg"},
            channels=["telegram", "whatsapp"],
        )
    )
    sent = await ask(
        c.SendMessage(sender=alice, conversation_id=private, payload={"type": "text", "text": "x"}, message_id=fixed)
    )
    await ask(
        c.SendMessage(sender=alice, conversation_id=private, payload={"type": "text", "text": "x"}, message_id=fixed)
    )
    await ask(
        c.SendMessage(sender=alice, conversation_id=private, payload={"type": "text", "text": "y"}, message_id=fixed)
    )
    await ask(c.SendMessage(sender=carol, conversation_id=private, payload={"type": "text", "text": "z"}))
    page = await ask(c.GetHistory(bob, group, limit=3))
    await ask(c.GetHistory(bob, group, limit=3, before_seq=page.items[0].seq))
    await ask(c.GetHistory(carol, group, limit=3, after_seq=1))
    await ask(c.GetHistory(carol, group, limit=3, since=page.items[0].created_at))
    await ask(c.MarkRead(bob, page.items[1].message_id))
    await ask(c.MarkRead(bob, page.items[1].message_id))
    await ask(c.MarkRead(alice, sent.message_id))
    await ask(c.GetMessageStatus(alice, page.items[1].message_id))
    await ask(c.GetMessageStatus(bob, page.items[2].message_id))
    await ask(c.ListConversations(carol, limit=2))
    return answers


async def test_postgres_answers_exactly_as_the_in_memory_twin(pool: Pool) -> None:
    expected = await session(InMemoryStore().uow)
    actual = await session(lambda: PostgresUnitOfWork(pool))

    assert len(actual) == len(expected) > 40
    for i, (got, want) in enumerate(zip(actual, expected, strict=True)):
        assert got == want, f"answer {i} differs"
    errors = [a for a in expected if isinstance(a, tuple)]
    assert {e[0] for e in errors} >= {"Conflict", "NotFound", "Forbidden"}
