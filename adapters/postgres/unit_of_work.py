"""The PostgreSQL unit of work: one pooled connection and one transaction over every repository."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, LiteralString, Self, TypeVar
from uuid import UUID

import attrs
import psycopg
from psycopg import AsyncConnection, sql
from psycopg.abc import Params
from psycopg.abc import QueryNoTemplate as Query
from psycopg.rows import BaseRowFactory, DictRow, class_row, dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from adapters.tracing import current_trace_headers
from application.cursors import SyncPosition, decode_conversation_cursor
from application.errors import Conflict, Unavailable
from application.ports import (
    AddressBindings,
    ApiClientRepository,
    ConversationPage,
    ConversationRepository,
    ConversationSummary,
    DeliveryKey,
    DueDelivery,
    DuplicateMessage,
    EarlyReceipt,
    EarlyReceipts,
    EarlyWatermark,
    EarlyWatermarks,
    HistoryQuery,
    IdentityRepository,
    MessageOrigin,
    MessageRepository,
    Outbox,
    OutboxRecord,
    PageRequest,
    RefreshTokenRepository,
    RoutingProgress,
    SendClaim,
    SendContext,
    SendLedger,
    SendLookups,
    UploadRepository,
    UserRepository,
    WebhookRepository,
)
from domain.channels import Channel, ChannelAddress
from domain.conversations import Conversation, ConversationType, Participant
from domain.deliveries import RANK, Delivery, DeliveryStatus, StatusChange
from domain.ids import ClientId, ConversationId, FileId, MessageId, UserId, WebhookDeliveryId, WebhookId
from domain.messages import Content, FileContent, FileInfo, Message, TextContent
from domain.uploads import UploadSession, UploadStatus
from domain.users import ApiClient, ChannelIdentity, User
from domain.webhooks import Webhook, WebhookDelivery, WebhookDeliveryState, WebhookEvent

R = TypeVar("R")


@contextmanager
def _translated_errors() -> Iterator[None]:
    # OperationalError covers a lost or refused connection, pool timeouts, deadlocks and
    # statement timeouts: all of them are worth retrying, none of them is the caller's fault.
    try:
        yield
    except psycopg.OperationalError as e:
        # The cause stays chained for the logs; the message is safe to show to clients.
        raise Unavailable("the database is unavailable; retry later") from e


# Every outbox row of a unit of work in one statement, whatever their number.
_INSERT_OUTBOX = """
INSERT INTO outbox (topic, key, payload, headers)
SELECT x.topic, x.key, x.payload, x.headers
FROM jsonb_to_recordset(%s) AS x(topic text, key text, payload jsonb, headers jsonb)
"""


def _is_read(query: Query) -> bool:
    """True for a statement that neither writes nor locks; it may run before the transaction.

    Composed statements are the history and listing SELECTs.
    """
    if isinstance(query, sql.Composable):
        return True
    text = query.decode() if isinstance(query, bytes) else str(query)
    head = text.lstrip()[:6].upper()
    return head == "SELECT" and "FOR UPDATE" not in text.upper()


class _Session:
    """The connection of the active unit of work, with infrastructure errors translated.

    The transaction starts lazily: reads before the first write run on their own (under READ
    COMMITTED every statement takes a fresh snapshot anyway), and the first write or lock carries
    BEGIN in the same round trip. A read-only unit of work thus costs one round trip per query,
    with no BEGIN or ROLLBACK.
    """

    def __init__(self) -> None:
        self.conn: AsyncConnection[Any] | None = None
        self.in_transaction = False
        self.deferred: list[tuple[Query, Params]] = []
        self.clashes: dict[str, Callable[[], Exception]] = {}
        self.saved_histories: list[tuple[Delivery, int]] = []
        """History lengths saved in this transaction, remembered once it commits."""

    @property
    def connection(self) -> AsyncConnection[Any]:
        if self.conn is None:
            raise RuntimeError("the unit of work is not active: use it inside 'async with'")
        return self.conn

    async def _run(self, row: BaseRowFactory[Any], query: Query, params: Params | None, *, fetch: bool) -> Any:
        conn = self.connection
        with _translated_errors():
            if self.in_transaction or _is_read(query):
                async with conn.cursor(row_factory=row) as cur:
                    await cur.execute(query, params)
                    return await cur.fetchall() if fetch else cur.rowcount
            async with conn.pipeline() as pipeline:
                await conn.execute("BEGIN")
                self.in_transaction = True
                cur = conn.cursor(row_factory=row)
                await cur.execute(query, params)
                await pipeline.sync()
            try:
                return await cur.fetchall() if fetch else cur.rowcount
            finally:
                await cur.close()

    async def fetch(self, row: BaseRowFactory[R], query: Query, params: Params | None = None) -> list[R]:
        found: list[R] = await self._run(row, query, params, fetch=True)
        return found

    async def rows(self, query: Query, params: Params | None = None) -> list[DictRow]:
        return await self.fetch(dict_row, query, params)

    async def row(self, query: Query, params: Params | None = None) -> DictRow | None:
        found = await self.rows(query, params)
        return found[0] if found else None

    async def rows_together(self, queries: Sequence[tuple[Query, Params]]) -> list[list[DictRow]]:
        """Several reads in one round trip (a pipeline); each query's rows, in order."""
        conn = self.connection
        if any(not _is_read(q) for q, _ in queries):
            raise ValueError("only reads travel together")
        with _translated_errors():
            cursors = []
            async with conn.pipeline():
                for query, params in queries:
                    cur = conn.cursor(row_factory=dict_row)
                    await cur.execute(query, params)
                    cursors.append(cur)
            try:
                return [await cur.fetchall() for cur in cursors]
            finally:
                for cur in cursors:
                    await cur.close()

    async def lock_then_read(self, lock: Query, read: Query, params: Params) -> list[DictRow]:
        """Lock rows, then read them, in one round trip.

        The read is a statement of its own, so its snapshot is taken once the locks are held: it
        sees what was committed while the lock waited (a locking read alone would re-check its own
        rows but not the rows its subqueries join).
        """
        conn = self.connection
        with _translated_errors():
            async with conn.pipeline():
                if not self.in_transaction:
                    await conn.execute("BEGIN")
                    self.in_transaction = True
                await conn.execute(lock, params)
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(read, params)
            try:
                return await cur.fetchall()
            finally:
                await cur.close()

    async def execute(self, query: Query, params: Params | None = None) -> int:
        """Run a statement; return the number of rows it touched."""
        count: int = await self._run(dict_row, query, params, fetch=False)
        return count

    async def execute_many(self, query: Query, params: Sequence[Params]) -> None:
        if not params:
            return
        with _translated_errors():
            if not self.in_transaction:
                await self.connection.execute("BEGIN")
                self.in_transaction = True
            async with self.connection.cursor() as cur:
                await cur.executemany(query, params)  # pipelined: one round trip for the batch

    def defer(self, query: Query, params: Params, *, clashes: Mapping[str, Callable[[], Exception]]) -> None:
        """Run an insert with the COMMIT, in its round trip, for the last writes of a transaction
        that holds row locks: they are then held for one round trip less.

        A unique violation of a constraint named in ``clashes`` raises what it maps to from
        ``commit()``; nothing is committed.
        """
        self.deferred.append((query, params))
        self.clashes.update(clashes)

    async def commit(self, outbox: Sequence[Mapping[str, Any]]) -> None:
        """COMMIT, with the deferred inserts and any outbox rows in the same round trip."""
        conn = self.connection
        deferred, self.deferred = self.deferred, []
        clashes, self.clashes = self.clashes, {}
        saved, self.saved_histories = self.saved_histories, []
        with _translated_errors():
            if not outbox and not deferred:
                if self.in_transaction:
                    await conn.execute("COMMIT")
                self.in_transaction = False
                _remember_saved(saved)
                return
            try:
                async with conn.pipeline():
                    if not self.in_transaction:
                        await conn.execute("BEGIN")
                        self.in_transaction = True
                    for query, params in deferred:
                        await conn.execute(query, params)
                    if outbox:
                        await conn.execute(_INSERT_OUTBOX, (Jsonb(list(outbox)),))
                    await conn.execute("COMMIT")
            except psycopg.errors.UniqueViolation as e:
                # The pipeline stopped at the failing insert; the COMMIT after it never ran.
                clash = clashes.get(e.diag.constraint_name or "")
                if clash is None:
                    raise
                raise clash() from e
            self.in_transaction = False
            _remember_saved(saved)

    async def rollback(self) -> None:
        self.deferred.clear()
        self.clashes.clear()
        self.saved_histories.clear()
        if self.in_transaction:
            self.in_transaction = False
            with _translated_errors():
                await self.connection.execute("ROLLBACK")


class _Repo:
    def __init__(self, db: _Session) -> None:
        self._db = db


# --- users and clients -----------------------------------------------------------------

_USER = "SELECT id, username, password_hash, display_name, created_at FROM users"


class PostgresUserRepository(_Repo):
    async def add(self, user: User) -> None:
        inserted = await self._db.execute(
            "INSERT INTO users (id, username, password_hash, display_name, created_at)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (username) DO NOTHING",
            (user.id, user.username, user.password_hash, user.display_name, user.created_at),
        )
        if not inserted:
            raise Conflict(f"username {user.username!r} is taken", field="username")

    async def get(self, user_id: UserId) -> User | None:
        found = await self._db.fetch(class_row(User), _USER + " WHERE id = %s", (user_id,))
        return found[0] if found else None

    async def get_by_username(self, username: str) -> User | None:
        found = await self._db.fetch(class_row(User), _USER + " WHERE username = %s", (username,))
        return found[0] if found else None

    async def get_many(self, user_ids: Sequence[UserId]) -> Mapping[UserId, User]:
        if not user_ids:
            return {}
        found = await self._db.fetch(class_row(User), _USER + " WHERE id = ANY(%s)", (list(user_ids),))
        return {u.id: u for u in found}


