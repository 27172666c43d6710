"""Arranging and inspecting state for the PostgreSQL integration tests."""

from __future__ import annotations

from psycopg import sql

from adapters.postgres import Pool
from application import commands as c
from application.bus import MessageBus
from domain.conversations import ConversationType
from domain.ids import ConversationId, UserId


async def register(bus: MessageBus, username: str) -> UserId:
    view = await bus.handle(c.RegisterUser(username, "a long enough password"))
    user_id: UserId = view.user_id
    return user_id


async def start(bus: MessageBus, creator: UserId, *members: str) -> ConversationId:
    kind = ConversationType.PRIVATE if len(members) == 1 else ConversationType.GROUP
    view = await bus.handle(c.CreateConversation(creator, kind, list(members)))
    conversation_id: ConversationId = view.conversation_id
    return conversation_id


async def table_contents(pool: Pool) -> dict[str, list[str]]:
    """Every row of every table, as text, so any insert, update or delete shows."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1"
        )
        tables = [name for (name,) in await cur.fetchall()]
        out: dict[str, list[str]] = {}
        for name in tables:
            rows = await conn.execute(sql.SQL("SELECT t::text FROM {} t ORDER BY 1").format(sql.Identifier(name)))
            out[name] = [text for (text,) in await rows.fetchall()]
    return out


async def scalar(pool: Pool, query: sql.SQL | str, *params: object) -> object:
    async with pool.connection() as conn:
        cur = await conn.execute(query, params)
        row = await cur.fetchone()
    assert row is not None
    return row[0]