class PostgresApiClientRepository(_Repo):
    async def add(self, client: ApiClient) -> None:
        await self._db.execute(
            "INSERT INTO api_clients (id, owner_id, name, secret_hash, created_at) VALUES (%s, %s, %s, %s, %s)",
            (client.id, client.owner_id, client.name, client.secret_hash, client.created_at),
        )

    async def get(self, client_id: ClientId) -> ApiClient | None:
        found = await self._db.fetch(
            class_row(ApiClient),
            "SELECT id, owner_id, name, secret_hash, created_at FROM api_clients WHERE id = %s",
            (client_id,),
        )
        return found[0] if found else None


# --- identities ------------------------------------------------------------------------


def _identity(row: DictRow) -> ChannelIdentity:
    address = ChannelAddress(channel=Channel(row["channel"]), external_id=row["external_id"])
    return ChannelIdentity(user_id=row["user_id"], address=address, linked_at=row["linked_at"])


class PostgresIdentityRepository(_Repo):
    async def add(self, identity: ChannelIdentity) -> None:
        address = identity.address
        inserted = await self._db.execute(
            "INSERT INTO identities (channel, external_id, user_id, linked_at) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT DO NOTHING",
            (address.channel.value, address.external_id, identity.user_id, identity.linked_at),
        )
        if inserted:
            return
        # Which rule was broken? The address first, as the in-memory twin reports it.
        taken = await self._db.row(
            "SELECT 1 FROM identities WHERE channel = %s AND external_id = %s",
            (address.channel.value, address.external_id),
        )
        if taken is not None:
            raise Conflict(f"{address} is already linked", field="external_id")
        raise Conflict(f"you already linked a {identity.channel.value} identity", field="channel")

    async def remove(self, user_id: UserId, channel: Channel) -> bool:
        removed = await self._db.execute(
            "DELETE FROM identities WHERE user_id = %s AND channel = %s", (user_id, channel.value)
        )
        return removed > 0

    async def list_for_user(self, user_id: UserId) -> Sequence[ChannelIdentity]:
        rows = await self._db.rows(
            "SELECT channel, external_id, user_id, linked_at FROM identities WHERE user_id = %s"
            ' ORDER BY channel COLLATE "C"',
            (user_id,),
        )
        return [_identity(r) for r in rows]

    async def find_by_address(self, address: ChannelAddress) -> ChannelIdentity | None:
        row = await self._db.row(
            "SELECT channel, external_id, user_id, linked_at FROM identities WHERE channel = %s AND external_id = %s",
            (address.channel.value, address.external_id),
        )
        return _identity(row) if row is not None else None

    async def list_for_users(self, user_ids: Sequence[UserId]) -> Sequence[ChannelIdentity]:
        if not user_ids:
            return []
        rows = await self._db.rows(
            "SELECT channel, external_id, user_id, linked_at FROM identities WHERE user_id = ANY(%s)", (list(user_ids),)
        )
        return [_identity(r) for r in rows]


# --- conversations ---------------------------------------------------------------------

_CONVERSATION = """
SELECT c.id, c.type, c.created_by, c.created_at, c.metadata, c.last_seq, c.last_activity_at,
       ARRAY(SELECT m.member_key FROM conversation_members m
             WHERE m.conversation_id = c.id ORDER BY m.position) AS members
FROM conversations c
"""


def _conversation(row: DictRow) -> Conversation:
    return Conversation(
        id=row["id"],
        type=ConversationType(row["type"]),
        members=tuple(Participant.from_key(k) for k in row["members"]),
        created_by=row["created_by"],
        created_at=row["created_at"],
        metadata=row["metadata"],
        last_seq=row["last_seq"],
        last_activity_at=row["last_activity_at"],
    )


class PostgresConversationRepository(_Repo):
    async def add(self, conversation: Conversation) -> None:
        c = conversation
        await self._db.execute(
            "INSERT INTO conversations (id, type, created_by, created_at, metadata, last_seq, last_activity_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (c.id, c.type.value, c.created_by, c.created_at, Jsonb(dict(c.metadata)), c.last_seq, c.last_activity_at),
        )
        await self._add_members(c)

    async def _add_members(self, conversation: Conversation) -> None:
        members = conversation.members
        await self._db.execute(
            "INSERT INTO conversation_members (conversation_id, position, member_key, kind, user_id, address)"
            " SELECT %(id)s, m.ord - 1, m.member_key, m.kind, m.user_id, m.address"
            " FROM unnest(%(keys)s::text[], %(kinds)s::text[], %(user_ids)s::uuid[], %(addresses)s::text[])"
            " WITH ORDINALITY AS m(member_key, kind, user_id, address, ord)",
            {
                "id": conversation.id,
                "keys": [p.key for p in members],
                "kinds": [p.kind.value for p in members],
                "user_ids": [p.user_id for p in members],
                "addresses": [None if p.address is None else str(p.address) for p in members],
            },
        )

    async def add_if_absent(self, conversation: Conversation) -> bool:
        c = conversation
        # ON CONFLICT waits for a concurrent insert of the same id to commit, then skips it.
        inserted = await self._db.row(
            "INSERT INTO conversations (id, type, created_by, created_at, metadata, last_seq, last_activity_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING RETURNING id",
            (c.id, c.type.value, c.created_by, c.created_at, Jsonb(dict(c.metadata)), c.last_seq, c.last_activity_at),
        )
        if inserted is None:
            return False
        await self._add_members(c)
        return True

    async def get(self, conversation_id: ConversationId) -> Conversation | None:
        row = await self._db.row(_CONVERSATION + " WHERE c.id = %s", (conversation_id,))
        return _conversation(row) if row is not None else None

    async def list_for(self, member: Participant, page: PageRequest) -> ConversationPage:
        where: list[LiteralString] = [
            "c.id IN (SELECT conversation_id FROM conversation_members WHERE member_key = %(member)s)"
        ]
        params: dict[str, Any] = {"member": member.key, "limit": page.limit + 1}
        if page.cursor is not None:
            params["at"], params["after"] = decode_conversation_cursor(page.cursor)
            where.append("(c.last_activity_at, c.id) < (%(at)s, %(after)s)")
        query = sql.SQL("{} WHERE {} ORDER BY c.last_activity_at DESC, c.id DESC LIMIT %(limit)s").format(
            sql.SQL(_CONVERSATION), sql.SQL(" AND ").join(sql.SQL(w) for w in where)
        )
        return ConversationPage.of([_conversation(r) for r in await self._db.rows(query, params)], page.limit)

    async def peers_of(self, user_id: UserId) -> Sequence[UserId]:
        rows = await self._db.rows(
            "SELECT DISTINCT other.member_key FROM conversation_members mine"
            " JOIN conversation_members other ON other.conversation_id = mine.conversation_id"
            " WHERE mine.member_key = %(me)s AND other.member_key <> %(me)s AND other.member_key LIKE 'user:%%'",
            {"me": Participant.user(user_id).key},
        )
        return [user for r in rows if (user := Participant.from_key(r["member_key"]).user_id) is not None]

    async def reserve_seqs(self, counts: Mapping[ConversationId, int], *, at: datetime) -> Mapping[ConversationId, int]:
        # The row locks taken here are held until the transaction ends: concurrent senders queue
        # on them, and a rollback returns the numbers. The locking CTE takes them in id order.
        rows = await self._db.rows(
            """
            WITH wanted AS (
                SELECT * FROM unnest(%(ids)s::uuid[], %(counts)s::int[]) AS w(id, n)
            ), locked AS MATERIALIZED (
                SELECT c.id FROM conversations c JOIN wanted w ON w.id = c.id ORDER BY c.id FOR NO KEY UPDATE OF c
            )
            UPDATE conversations c SET last_seq = c.last_seq + w.n, last_activity_at = %(at)s
            FROM wanted w JOIN locked l ON l.id = w.id
            WHERE c.id = w.id
            RETURNING c.id, c.last_seq - w.n + 1 AS first
            """,
            {"ids": list(counts), "counts": list(counts.values()), "at": at},
        )
        first: dict[ConversationId, int] = {r["id"]: r["first"] for r in rows}
        for conversation_id in counts:
            if conversation_id not in first:
                raise KeyError(conversation_id)
        return first


# --- messages and deliveries -----------------------------------------------------------


def _content_doc(content: Content) -> dict[str, Any]:
    if isinstance(content, TextContent):
        return {"type": "text", "text": content.text}
    doc: dict[str, Any] = {"type": "file", "file_id": str(content.file_id), "caption": content.caption}
    if content.file is not None:
        doc["file"] = attrs.asdict(content.file)
    return doc


def _content(doc: Mapping[str, Any]) -> Content:
    if doc["type"] == "text":
        return TextContent(doc["text"])
    file = doc.get("file")
    return FileContent(FileId(UUID(doc["file_id"])), doc.get("caption"), FileInfo(**file) if file else None)


_MESSAGE = """
SELECT id, conversation_id, seq, sender_key, content, recipient_keys, channels, metadata, fingerprint, created_at
FROM messages
"""


def _message(row: DictRow) -> Message:
    channels = row["channels"]
    return Message(
        id=row["id"],
        conversation_id=row["conversation_id"],
        sender=Participant.from_key(row["sender_key"]),
        seq=row["seq"],
        content=_content(row["content"]),
        recipients=tuple(Participant.from_key(k) for k in row["recipient_keys"]),
        channels=None if channels is None else tuple(Channel(c) for c in channels),
        metadata=row["metadata"],
        created_at=row["created_at"],
        fingerprint=row["fingerprint"],
    )


# Messages, their deliveries and their history in one statement, sent with the COMMIT: no round
# trip of its own on the send path, whatever the size of the batch. A clashing id violates
# messages_pkey, which aborts the transaction (DuplicateMessage). Rows travel as one JSON array
# per table: far cheaper for the client to send than a parameter per column, and
# jsonb_to_recordset types every field.
_ADD_MESSAGES = """
WITH m AS (
    INSERT INTO messages (id, conversation_id, seq, sender_key, content, recipient_keys, channels, metadata,
                          fingerprint, created_at)
    SELECT x.id, x.conversation_id, x.seq, x.sender_key, x.content, x.recipient_keys, x.channels, x.metadata,
           x.fingerprint, x.created_at
    FROM jsonb_to_recordset(%(messages)s)
         AS x(id uuid, conversation_id uuid, seq bigint, sender_key text, content jsonb, recipient_keys text[],
              channels text[], metadata jsonb, fingerprint text, created_at timestamptz)
    RETURNING id, conversation_id, seq
), d AS (
    INSERT INTO deliveries (message_id, recipient_key, channel, position, conversation_id, seq, status, updated_at,
                            error)
    SELECT m.id, x.recipient_key, x.channel, x.position, m.conversation_id, m.seq, x.status, x.updated_at, x.error
    FROM jsonb_to_recordset(%(deliveries)s)
         AS x(message_id uuid, recipient_key text, channel text, position int, status text, updated_at timestamptz,
              error text)
    JOIN m ON m.id = x.message_id
), e AS (
    INSERT INTO delivery_events (message_id, recipient_key, channel, position, status, at, detail)
    SELECT m.id, y.recipient_key, y.channel, y.position, y.status, y.at, y.detail
    FROM jsonb_to_recordset(%(events)s)
         AS y(message_id uuid, recipient_key text, channel text, position int, status text, at timestamptz,
              detail text)
    JOIN m ON m.id = y.message_id
)
SELECT 1
"""


def _message_record(m: Message) -> dict[str, Any]:
    return {
        "id": str(m.id),
        "conversation_id": str(m.conversation_id),
        "seq": m.seq,
        "sender_key": m.sender.key,
        "content": _content_doc(m.content),
        "recipient_keys": [r.key for r in m.recipients],
        "channels": None if m.channels is None else [c.value for c in m.channels],
        "metadata": dict(m.metadata),
        "fingerprint": m.fingerprint,
        "created_at": m.created_at.isoformat(),
    }


# New statuses, and the history entries not stored yet (those already stored sit at the same
# positions and are skipped), in one statement. The deliveries to update come as arrays, not as
# JSON: the planner sizes unnest() by its argument but jsonb_to_recordset() always at 100 rows,
# which made it hash-join against a sequential scan of the whole deliveries table.
_SAVE_PROGRESS = """
WITH d AS (
    UPDATE deliveries d SET status = x.status, updated_at = x.updated_at, error = x.error
    FROM unnest(%(message_ids)s::uuid[], %(recipients)s::text[], %(channels)s::text[], %(statuses)s::text[],
                %(updated_ats)s::timestamptz[], %(errors)s::text[])
         AS x(message_id, recipient_key, channel, status, updated_at, error)
    WHERE d.message_id = x.message_id AND d.recipient_key = x.recipient_key AND d.channel = x.channel
      -- a new history entry without a new status (a hand-over) writes no new row version
      AND (d.status, d.updated_at, d.error) IS DISTINCT FROM (x.status, x.updated_at, x.error)
)
INSERT INTO delivery_events (message_id, recipient_key, channel, position, status, at, detail)
SELECT y.message_id, y.recipient_key, y.channel, y.position, y.status, y.at, y.detail
FROM jsonb_to_recordset(%(events)s)
     AS y(message_id uuid, recipient_key text, channel text, position int, status text, at timestamptz, detail text)
ON CONFLICT DO NOTHING
"""

# A delivery's sync key (see SyncPosition), compared in the C collation as Python compares str.
_SYNC_KEY: LiteralString = "(d.message_id::text || '/' || d.recipient_key || '/' || d.channel) COLLATE \"C\""

# Deliveries with their whole history, oldest entry first.
_DELIVERY = """
SELECT d.message_id, d.recipient_key, d.channel, d.status, d.updated_at, d.error,
       h.statuses, h.ats, h.details
FROM deliveries d
CROSS JOIN LATERAL (
    SELECT array_agg(e.status ORDER BY e.position) AS statuses,
           array_agg(e.at ORDER BY e.position) AS ats,
           array_agg(e.detail ORDER BY e.position) AS details
    FROM delivery_events e
    WHERE e.message_id = d.message_id AND e.recipient_key = d.recipient_key AND e.channel = d.channel
) h
"""

_SYNCED_DELIVERY = _DELIVERY.replace(
    "\nFROM deliveries d\n",
    "\n     , d.conversation_id, m.sender_key\nFROM deliveries d JOIN messages m ON m.id = d.message_id\n",
)

# Per conversation of a page, as one viewer sees it: its latest visible message (the last row of
# its history: messages_position backwards) and how many messages the viewer receives and has
# read on no channel (deliveries_unread, each message's READ copy looked up by primary key).
_SUMMARIES = """
SELECT p.summary_of, u.unread,
       m.id, m.conversation_id, m.seq, m.sender_key, m.content, m.recipient_keys, m.channels, m.metadata,
       m.fingerprint, m.created_at
FROM unnest(%(ids)s::uuid[]) AS p(summary_of)
LEFT JOIN LATERAL (
    SELECT * FROM messages
    WHERE conversation_id = p.summary_of AND (sender_key = %(viewer)s OR %(viewer)s = ANY(recipient_keys))
    ORDER BY seq DESC
    LIMIT 1
) m ON true
CROSS JOIN LATERAL (
    SELECT count(DISTINCT d.message_id) AS unread
    FROM deliveries d
    WHERE d.conversation_id = p.summary_of AND d.recipient_key = %(viewer)s AND d.status <> 'READ'
      AND NOT EXISTS (
          SELECT 1 FROM deliveries r
          WHERE r.message_id = d.message_id AND r.recipient_key = d.recipient_key AND r.status = 'READ'
      )
) u
"""

# A recipient's deliveries not yet READ in a conversation, up to a position: locked, then read.
_LOCK_UNREAD = """
SELECT 1 FROM deliveries d
WHERE d.conversation_id = %s AND d.recipient_key = %s AND d.seq <= %s AND d.status <> 'READ'
ORDER BY d.seq, d.position
FOR UPDATE
"""
_READ_UNREAD = (
    _DELIVERY
    + """
WHERE d.conversation_id = %s AND d.recipient_key = %s AND d.seq <= %s AND d.status <> 'READ'
ORDER BY d.seq, d.position
"""
)


# How many history entries of each Delivery object the database holds: save_progress sends only
# the entries after them (a delivery's history is append-only), instead of the whole history.
_STORED_HISTORY: weakref.WeakKeyDictionary[Delivery, int] = weakref.WeakKeyDictionary()


def _remember_saved(saved: Sequence[tuple[Delivery, int]]) -> None:
    for dl, stored in saved:
        _STORED_HISTORY[dl] = stored


def _delivery(row: DictRow) -> Delivery:
    statuses, ats, details = row["statuses"] or [], row["ats"] or [], row["details"] or []
    dl = _loaded_delivery(row, statuses, ats, details)
    _STORED_HISTORY[dl] = len(dl.history)
    return dl


def _loaded_delivery(row: DictRow, statuses: list[str], ats: list[datetime], details: list[str | None]) -> Delivery:
    return Delivery(
        message_id=row["message_id"],
        recipient=Participant.from_key(row["recipient_key"]),
        channel=Channel(row["channel"]),
        status=DeliveryStatus(row["status"]),
        updated_at=row["updated_at"],
        error=row["error"],
        history=[
            StatusChange(DeliveryStatus(s), at, detail) for s, at, detail in zip(statuses, ats, details, strict=True)
        ],
    )


def _delivery_records(deliveries: Sequence[Delivery]) -> list[dict[str, Any]]:
    return [
        {
            "message_id": str(dl.message_id),
            "recipient_key": dl.recipient.key,
            "channel": dl.channel.value,
            "position": i,
            "status": dl.status.value,
            "updated_at": dl.updated_at.isoformat(),
            "error": dl.error,
        }
        for i, dl in enumerate(deliveries)
    ]


def _event_records(deliveries: Sequence[Delivery]) -> list[dict[str, Any]]:
    return [
        {
            "message_id": str(dl.message_id),
            "recipient_key": dl.recipient.key,
            "channel": dl.channel.value,
            "position": i,
            "status": h.status.value,
            "at": h.at.isoformat(),
            "detail": h.detail,
        }
        for dl in deliveries
        for i, h in enumerate(dl.history)
        if i >= _STORED_HISTORY.get(dl, 0)
    ]


class PostgresMessageRepository(_Repo):
    async def add(self, message: Message, deliveries: Sequence[Delivery]) -> None:
        await self.add_many([(message, deliveries)])

    async def add_many(self, accepted: Sequence[tuple[Message, Sequence[Delivery]]]) -> None:
        if not accepted:
            return
        everything = [dl for _, deliveries in accepted for dl in deliveries]
        ids = ", ".join(str(m.id) for m, _ in accepted)
        self._db.defer(
            _ADD_MESSAGES,
            {
                "messages": Jsonb([_message_record(m) for m, _ in accepted]),
                "deliveries": Jsonb([r for _, ds in accepted for r in _delivery_records(ds)]),
                "events": Jsonb(_event_records(everything)),
            },
            clashes={"messages_pkey": lambda: DuplicateMessage(ids)},
        )

    async def get(self, message_id: MessageId) -> Message | None:
        row = await self._db.row(_MESSAGE + " WHERE id = %s", (message_id,))
        return _message(row) if row is not None else None

    async def get_many(self, message_ids: Sequence[MessageId]) -> Mapping[MessageId, Message]:
        if not message_ids:
            return {}
        rows = await self._db.rows(_MESSAGE + " WHERE id = ANY(%s)", (list(message_ids),))
        return {(m := _message(r)).id: m for r in rows}

    async def origins_of(self, message_ids: Sequence[MessageId]) -> Mapping[MessageId, MessageOrigin]:
        if not message_ids:
            return {}
        rows = await self._db.rows(
            "SELECT id, conversation_id, sender_key FROM messages WHERE id = ANY(%s)", (list(message_ids),)
        )
        return {
            r["id"]: MessageOrigin(conversation_id=r["conversation_id"], sender=Participant.from_key(r["sender_key"]))
            for r in rows
        }

    async def history(self, query: HistoryQuery) -> Sequence[Message]:
        where: list[LiteralString] = [
            "conversation_id = %(conversation_id)s",
            "(sender_key = %(viewer)s OR %(viewer)s = ANY(recipient_keys))",
        ]
        params: dict[str, Any] = {
            "conversation_id": query.conversation_id,
            "viewer": query.viewer.key,
            "limit": query.limit,
            "after": query.after_seq if query.after_seq is not None else 0,
            "before": query.before_seq,
            "since": query.since,
        }
        if query.since is not None:
            where.append("created_at >= %(since)s")
        # Forward (the first N after a position) or backward (the last N before one, or the end).
        forward = query.after_seq is not None or (query.since is not None and query.before_seq is None)
        if forward:
            where.append("seq > %(after)s")
        elif query.before_seq is not None:
            where.append("seq < %(before)s")
        statement = sql.SQL("{} WHERE {} ORDER BY seq {} LIMIT %(limit)s").format(
            sql.SQL(_MESSAGE), sql.SQL(" AND ").join(sql.SQL(w) for w in where), sql.SQL("ASC" if forward else "DESC")
        )
        found = [_message(r) for r in await self._db.rows(statement, params)]
        return found if forward else found[::-1]

    async def summaries(
        self, viewer: Participant, conversation_ids: Sequence[ConversationId]
    ) -> Mapping[ConversationId, ConversationSummary]:
        if not conversation_ids:
            return {}
        rows = await self._db.rows(_SUMMARIES, {"ids": list(dict.fromkeys(conversation_ids)), "viewer": viewer.key})
        return {
            r["summary_of"]: ConversationSummary(
                last_message=_message(r) if r["id"] is not None else None, unread=r["unread"]
            )
            for r in rows
        }

    async def created_since(self, viewer: Participant, after: SyncPosition, *, limit: int) -> Sequence[Message]:
        # Keys compare as text in the C collation, as Python compares str (a uuid's text sorts like the uuid).
        rows = await self._db.rows(
            sql.SQL(
                "{} WHERE conversation_id IN"
                " (SELECT conversation_id FROM conversation_members WHERE member_key = %(viewer)s)"
                " AND (sender_key = %(viewer)s OR %(viewer)s = ANY(recipient_keys))"
                " AND created_at >= %(at)s"
                ' AND (created_at, 0, id::text COLLATE "C") > (%(at)s, %(kind)s, %(key)s COLLATE "C")'
                " ORDER BY created_at, id LIMIT %(limit)s"
            ).format(sql.SQL(_MESSAGE)),
            {"viewer": viewer.key, "at": after.at, "kind": after.kind, "key": after.key, "limit": limit},
        )
        return [_message(r) for r in rows]

    async def changed_since(
        self, viewer: Participant, after: SyncPosition, *, limit: int
    ) -> Sequence[tuple[Delivery, MessageOrigin]]:
        rows = await self._db.rows(
            sql.SQL(
                "{} WHERE d.conversation_id IN"
                " (SELECT conversation_id FROM conversation_members WHERE member_key = %(viewer)s)"
                " AND (m.sender_key = %(viewer)s OR (d.recipient_key = %(viewer)s AND d.status = 'READ'))"
                " AND d.updated_at >= %(at)s"
                ' AND (d.updated_at, 1, {key}) > (%(at)s, %(kind)s, %(key)s COLLATE "C")'
                " ORDER BY d.updated_at, {key} LIMIT %(limit)s"
            ).format(sql.SQL(_SYNCED_DELIVERY), key=sql.SQL(_SYNC_KEY)),
            {"viewer": viewer.key, "at": after.at, "kind": after.kind, "key": after.key, "limit": limit},
        )
        return [
            (
                _delivery(r),
                MessageOrigin(conversation_id=r["conversation_id"], sender=Participant.from_key(r["sender_key"])),
            )
            for r in rows
        ]

    async def shares_file(self, file_id: FileId, viewer: Participant) -> bool:
        row = await self._db.row(
            "SELECT EXISTS (SELECT 1 FROM messages m"
            " JOIN conversation_members cm ON cm.conversation_id = m.conversation_id AND cm.member_key = %(v)s"
            " WHERE m.content->>'type' = 'file' AND m.content->>'file_id' = %(f)s"
            " AND (m.sender_key = %(v)s OR %(v)s = ANY(m.recipient_keys))) AS shared",
            {"f": str(file_id), "v": viewer.key},
        )
        return bool(row and row["shared"])

    async def unsent_of(self, message_ids: Sequence[MessageId]) -> Sequence[DeliveryKey]:
        if not message_ids:
            return []
        rows = await self._db.rows(
            "SELECT message_id, recipient_key, channel FROM deliveries"
            " WHERE message_id = ANY(%s) AND channel <> 'internal' AND status = 'SENT'"
            " ORDER BY message_id, position",
            (list(message_ids),),
        )
        order = {mid: i for i, mid in enumerate(message_ids)}
        keys = [(MessageId(r["message_id"]), r["recipient_key"], Channel(r["channel"])) for r in rows]
        return sorted(keys, key=lambda k: order[k[0]])  # stable: planned order within a message

    async def deliveries(self, message_ids: Sequence[MessageId]) -> Sequence[Delivery]:
        if not message_ids:
            return []
        rows = await self._db.rows(
            _DELIVERY + " WHERE d.message_id = ANY(%s) ORDER BY d.message_id, d.position", (list(message_ids),)
        )
        by_message: dict[UUID, list[Delivery]] = {}
        for r in rows:
            by_message.setdefault(r["message_id"], []).append(_delivery(r))
        return [dl for mid in message_ids for dl in by_message.get(mid, [])]

    async def pending_for(
        self, conversation_id: ConversationId, recipient: Participant, *, up_to_seq: int
    ) -> Sequence[Delivery]:
        # Callers advance what this returns and save it, so lock the rows first (in a stable order,
        # against deadlocks): a concurrent reader of the same rows waits, then no longer sees
        # them once they are READ. The history is read afterwards, in a statement of its own, so
        # it includes anything committed while we waited.
        rows = await self._db.lock_then_read(_LOCK_UNREAD, _READ_UNREAD, (conversation_id, recipient.key, up_to_seq))
        return [_delivery(r) for r in rows]

    async def save_progress(self, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return
        latest = list({dl.key: dl for dl in deliveries}.values())  # the last word on each delivery wins
        await self._db.execute(
            _SAVE_PROGRESS,
            {
                **_key_arrays([dl.key for dl in latest]),
                "statuses": [dl.status.value for dl in latest],
                "updated_ats": [dl.updated_at for dl in latest],
                "errors": [dl.error for dl in latest],
                "events": Jsonb(_event_records(latest)),
            },
        )
        self._db.saved_histories.extend((dl, len(dl.history)) for dl in latest)  # remembered at commit

    async def in_ranges(self, ranges: Mapping[ConversationId, tuple[int, int]]) -> Sequence[Message]:
        if not ranges:
            return []
        rows = await self._db.rows(
            """
            SELECT m.id, m.conversation_id, m.seq, m.sender_key, m.content, m.recipient_keys, m.channels, m.metadata,
                   m.fingerprint, m.created_at
            FROM unnest(%s::uuid[], %s::bigint[], %s::bigint[]) AS r(conversation_id, after_seq, up_to_seq)
            JOIN messages m ON m.conversation_id = r.conversation_id AND m.seq > r.after_seq AND m.seq <= r.up_to_seq
            ORDER BY m.conversation_id, m.seq
            """,
            (list(ranges), [a for a, _ in ranges.values()], [u for _, u in ranges.values()]),
        )
        return [_message(r) for r in rows]

    async def lock_deliveries(self, keys: Sequence[DeliveryKey]) -> Sequence[Delivery]:
        if not keys:
            return []
        # Locked first, in a stable order (against deadlocks), then read with their history in a
        # statement of its own, so that the history includes what was committed while we waited.
        rows = await self._db.lock_then_read(_LOCK_KEYS, _READ_KEYS, _key_arrays(keys))
        return [_delivery(r) for r in rows]

    async def unsent_before(
        self, threads: Mapping[tuple[ConversationId, str, Channel], int], *, limit: int
    ) -> Sequence[Delivery]:
        if not threads:
            return []
        params = {
            "conversations": [t[0] for t in threads],
            "recipients": [t[1] for t in threads],
            "channels": [t[2].value for t in threads],
            "seqs": list(threads.values()),
            "limit": limit,
        }
        return [_delivery(r) for r in await self._db.rows(_UNSENT_BEFORE, params)]

    async def unsent(self, *, updated_before: datetime, limit: int) -> Sequence[Delivery]:
        rows = await self._db.rows(_UNSENT, {"before": updated_before, "limit": limit})
        return [_delivery(r) for r in rows]


def _key_arrays(keys: Sequence[DeliveryKey]) -> dict[str, list[Any]]:
    return {
        "message_ids": [k[0] for k in keys],
        "recipients": [k[1] for k in keys],
        "channels": [k[2].value for k in keys],
    }


_LOCK_KEYS = """
SELECT 1 FROM deliveries d
WHERE (d.message_id, d.recipient_key, d.channel) IN (
    SELECT * FROM unnest(%(message_ids)s::uuid[], %(recipients)s::text[], %(channels)s::text[])
)
ORDER BY d.message_id, d.recipient_key, d.channel
FOR UPDATE
"""
_READ_KEYS = (  # constants only: no injection
    _DELIVERY  # noqa: S608
    + """
WHERE (d.message_id, d.recipient_key, d.channel) IN (
    SELECT * FROM unnest(%(message_ids)s::uuid[], %(recipients)s::text[], %(channels)s::text[])
)
ORDER BY d.message_id, d.position
"""
)
_UNSENT_BEFORE = (  # constants only: no injection
    _DELIVERY  # noqa: S608
    + """
JOIN unnest(%(conversations)s::uuid[], %(recipients)s::text[], %(channels)s::text[], %(seqs)s::bigint[])
     AS t(conversation_id, recipient_key, channel, seq)
  ON d.conversation_id = t.conversation_id AND d.recipient_key = t.recipient_key AND d.channel = t.channel
 AND d.seq < t.seq
WHERE d.status = 'SENT' AND d.channel <> 'internal'
  AND NOT EXISTS (SELECT 1 FROM channel_sends s
                  WHERE s.message_id = d.message_id AND s.recipient_key = d.recipient_key AND s.channel = d.channel
                    AND s.platform_message_id IS NOT NULL)
ORDER BY d.seq
LIMIT %(limit)s
"""
)
_UNSENT = (  # constants only: no injection
    _DELIVERY  # noqa: S608
    + """
WHERE d.status = 'SENT' AND d.channel <> 'internal' AND d.updated_at < %(before)s
  AND NOT EXISTS (SELECT 1 FROM channel_sends s
                  WHERE s.message_id = d.message_id AND s.recipient_key = d.recipient_key AND s.channel = d.channel
                    AND s.platform_message_id IS NOT NULL)
ORDER BY d.updated_at
LIMIT %(limit)s
"""
)


# --- refresh tokens and the outbox -----------------------------------------------------


class PostgresRefreshTokenRepository(_Repo):
    async def add(self, digest: str, user_id: UserId, *, expires_at: datetime) -> None:
        await self._db.execute(
            "INSERT INTO refresh_tokens (digest, user_id, expires_at) VALUES (%s, %s, %s)"
            " ON CONFLICT (digest) DO UPDATE"
            " SET user_id = EXCLUDED.user_id, expires_at = EXCLUDED.expires_at, used_at = NULL",
            (digest, user_id, expires_at),
        )

    async def consume(self, digest: str, *, at: datetime) -> UserId | None:
        row = await self._db.row(
            "UPDATE refresh_tokens SET used_at = %s"
            " WHERE digest = %s AND used_at IS NULL AND expires_at > %s RETURNING user_id",
            (at, digest, at),
        )
        return UserId(row["user_id"]) if row is not None else None


class PostgresOutbox(_Repo):
    """Outbox rows wait in memory and travel with the COMMIT, in the same round trip.

    They are part of the transaction either way; nothing in a unit of work reads them back.
    """

    def __init__(self, db: _Session) -> None:
        super().__init__(db)
        self.pending: list[Mapping[str, Any]] = []

    async def add(
        self, topic: str, key: str, event: Mapping[str, Any], *, headers: Mapping[str, str] | None = None
    ) -> None:
        if headers is None:
            headers = current_trace_headers()
        self.pending.append({"topic": topic, "key": key, "payload": event, "headers": headers or None})

    async def claim(self, limit: int) -> Sequence[OutboxRecord]:
        rows = await self._db.rows(
            "SELECT id, topic, key, payload, headers FROM outbox WHERE published_at IS NULL"
            " ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED",
            (limit,),
        )
        return [OutboxRecord(r["id"], r["topic"], r["key"], r["payload"], headers=r["headers"] or {}) for r in rows]

    async def mark_published(self, ids: Sequence[int], *, at: datetime) -> None:
        if ids:
            await self._db.execute("UPDATE outbox SET published_at = %s WHERE id = ANY(%s)", (at, list(ids)))

    async def purge(self, *, published_before: datetime, limit: int) -> int:
        return await self._db.execute(
            "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE published_at < %s ORDER BY id LIMIT %s)",
            (published_before, limit),
        )

    async def unpublish(self, *, published_after: datetime, published_before: datetime) -> int:
        return await self._db.execute(
            "UPDATE outbox SET published_at = NULL WHERE published_at >= %s AND published_at < %s",
            (published_after, published_before),
        )

    async def backlog(self) -> int:
        # Counted on the partial index of unpublished rows (outbox_unpublished): only the backlog is read.
        row = await self._db.row("SELECT count(*) AS n FROM outbox WHERE published_at IS NULL")
        return int(row["n"]) if row is not None else 0


# --- the pipeline's bookkeeping ----------------------------------------------------------

# Creates missing progress rows and locks every row, in id order, in one statement.
_LOCK_PROGRESS = """
INSERT INTO routing_progress (conversation_id, updated_at)
SELECT c.id, %(at)s FROM conversations c WHERE c.id = ANY(%(ids)s::uuid[]) ORDER BY c.id
ON CONFLICT (conversation_id) DO UPDATE SET updated_at = routing_progress.updated_at
RETURNING conversation_id, routed_seq
"""

# An upsert, so that an advance without a prior lock is kept too (an UPDATE alone would drop it);
# unknown conversations are skipped, as lock skips them. Rows are written in id order.
_ADVANCE_PROGRESS = """
INSERT INTO routing_progress AS p (conversation_id, routed_seq, updated_at)
SELECT x.id, x.seq, %(at)s FROM unnest(%(ids)s::uuid[], %(seqs)s::bigint[]) AS x(id, seq)
WHERE EXISTS (SELECT 1 FROM conversations c WHERE c.id = x.id)
ORDER BY x.id
ON CONFLICT (conversation_id) DO UPDATE
SET routed_seq = greatest(p.routed_seq, EXCLUDED.routed_seq), updated_at = EXCLUDED.updated_at
"""

_BEHIND = """
SELECT m.conversation_id, max(m.seq) AS last_seq
FROM messages m LEFT JOIN routing_progress r ON r.conversation_id = m.conversation_id
WHERE m.created_at > %(after)s AND m.created_at < %(before)s
GROUP BY m.conversation_id, r.routed_seq
HAVING max(m.seq) > coalesce(r.routed_seq, 0)
LIMIT %(limit)s
"""


class PostgresRoutingProgress(_Repo):
    async def lock(self, conversation_ids: Sequence[ConversationId], *, at: datetime) -> Mapping[ConversationId, int]:
        if not conversation_ids:
            return {}
        rows = await self._db.rows(_LOCK_PROGRESS, {"ids": list(conversation_ids), "at": at})
        return {ConversationId(r["conversation_id"]): r["routed_seq"] for r in rows}

    async def advance(self, routed: Mapping[ConversationId, int], *, at: datetime) -> None:
        if not routed:
            return
        await self._db.execute(_ADVANCE_PROGRESS, {"ids": list(routed), "seqs": list(routed.values()), "at": at})

    async def behind(self, *, active_after: datetime, idle_since: datetime, limit: int) -> Mapping[ConversationId, int]:
        rows = await self._db.rows(_BEHIND, {"after": active_after, "before": idle_since, "limit": limit})
        return {ConversationId(r["conversation_id"]): r["last_seq"] for r in rows}


_CLAIM = """
WITH k AS (
    SELECT d.message_id, d.recipient_key, d.channel
    FROM unnest(%(message_ids)s::uuid[], %(recipients)s::text[], %(channels)s::text[], %(reopen)s::boolean[])
         AS x(m, r, c, reopen)
    JOIN deliveries d ON d.message_id = x.m AND d.recipient_key = x.r AND d.channel = x.c
    WHERE d.status <> 'FAILED' OR x.reopen
), claimed AS (
    INSERT INTO channel_sends (message_id, recipient_key, channel, claimed_at)
    SELECT message_id, recipient_key, channel, %(at)s FROM k
    ORDER BY message_id, recipient_key, channel
    ON CONFLICT DO NOTHING
    RETURNING message_id, recipient_key, channel
)
SELECT k.message_id, k.recipient_key, k.channel, s.platform_message_id,
       CASE WHEN c.message_id IS NOT NULL THEN %(at)s ELSE s.claimed_at END AS claimed_at,
       c.message_id IS NOT NULL AS fresh
FROM k
LEFT JOIN claimed c USING (message_id, recipient_key, channel)
LEFT JOIN channel_sends s USING (message_id, recipient_key, channel)
"""


class PostgresSendLookups(_Repo):
    async def for_sending(
        self, conversation_ids: Sequence[ConversationId], message_ids: Sequence[MessageId]
    ) -> SendContext:
        existing, conversations, channels = await self._db.rows_together(
            [
                (_MESSAGE + " WHERE id = ANY(%s)", (list(message_ids),)),
                (_CONVERSATION + " WHERE c.id = ANY(%s)", (list(conversation_ids),)),
                (
                    "SELECT user_id, array_agg(channel) AS channels FROM identities WHERE user_id IN ("
                    " SELECT user_id FROM conversation_members WHERE conversation_id = ANY(%s) AND user_id IS NOT NULL"
                    ") GROUP BY user_id",
                    (list(conversation_ids),),
                ),
            ]
        )
        return SendContext(
            existing={(m := _message(r)).id: m for r in existing},
            conversations={(c := _conversation(r)).id: c for r in conversations},
            channels={r["user_id"]: frozenset(Channel(ch) for ch in r["channels"]) for r in channels},
        )


class PostgresSendLedger(_Repo):
    async def sent(self, keys: Sequence[DeliveryKey]) -> Mapping[DeliveryKey, str]:
        if not keys:
            return {}
        rows = await self._db.rows(
            "SELECT message_id, recipient_key, channel, platform_message_id FROM channel_sends"
            " WHERE platform_message_id IS NOT NULL AND (message_id, recipient_key, channel) IN"
            " (SELECT * FROM unnest(%(message_ids)s::uuid[], %(recipients)s::text[], %(channels)s::text[]))",
            _key_arrays(keys),
        )
        return {
            (MessageId(r["message_id"]), r["recipient_key"], Channel(r["channel"])): r["platform_message_id"]
            for r in rows
        }

    async def claim(
        self, keys: Sequence[DeliveryKey], *, at: datetime, reopen: Collection[DeliveryKey] = ()
    ) -> Mapping[DeliveryKey, SendClaim]:
        if not keys:
            return {}
        rows = await self._db.rows(_CLAIM, {**_key_arrays(keys), "reopen": [k in reopen for k in keys], "at": at})
        return {
            (MessageId(r["message_id"]), r["recipient_key"], Channel(r["channel"])): SendClaim(
                platform_message_id=r["platform_message_id"], claimed_at=r["claimed_at"], fresh=r["fresh"]
            )
            for r in rows
        }

    async def record(
        self, handed_over: Sequence[tuple[DeliveryKey, str]], *, at: datetime
    ) -> Mapping[DeliveryKey, datetime]:
        first: dict[DeliveryKey, str] = {}
        for key, platform_id in handed_over:
            first.setdefault(key, platform_id)  # one row per key: ON CONFLICT DO UPDATE takes each once
        if not first:
            return {}
        params = _key_arrays(list(first))
        params["platform_ids"] = list(first.values())
        # A platform id the ledger holds already (for another delivery: a forged or replayed echo)
        # is skipped rather than left to break the unique index and the whole batch.
        rows = await self._db.rows(
            "INSERT INTO channel_sends (message_id, recipient_key, channel, platform_message_id, sent_at, claimed_at)"
            " SELECT m, r, c, p, %(at)s, %(at)s FROM unnest(%(message_ids)s::uuid[], %(recipients)s::text[],"
            " %(channels)s::text[], %(platform_ids)s::text[]) AS x(m, r, c, p)"
            " WHERE NOT EXISTS (SELECT 1 FROM channel_sends s WHERE s.channel = x.c AND s.platform_message_id = x.p)"
            " ORDER BY m, r, c"
            " ON CONFLICT (message_id, recipient_key, channel) DO UPDATE"
            " SET platform_message_id = EXCLUDED.platform_message_id, sent_at = EXCLUDED.sent_at"
            " WHERE channel_sends.platform_message_id IS NULL"
            " RETURNING message_id, recipient_key, channel, claimed_at",
            {**params, "at": at},
        )
        return {(MessageId(r["message_id"]), r["recipient_key"], Channel(r["channel"])): r["claimed_at"] for r in rows}

    async def take_over(self, claims: Mapping[DeliveryKey, datetime], *, at: datetime) -> Collection[DeliveryKey]:
        if not claims:
            return set()
        params = _key_arrays(list(claims))
        rows = await self._db.rows(
            "UPDATE channel_sends s SET claimed_at = %(at)s"
            " FROM unnest(%(message_ids)s::uuid[], %(recipients)s::text[], %(channels)s::text[],"
            " %(claimed_ats)s::timestamptz[]) AS x(m, r, c, t)"
            " WHERE s.message_id = x.m AND s.recipient_key = x.r AND s.channel = x.c"
            " AND s.platform_message_id IS NULL AND s.claimed_at = x.t"
            " RETURNING s.message_id, s.recipient_key, s.channel",
            {**params, "claimed_ats": list(claims.values()), "at": at},
        )
        return {(MessageId(r["message_id"]), r["recipient_key"], Channel(r["channel"])) for r in rows}

    async def release(self, keys: Sequence[DeliveryKey]) -> None:
        if not keys:
            return
        await self._db.execute(
            "DELETE FROM channel_sends WHERE platform_message_id IS NULL AND (message_id, recipient_key, channel) IN"
            " (SELECT * FROM unnest(%(message_ids)s::uuid[], %(recipients)s::text[], %(channels)s::text[]))",
            _key_arrays(keys),
        )

    async def find(self, channel: Channel, platform_message_ids: Sequence[str]) -> Mapping[str, DeliveryKey]:
        if not platform_message_ids:
            return {}
        rows = await self._db.rows(
            "SELECT platform_message_id, message_id, recipient_key FROM channel_sends"
            " WHERE channel = %s AND platform_message_id = ANY(%s)",
            (channel.value, list(platform_message_ids)),
        )
        return {r["platform_message_id"]: (MessageId(r["message_id"]), r["recipient_key"], channel) for r in rows}

    async def sent_up_to(
        self, channel: Channel, recipient_keys: Sequence[str], *, up_to: datetime, below: DeliveryStatus
    ) -> Sequence[DeliveryKey]:
        if not recipient_keys:
            return []
        lower = [s.value for s in DeliveryStatus if RANK[s] < RANK[below]]
        # The channel as a literal (an enum value, never input), so that the planner can use the
        # partial index of Messenger's claims in a generic plan too.
        query = sql.SQL(
            "SELECT s.message_id, s.recipient_key FROM channel_sends s"
            " JOIN deliveries d USING (message_id, recipient_key, channel)"
            " WHERE s.channel = {channel} AND s.recipient_key = ANY(%(recipients)s) AND s.claimed_at <= %(up_to)s"
            " AND s.platform_message_id IS NOT NULL"
            " AND d.status = ANY(%(lower)s) ORDER BY s.claimed_at, s.message_id"
        ).format(channel=sql.Literal(channel.value))
        rows = await self._db.rows(query, {"recipients": list(recipient_keys), "up_to": up_to, "lower": lower})
        return [(MessageId(r["message_id"]), r["recipient_key"], channel) for r in rows]

    async def unrecorded_up_to(
        self, channel: Channel, recipient_keys: Sequence[str], *, up_to: datetime
    ) -> Sequence[str]:
        if not recipient_keys:
            return []
        query = sql.SQL(  # the channel as a literal, for the partial index (see sent_up_to)
            "SELECT DISTINCT recipient_key FROM channel_sends WHERE channel = {channel}"
            " AND recipient_key = ANY(%(recipients)s) AND claimed_at <= %(up_to)s AND platform_message_id IS NULL"
        ).format(channel=sql.Literal(channel.value))
        rows = await self._db.rows(query, {"recipients": list(recipient_keys), "up_to": up_to})
        found = {r["recipient_key"] for r in rows}
        return [r for r in dict.fromkeys(recipient_keys) if r in found]


class PostgresEarlyReceipts(_Repo):
    async def keep(self, receipts: Sequence[EarlyReceipt], *, at: datetime) -> None:
        if not receipts:
            return
        await self._db.execute(
            "INSERT INTO early_receipts (channel, platform_message_id, status, at, error, received_at)"
            " SELECT c, p, s, a, e, %(at)s FROM unnest(%(channels)s::text[], %(ids)s::text[], %(statuses)s::text[],"
            " %(ats)s::timestamptz[], %(errors)s::text[]) AS x(c, p, s, a, e)"
            " ON CONFLICT (channel, platform_message_id, status) DO NOTHING",
            {
                "channels": [r.channel.value for r in receipts],
                "ids": [r.platform_message_id for r in receipts],
                "statuses": [r.status.value for r in receipts],
                "ats": [r.at for r in receipts],
                "errors": [r.error for r in receipts],
                "at": at,
            },
        )

    async def take(self, channel: Channel, platform_message_ids: Sequence[str]) -> Sequence[EarlyReceipt]:
        if not platform_message_ids:
            return []
        rows = await self._db.rows(
            "DELETE FROM early_receipts WHERE channel = %s AND platform_message_id = ANY(%s)"
            " RETURNING platform_message_id, status, at, error",
            (channel.value, list(platform_message_ids)),
        )
        found = [
            EarlyReceipt(channel, r["platform_message_id"], DeliveryStatus(r["status"]), r["at"], r["error"])
            for r in rows
        ]
        return sorted(found, key=lambda r: (r.at, RANK[r.status]))

    async def take_known(self, *, limit: int) -> Sequence[tuple[EarlyReceipt, DeliveryKey]]:
        rows = await self._db.rows(
            "DELETE FROM early_receipts e USING channel_sends s"
            " WHERE e.ctid IN (SELECT e2.ctid FROM early_receipts e2 JOIN channel_sends s2"
            " ON s2.channel = e2.channel AND s2.platform_message_id = e2.platform_message_id LIMIT %s)"
            " AND s.channel = e.channel AND s.platform_message_id = e.platform_message_id"
            " RETURNING e.channel, e.platform_message_id, e.status, e.at, e.error, s.message_id, s.recipient_key",
            (limit,),
        )
        taken = [
            (
                EarlyReceipt(
                    Channel(r["channel"]), r["platform_message_id"], DeliveryStatus(r["status"]), r["at"], r["error"]
                ),
                (MessageId(r["message_id"]), r["recipient_key"], Channel(r["channel"])),
            )
            for r in rows
        ]
        return sorted(taken, key=lambda t: (t[0].at, RANK[t[0].status]))

    async def purge(self, *, received_before: datetime, limit: int) -> int:
        return await self._db.execute(
            "DELETE FROM early_receipts WHERE ctid IN"
            " (SELECT ctid FROM early_receipts WHERE received_at < %s LIMIT %s)",
            (received_before, limit),
        )


def _below(status: DeliveryStatus) -> list[str]:
    return [s.value for s in DeliveryStatus if RANK[s] < RANK[status]]


def _early_watermark(row: DictRow) -> EarlyWatermark:
    return EarlyWatermark(
        channel=Channel(row["channel"]),
        reader=row["reader"],
        status=DeliveryStatus(row["status"]),
        up_to=row["up_to"],
        at=row["at"],
    )


class PostgresEarlyWatermarks(_Repo):
    async def keep(self, watermarks: Sequence[EarlyWatermark], *, at: datetime) -> None:
        furthest: dict[tuple[Channel, str, DeliveryStatus], EarlyWatermark] = {}
        for w in watermarks:  # one row per key: ON CONFLICT DO UPDATE takes each once
            kept = furthest.get((w.channel, w.reader, w.status))
            if kept is None or w.up_to > kept.up_to:
                furthest[(w.channel, w.reader, w.status)] = w
        if not furthest:
            return
        chosen = sorted(furthest.values(), key=lambda w: (w.channel.value, w.reader, w.status.value))
        # A watermark reaching no further than the one kept adds nothing, and leaves its receipt time alone.
        await self._db.execute(
            "INSERT INTO early_watermarks (channel, reader, status, up_to, at, received_at)"
            " SELECT c, r, s, u, a, %(at)s FROM unnest(%(channels)s::text[], %(readers)s::text[], %(statuses)s::text[],"
            " %(up_tos)s::timestamptz[], %(ats)s::timestamptz[]) AS x(c, r, s, u, a)"
            " ON CONFLICT (channel, reader, status) DO UPDATE"
            " SET up_to = EXCLUDED.up_to, at = EXCLUDED.at, received_at = EXCLUDED.received_at"
            " WHERE EXCLUDED.up_to > early_watermarks.up_to",
            {
                "channels": [w.channel.value for w in chosen],
                "readers": [w.reader for w in chosen],
                "statuses": [w.status.value for w in chosen],
                "up_tos": [w.up_to for w in chosen],
                "ats": [w.at for w in chosen],
                "at": at,
            },
        )

    async def covering(
        self, channel: Channel, claims: Mapping[DeliveryKey, datetime]
    ) -> Sequence[tuple[DeliveryKey, EarlyWatermark]]:
        if not claims:
            return []
        params = _key_arrays(list(claims))
        rows = await self._db.rows(
            "SELECT x.m AS message_id, x.r AS recipient_key, w.channel, w.reader, w.status, w.up_to, w.at"
            " FROM early_watermarks w"
            " JOIN unnest(%(message_ids)s::uuid[], %(recipients)s::text[], %(claimed_ats)s::timestamptz[])"
            " AS x(m, r, t) ON w.reader = x.r AND x.t <= w.up_to AND x.t <= w.received_at"
            " WHERE w.channel = %(channel)s",
            {**params, "claimed_ats": list(claims.values()), "channel": channel.value},
        )
        found = [((MessageId(r["message_id"]), r["recipient_key"], channel), _early_watermark(r)) for r in rows]
        return sorted(found, key=lambda f: RANK[f[1].status])

    async def known(self, *, received_after: datetime, limit: int) -> Sequence[tuple[DeliveryKey, EarlyWatermark]]:
        channels = await self._db.rows(
            "SELECT DISTINCT channel FROM early_watermarks WHERE received_at >= %s", (received_after,)
        )
        found: list[tuple[DeliveryKey, EarlyWatermark]] = []
        for row in channels:
            channel = Channel(row["channel"])
            # The channel as a literal, so that the partial index of Messenger's claims serves the join.
            query = sql.SQL(
                "SELECT s.message_id, s.recipient_key, w.channel, w.reader, w.status, w.up_to, w.at"
                " FROM early_watermarks w"
                " JOIN channel_sends s ON s.channel = {channel} AND s.recipient_key = w.reader"
                " AND s.claimed_at <= LEAST(w.up_to, w.received_at) AND s.platform_message_id IS NOT NULL"
                " JOIN deliveries d ON d.message_id = s.message_id AND d.recipient_key = s.recipient_key"
                " AND d.channel = s.channel"
                " WHERE w.channel = {channel} AND w.received_at >= %(after)s"
                " AND d.status = ANY(CASE w.status WHEN 'READ' THEN %(below_read)s::text[]"
                " ELSE %(below_delivered)s::text[] END)"
                " LIMIT %(limit)s"
            ).format(channel=sql.Literal(channel.value))
            rows = await self._db.rows(
                query,
                {
                    "after": received_after,
                    "below_read": _below(DeliveryStatus.READ),
                    "below_delivered": _below(DeliveryStatus.DELIVERED),
                    "limit": limit - len(found),
                },
            )
            found.extend(((MessageId(r["message_id"]), r["recipient_key"], channel), _early_watermark(r)) for r in rows)
            if len(found) >= limit:
                break
        return sorted(found, key=lambda f: RANK[f[1].status])

    async def purge(self, *, received_before: datetime, limit: int) -> int:
        return await self._db.execute(
            "DELETE FROM early_watermarks WHERE ctid IN"
            " (SELECT ctid FROM early_watermarks WHERE received_at < %s LIMIT %s)",
            (received_before, limit),
        )


_UPLOAD = """
SELECT u.*, ARRAY(SELECT c.index FROM upload_chunks c WHERE c.upload_id = u.id) AS received
FROM uploads u
"""


def _upload(row: DictRow) -> UploadSession:
    return UploadSession(
        id=row["id"],
        owner_id=row["owner_id"],
        filename=row["filename"],
        size=row["size"],
        content_type=row["content_type"],
        declared_sha256=row["declared_sha256"],
        chunk_size=row["chunk_size"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        status=UploadStatus(row["status"]),
        received=set(row["received"]),
        sha256=row["sha256"],
        failure=row["failure"],
        store_upload_id=row["store_upload_id"],
        blob_key=row["blob_key"],
        direct=row["direct"],
    )


class PostgresUploadRepository(_Repo):
    async def add(self, session: UploadSession) -> None:
        u = session
        await self._db.execute(
            "INSERT INTO uploads (id, owner_id, filename, size, content_type, declared_sha256, chunk_size,"
            " created_at, expires_at, status, sha256, failure, store_upload_id, blob_key, direct)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                u.id,
                u.owner_id,
                u.filename,
                u.size,
                u.content_type,
                u.declared_sha256,
                u.chunk_size,
                u.created_at,
                u.expires_at,
                u.status.value,
                u.sha256,
                u.failure,
                u.store_upload_id,
                u.blob_key,
                u.direct,
            ),
        )

    async def get(self, file_id: FileId, *, lock: bool = False) -> UploadSession | None:
        if lock:
            rows = await self._db.lock_then_read(
                "SELECT 1 FROM uploads WHERE id = %(id)s FOR UPDATE", _UPLOAD + " WHERE u.id = %(id)s", {"id": file_id}
            )
        else:
            rows = await self._db.rows(_UPLOAD + " WHERE u.id = %s", (file_id,))
        return _upload(rows[0]) if rows else None

    async def add_chunk(self, file_id: FileId, index: int, *, at: datetime) -> bool:
        added = await self._db.execute(
            "INSERT INTO upload_chunks (upload_id, index, received_at) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
            (file_id, index, at),
        )
        return added == 1

    async def save(self, session: UploadSession) -> None:
        u = session
        await self._db.execute(
            "UPDATE uploads SET status = %s, sha256 = %s, failure = %s, store_upload_id = %s, blob_key = %s"
            " WHERE id = %s",
            (u.status.value, u.sha256, u.failure, u.store_upload_id, u.blob_key, u.id),
        )

    async def blob_of(self, sha256: str) -> str | None:
        row = await self._db.row(
            "SELECT blob_key FROM uploads WHERE status = 'completed' AND sha256 = %s ORDER BY created_at LIMIT 1",
            (sha256,),
        )
        return None if row is None else str(row["blob_key"])

    async def expired(self, *, at: datetime, limit: int) -> Sequence[UploadSession]:
        rows = await self._db.rows(
            _UPLOAD + " WHERE u.status = 'uploading' AND u.expires_at <= %s ORDER BY u.expires_at LIMIT %s",
            (at, limit),
        )
        return [_upload(r) for r in rows]

    async def count_open(self) -> int:
        # Counted on the partial index of open sessions (uploads_open_expiry).
        row = await self._db.row("SELECT count(*) AS n FROM uploads WHERE status = 'uploading'")
        return int(row["n"]) if row is not None else 0


class PostgresAddressBindings(_Repo):
    async def bind(self, bindings: Mapping[ChannelAddress, ConversationId], *, at: datetime) -> None:
        if not bindings:
            return
        ordered = sorted(bindings.items(), key=lambda b: str(b[0]))  # one lock order: no deadlocks
        await self._db.execute(
            "INSERT INTO address_bindings (address, conversation_id, bound_at)"
            " SELECT a, c, %(at)s FROM unnest(%(addresses)s::text[], %(conversations)s::uuid[]) AS x(a, c)"
            " ON CONFLICT (address) DO UPDATE SET conversation_id = EXCLUDED.conversation_id,"
            " bound_at = EXCLUDED.bound_at WHERE address_bindings.bound_at <= EXCLUDED.bound_at",
            {"addresses": [str(a) for a, _ in ordered], "conversations": [c for _, c in ordered], "at": at},
        )

    async def bound(self, address: ChannelAddress) -> ConversationId | None:
        row = await self._db.row("SELECT conversation_id FROM address_bindings WHERE address = %s", (str(address),))
        return None if row is None else ConversationId(row["conversation_id"])


# --- the unit of work ------------------------------------------------------------------


# --- outbound webhooks ------------------------------------------------------------------------

_WEBHOOK = "SELECT id, owner_id, url, events, secret, created_at, disabled_at, disabled_reason FROM webhooks"


def _webhook(row: Mapping[str, Any], prefix: str = "") -> Webhook:
    return Webhook(
        id=row[prefix + "id"],
        owner=row[prefix + "owner_id"],
        url=row[prefix + "url"],
        events=frozenset(WebhookEvent(e) for e in row[prefix + "events"]),
        secret=row[prefix + "secret"],
        created_at=row[prefix + "created_at"],
        disabled_at=row[prefix + "disabled_at"],
        disabled_reason=row[prefix + "disabled_reason"],
    )


def _webhook_delivery(row: Mapping[str, Any]) -> WebhookDelivery:
    return WebhookDelivery(
        id=row["id"],
        webhook_id=row["webhook_id"],
        event=WebhookEvent(row["event"]),
        ordering_key=row["ordering_key"],
        body=bytes(row["body"]),
        created_at=row["created_at"],
        next_attempt_at=row["next_attempt_at"],
        state=WebhookDeliveryState(row["state"]),
        attempts=row["attempts"],
        last_status=row["last_status"],
        last_error=row["last_error"],
        delivered_at=row["delivered_at"],
        position=row["position"],
    )


# Only the first pending delivery of each (webhook, ordering key) is due: a conversation's deliveries go
# out in order. Claimed rows are skipped by concurrent dispatchers (SKIP LOCKED) and, once the lease is
# committed, by everyone until it ends.
_CLAIM_DUE = """
WITH due AS (
    SELECT d.id FROM webhook_deliveries d
    WHERE d.state = 'pending' AND d.next_attempt_at <= %(at)s
      AND (d.leased_until IS NULL OR d.leased_until <= %(at)s)
      AND NOT EXISTS (
          SELECT 1 FROM webhook_deliveries e
          WHERE e.webhook_id = d.webhook_id AND e.ordering_key = d.ordering_key
            AND e.state = 'pending' AND e.position < d.position)
    ORDER BY d.next_attempt_at, d.position
    LIMIT %(limit)s
    FOR UPDATE OF d SKIP LOCKED
)
UPDATE webhook_deliveries d SET leased_until = %(until)s
FROM due, webhooks w
WHERE d.id = due.id AND w.id = d.webhook_id
RETURNING d.*, w.id AS w_id, w.owner_id AS w_owner_id, w.url AS w_url, w.events AS w_events,
          w.secret AS w_secret, w.created_at AS w_created_at, w.disabled_at AS w_disabled_at,
          w.disabled_reason AS w_disabled_reason
"""


class PostgresWebhookRepository(_Repo):
    async def add(self, webhook: Webhook) -> None:
        w = webhook
        await self._db.execute(
            "INSERT INTO webhooks (id, owner_id, url, events, secret, created_at, disabled_at, disabled_reason)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (
                w.id,
                w.owner,
                w.url,
                sorted(e.value for e in w.events),
                w.secret,
                w.created_at,
                w.disabled_at,
                w.disabled_reason,
            ),
        )

    async def get(self, webhook_id: WebhookId) -> Webhook | None:
        row = await self._db.row(_WEBHOOK + " WHERE id = %s", (webhook_id,))
        return None if row is None else _webhook(row)

    async def list_for(self, owner: UserId) -> Sequence[Webhook]:
        rows = await self._db.rows(_WEBHOOK + " WHERE owner_id = %s ORDER BY created_at, id", (owner,))
        return [_webhook(r) for r in rows]

    async def remove(self, webhook_id: WebhookId) -> None:
        await self._db.execute("DELETE FROM webhooks WHERE id = %s", (webhook_id,))

    async def save(self, webhook: Webhook) -> None:
        await self._db.execute(
            "UPDATE webhooks SET disabled_at = %s, disabled_reason = %s WHERE id = %s",
            (webhook.disabled_at, webhook.disabled_reason, webhook.id),
        )

    async def subscribed(self, owners: Iterable[UserId], events: Iterable[WebhookEvent]) -> Sequence[Webhook]:
        rows = await self._db.rows(
            _WEBHOOK + " WHERE owner_id = ANY(%s::uuid[]) AND disabled_at IS NULL AND events && %s::text[]",
            (list(owners), [e.value for e in events]),
        )
        return [_webhook(r) for r in rows]

    async def add_deliveries(self, deliveries: Sequence[WebhookDelivery]) -> int:
        if not deliveries:
            return 0
        row = await self._db.row(
            "WITH given AS ("
            "  SELECT * FROM unnest(%s::uuid[], %s::uuid[], %s::text[], %s::text[], %s::bytea[],"
            "                       %s::timestamptz[], %s::timestamptz[]) WITH ORDINALITY"
            "    AS g(id, webhook_id, event, ordering_key, body, created_at, next_attempt_at, n)),"
            " added AS ("
            "  INSERT INTO webhook_deliveries (id, webhook_id, event, ordering_key, body, created_at, next_attempt_at)"
            "  SELECT g.id, g.webhook_id, g.event, g.ordering_key, g.body, g.created_at, g.next_attempt_at"
            "  FROM given g JOIN webhooks w ON w.id = g.webhook_id ORDER BY g.n"
            "  ON CONFLICT (id) DO NOTHING RETURNING 1)"
            " SELECT count(*) AS added FROM added",
            (
                [d.id for d in deliveries],
                [d.webhook_id for d in deliveries],
                [d.event.value for d in deliveries],
                [d.ordering_key for d in deliveries],
                [d.body for d in deliveries],
                [d.created_at for d in deliveries],
                [d.next_attempt_at for d in deliveries],
            ),
        )
        return 0 if row is None else int(row["added"])

    async def claim_due(self, *, at: datetime, lease: timedelta, limit: int) -> Sequence[DueDelivery]:
        rows = await self._db.rows(_CLAIM_DUE, {"at": at, "until": at + lease, "limit": limit})
        due = [DueDelivery(_webhook_delivery(r), _webhook(r, "w_")) for r in rows]
        return sorted(due, key=lambda x: (x.delivery.next_attempt_at, x.delivery.position))

    async def save_delivery(self, delivery: WebhookDelivery) -> None:
        d = delivery
        await self._db.execute(
            "UPDATE webhook_deliveries SET state = %s, attempts = %s, next_attempt_at = %s, leased_until = NULL,"
            " last_status = %s, last_error = %s, delivered_at = %s WHERE id = %s",
            (d.state.value, d.attempts, d.next_attempt_at, d.last_status, d.last_error, d.delivered_at, d.id),
        )

    async def get_delivery(self, webhook_id: WebhookId, delivery_id: WebhookDeliveryId) -> WebhookDelivery | None:
        row = await self._db.row(
            "SELECT * FROM webhook_deliveries WHERE id = %s AND webhook_id = %s", (delivery_id, webhook_id)
        )
        return None if row is None else _webhook_delivery(row)

    async def deliveries_of(
        self, webhook_id: WebhookId, *, state: WebhookDeliveryState | None, before: int | None, limit: int
    ) -> Sequence[WebhookDelivery]:
        rows = await self._db.rows(
            "SELECT * FROM webhook_deliveries WHERE webhook_id = %(webhook)s"
            " AND (%(state)s::text IS NULL OR state = %(state)s)"
            " AND (%(before)s::bigint IS NULL OR position < %(before)s)"
            " ORDER BY position DESC LIMIT %(limit)s",
            {"webhook": webhook_id, "state": None if state is None else state.value, "before": before, "limit": limit},
        )
        return [_webhook_delivery(r) for r in rows]


class PostgresUnitOfWork:
    """One transaction on one pooled connection; rolls back unless committed.

    ``commit()`` is not terminal: work after it runs in a fresh transaction, which the end of
    the ``async with`` block rolls back unless it is committed too (as the in-memory twin does).
    """

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self._pool = pool
        self._db = _Session()
        # Annotated with the ports: UnitOfWork's attributes are invariant, and mypy checks each fits.
        self.users: UserRepository = PostgresUserRepository(self._db)
        self.clients: ApiClientRepository = PostgresApiClientRepository(self._db)
        self.identities: IdentityRepository = PostgresIdentityRepository(self._db)
        self.conversations: ConversationRepository = PostgresConversationRepository(self._db)
        self.messages: MessageRepository = PostgresMessageRepository(self._db)
        self.refresh_tokens: RefreshTokenRepository = PostgresRefreshTokenRepository(self._db)
        self._outbox = PostgresOutbox(self._db)
        self.outbox: Outbox = self._outbox
        self.routing: RoutingProgress = PostgresRoutingProgress(self._db)
        self.sends: SendLedger = PostgresSendLedger(self._db)
        self.lookups: SendLookups = PostgresSendLookups(self._db)
        self.bindings: AddressBindings = PostgresAddressBindings(self._db)
        self.early_receipts: EarlyReceipts = PostgresEarlyReceipts(self._db)
        self.early_watermarks: EarlyWatermarks = PostgresEarlyWatermarks(self._db)
        self.uploads: UploadRepository = PostgresUploadRepository(self._db)
        self.webhooks: WebhookRepository = PostgresWebhookRepository(self._db)

    async def __aenter__(self) -> Self:
        if self._db.conn is not None:
            raise RuntimeError("this unit of work is already active")
        with _translated_errors():
            conn: AsyncConnection[Any] = await self._pool.getconn()
        # psycopg opens the transaction with the first statement and after every commit.
        self._db.conn = conn
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        conn, self._db.conn = self._db.conn, None
        self._db.in_transaction = False
        self._db.deferred.clear()
        self._db.clashes.clear()
        self._db.saved_histories.clear()
        self._outbox.pending.clear()
        if conn is None:
            return
        try:
            await conn.rollback()
        except psycopg.Error:
            # A broken connection cannot roll back; closing it ends the transaction server-side
            # and tells the pool to replace it. The original exception, if any, still propagates.
            await conn.close()
        finally:
            await self._pool.putconn(conn)

    async def commit(self) -> None:
        pending, self._outbox.pending = self._outbox.pending, []
        await self._db.commit(pending)

    async def rollback(self) -> None:
        self._outbox.pending.clear()
        await self._db.rollback()
