"""An in-memory unit of work: serialisable transactions over plain dicts, with rollback."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Self

import attrs

from application.cursors import SyncPosition, decode_conversation_cursor
from application.errors import Conflict
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
    UnitOfWork,
    UploadRepository,
    UserRepository,
    WebhookRepository,
)
from domain.channels import Channel, ChannelAddress
from domain.conversations import Conversation, Participant
from domain.deliveries import RANK, Delivery, DeliveryStatus
from domain.ids import ClientId, ConversationId, FileId, MessageId, UserId, WebhookDeliveryId, WebhookId
from domain.messages import FileContent, Message
from domain.uploads import UploadSession, UploadStatus
from domain.users import ApiClient, ChannelIdentity, User
from domain.webhooks import Webhook, WebhookDelivery, WebhookDeliveryState, WebhookEvent


@attrs.define
class _State:
    users: dict[UserId, User] = attrs.Factory(dict)
    clients: dict[ClientId, ApiClient] = attrs.Factory(dict)
    identities: dict[ChannelAddress, ChannelIdentity] = attrs.Factory(dict)
    conversations: dict[ConversationId, Conversation] = attrs.Factory(dict)
    messages: dict[MessageId, Message] = attrs.Factory(dict)
    deliveries: dict[MessageId, list[Delivery]] = attrs.Factory(dict)
    refresh_tokens: dict[str, tuple[UserId, datetime, bool]] = attrs.Factory(dict)
    outbox: list[tuple[str, str, dict[str, Any]]] = attrs.Factory(list)
    outbox_headers: dict[int, dict[str, str]] = attrs.Factory(dict)  # by outbox position
    published: set[int] = attrs.Factory(set)  # outbox positions (ids are position + 1)
    published_at: dict[int, datetime] = attrs.Factory(dict)
    purged: set[int] = attrs.Factory(set)
    routed: dict[ConversationId, int] = attrs.Factory(dict)
    sends: dict[DeliveryKey, tuple[str | None, datetime]] = attrs.Factory(dict)  # platform id, claimed at
    bindings: dict[ChannelAddress, tuple[ConversationId, datetime]] = attrs.Factory(dict)
    early_receipts: dict[tuple[Channel, str, DeliveryStatus], tuple[EarlyReceipt, datetime]] = attrs.Factory(dict)
    early_watermarks: dict[tuple[Channel, str, DeliveryStatus], tuple[EarlyWatermark, datetime]] = attrs.Factory(
        dict
    )  # with when each was received
    uploads: dict[FileId, UploadSession] = attrs.Factory(dict)
    webhooks: dict[WebhookId, Webhook] = attrs.Factory(dict)
    webhook_deliveries: dict[WebhookDeliveryId, WebhookDelivery] = attrs.Factory(dict)
    webhook_leases: dict[WebhookDeliveryId, datetime] = attrs.Factory(dict)


class InMemoryStore:
    """The shared state behind every in-memory unit of work; one transaction at a time."""

    def __init__(self) -> None:
        self.state = _State()
        self.lock = asyncio.Lock()

    def uow(self) -> InMemoryUnitOfWork:
        """A new unit of work over this store."""
        return InMemoryUnitOfWork(self)


class _Repo:
    def __init__(self, uow: InMemoryUnitOfWork) -> None:
        self._uow = uow

    @property
    def s(self) -> _State:
        return self._uow.store.state


class InMemoryUserRepository(_Repo):
    async def add(self, user: User) -> None:
        if any(u.username == user.username for u in self.s.users.values()):
            raise Conflict(f"username {user.username!r} is taken", field="username")
        self.s.users[user.id] = copy.deepcopy(user)

    async def get(self, user_id: UserId) -> User | None:
        return copy.deepcopy(self.s.users.get(user_id))

    async def get_by_username(self, username: str) -> User | None:
        return next((copy.deepcopy(u) for u in self.s.users.values() if u.username == username), None)

    async def get_many(self, user_ids: Sequence[UserId]) -> Mapping[UserId, User]:
        return {i: copy.deepcopy(self.s.users[i]) for i in user_ids if i in self.s.users}


class InMemoryApiClientRepository(_Repo):
    async def add(self, client: ApiClient) -> None:
        self.s.clients[client.id] = client

    async def get(self, client_id: ClientId) -> ApiClient | None:
        return self.s.clients.get(client_id)


class InMemoryIdentityRepository(_Repo):
    async def add(self, identity: ChannelIdentity) -> None:
        if identity.address in self.s.identities:
            raise Conflict(f"{identity.address} is already linked", field="external_id")
        if any(i.user_id == identity.user_id and i.channel is identity.channel for i in self.s.identities.values()):
            raise Conflict(f"you already linked a {identity.channel.value} identity", field="channel")
        self.s.identities[identity.address] = identity

    async def remove(self, user_id: UserId, channel: Channel) -> bool:
        for address, i in list(self.s.identities.items()):
            if i.user_id == user_id and i.channel is channel:
                del self.s.identities[address]
                return True
        return False

    async def list_for_user(self, user_id: UserId) -> Sequence[ChannelIdentity]:
        return sorted((i for i in self.s.identities.values() if i.user_id == user_id), key=lambda i: i.channel.value)

    async def find_by_address(self, address: ChannelAddress) -> ChannelIdentity | None:
        return self.s.identities.get(address)

    async def list_for_users(self, user_ids: Sequence[UserId]) -> Sequence[ChannelIdentity]:
        wanted = set(user_ids)
        return [i for i in self.s.identities.values() if i.user_id in wanted]


class InMemoryConversationRepository(_Repo):
    async def add(self, conversation: Conversation) -> None:
        self.s.conversations[conversation.id] = copy.deepcopy(conversation)

    async def add_if_absent(self, conversation: Conversation) -> bool:
        if conversation.id in self.s.conversations:
            return False
        await self.add(conversation)
        return True

    async def get(self, conversation_id: ConversationId) -> Conversation | None:
        return copy.deepcopy(self.s.conversations.get(conversation_id))

    async def list_for(self, member: Participant, page: PageRequest) -> ConversationPage:
        def order(conv: Conversation) -> tuple[datetime, str]:
            assert conv.last_activity_at is not None
            return (conv.last_activity_at, str(conv.id))

        mine = sorted((c for c in self.s.conversations.values() if c.has_member(member)), key=order, reverse=True)
        if page.cursor is not None:
            at, cid = decode_conversation_cursor(page.cursor)
            mine = [c for c in mine if order(c) < (at, str(cid))]
        return ConversationPage.of([copy.deepcopy(c) for c in mine[: page.limit + 1]], page.limit)

    async def peers_of(self, user_id: UserId) -> Sequence[UserId]:
        me = Participant.user(user_id)
        peers = {
            m.user_id
            for c in self.s.conversations.values()
            if c.has_member(me)
            for m in c.members
            if m.user_id is not None and m != me
        }
        return sorted(peers, key=str)

    async def reserve_seqs(self, counts: Mapping[ConversationId, int], *, at: datetime) -> Mapping[ConversationId, int]:
        first: dict[ConversationId, int] = {}
        for conversation_id, count in counts.items():
            conv = self.s.conversations[conversation_id]
            first[conversation_id] = conv.last_seq + 1
            conv.last_seq += count
            conv.last_activity_at = at
        return first


class InMemoryMessageRepository(_Repo):
    async def add(self, message: Message, deliveries: Sequence[Delivery]) -> None:
        await self.add_many([(message, deliveries)])

    async def add_many(self, accepted: Sequence[tuple[Message, Sequence[Delivery]]]) -> None:
        ids = [m.id for m, _ in accepted]
        if len(set(ids)) < len(ids) or any(i in self.s.messages for i in ids):
            raise DuplicateMessage(", ".join(str(i) for i in ids))
        for message, deliveries in accepted:
            self.s.messages[message.id] = copy.deepcopy(message)
            self.s.deliveries[message.id] = copy.deepcopy(list(deliveries))

    async def get(self, message_id: MessageId) -> Message | None:
        return copy.deepcopy(self.s.messages.get(message_id))

    async def get_many(self, message_ids: Sequence[MessageId]) -> Mapping[MessageId, Message]:
        found = self.s.messages
        return {i: copy.deepcopy(found[i]) for i in message_ids if i in found}

    async def origins_of(self, message_ids: Sequence[MessageId]) -> Mapping[MessageId, MessageOrigin]:
        found = self.s.messages
        return {
            i: MessageOrigin(conversation_id=found[i].conversation_id, sender=found[i].sender)
            for i in message_ids
            if i in found
        }

    async def history(self, query: HistoryQuery) -> Sequence[Message]:
        visible = sorted(
            (
                m
                for m in self.s.messages.values()
                if m.conversation_id == query.conversation_id
                and (m.sender == query.viewer or query.viewer in m.recipients)
                and (query.since is None or m.created_at >= query.since)
            ),
            key=lambda m: m.seq,
        )
        if query.after_seq is not None or (query.since is not None and query.before_seq is None):
            after = query.after_seq if query.after_seq is not None else 0
            chosen = [m for m in visible if m.seq > after][: query.limit]
        else:
            before = query.before_seq
            chosen = [m for m in visible if before is None or m.seq < before][-query.limit :]
        return copy.deepcopy(chosen)

    async def summaries(
        self, viewer: Participant, conversation_ids: Sequence[ConversationId]
    ) -> Mapping[ConversationId, ConversationSummary]:
        last: dict[ConversationId, Message] = {}
        unread: dict[ConversationId, int] = {}
        wanted = set(conversation_ids)
        for m in self.s.messages.values():
            if m.conversation_id not in wanted:
                continue
            if (m.sender == viewer or viewer in m.recipients) and (
                (seen := last.get(m.conversation_id)) is None or m.seq > seen.seq
            ):
                last[m.conversation_id] = m
            mine = [dl.status for dl in self.s.deliveries.get(m.id, []) if dl.recipient == viewer]
            if mine and DeliveryStatus.READ not in mine:
                unread[m.conversation_id] = unread.get(m.conversation_id, 0) + 1
        return {
            i: ConversationSummary(last_message=copy.deepcopy(last.get(i)), unread=unread.get(i, 0))
            for i in conversation_ids
        }

    def _visible(self, m: Message, viewer: Participant) -> bool:
        conv = self.s.conversations.get(m.conversation_id)
        return conv is not None and conv.has_member(viewer) and (m.sender == viewer or viewer in m.recipients)

    async def created_since(self, viewer: Participant, after: SyncPosition, *, limit: int) -> Sequence[Message]:
        found = sorted(
            (m for m in self.s.messages.values() if self._visible(m, viewer) and SyncPosition.of_message(m) > after),
            key=SyncPosition.of_message,
        )
        return [copy.deepcopy(m) for m in found[:limit]]

    async def changed_since(
        self, viewer: Participant, after: SyncPosition, *, limit: int
    ) -> Sequence[tuple[Delivery, MessageOrigin]]:
        found = sorted(
            (
                (dl, MessageOrigin(conversation_id=m.conversation_id, sender=m.sender))
                for m in self.s.messages.values()
                if (conv := self.s.conversations.get(m.conversation_id)) is not None and conv.has_member(viewer)
                for dl in self.s.deliveries.get(m.id, [])
                if (m.sender == viewer or (dl.recipient == viewer and dl.status is DeliveryStatus.READ))
                and SyncPosition.of_delivery(dl) > after
            ),
            key=lambda found: SyncPosition.of_delivery(found[0]),
        )
        return [(copy.deepcopy(dl), origin) for dl, origin in found[:limit]]

    async def shares_file(self, file_id: FileId, viewer: Participant) -> bool:
        return any(
            isinstance(m.content, FileContent)
            and m.content.file_id == file_id
            and (m.sender == viewer or viewer in m.recipients)
            and (conv := self.s.conversations.get(m.conversation_id)) is not None
            and conv.has_member(viewer)
            for m in self.s.messages.values()
        )

    async def unsent_of(self, message_ids: Sequence[MessageId]) -> Sequence[DeliveryKey]:
        return [
            dl.key
            for mid in message_ids
            for dl in self.s.deliveries.get(mid, [])
            if dl.channel.is_platform and dl.status is DeliveryStatus.SENT
        ]

    async def deliveries(self, message_ids: Sequence[MessageId]) -> Sequence[Delivery]:
        return [copy.deepcopy(dl) for mid in message_ids for dl in self.s.deliveries.get(mid, [])]

    async def pending_for(
        self, conversation_id: ConversationId, recipient: Participant, *, up_to_seq: int
    ) -> Sequence[Delivery]:
        return [
            copy.deepcopy(dl)
            for m in sorted(self.s.messages.values(), key=lambda m: m.seq)
            if m.conversation_id == conversation_id and m.seq <= up_to_seq
            for dl in self.s.deliveries.get(m.id, [])
            if dl.recipient == recipient and RANK[dl.status] < RANK[DeliveryStatus.READ]
        ]

    async def save_progress(self, deliveries: Sequence[Delivery]) -> None:
        for changed in deliveries:
            stored = self.s.deliveries[changed.message_id]
            for i, dl in enumerate(stored):
                if dl.key == changed.key:
                    stored[i] = copy.deepcopy(changed)

    async def in_ranges(self, ranges: Mapping[ConversationId, tuple[int, int]]) -> Sequence[Message]:
        def wanted(m: Message) -> bool:
            after, up_to = ranges.get(m.conversation_id, (0, 0))
            return after < m.seq <= up_to

        found = (copy.deepcopy(m) for m in self.s.messages.values() if wanted(m))
        return sorted(found, key=lambda m: (str(m.conversation_id), m.seq))

    async def lock_deliveries(self, keys: Sequence[DeliveryKey]) -> Sequence[Delivery]:
        wanted = set(keys)
        return [
            copy.deepcopy(dl)
            for mid in dict.fromkeys(k[0] for k in keys)
            for dl in self.s.deliveries.get(mid, [])
            if dl.key in wanted
        ]

    async def unsent_before(
        self, threads: Mapping[tuple[ConversationId, str, Channel], int], *, limit: int
    ) -> Sequence[Delivery]:
        found: list[tuple[int, Delivery]] = []
        for mid, dls in self.s.deliveries.items():
            m = self.s.messages[mid]
            for dl in dls:
                below = threads.get((m.conversation_id, dl.recipient.key, dl.channel))
                if (
                    below is not None
                    and m.seq < below
                    and dl.channel.is_platform
                    and dl.status is DeliveryStatus.SENT
                    and self.s.sends.get(dl.key, (None,))[0] is None
                ):
                    found.append((m.seq, copy.deepcopy(dl)))
        return [dl for _, dl in sorted(found, key=lambda pair: pair[0])][:limit]

    async def unsent(self, *, updated_before: datetime, limit: int) -> Sequence[Delivery]:
        found = [
            copy.deepcopy(dl)
            for dls in self.s.deliveries.values()
            for dl in dls
            if dl.channel.is_platform
            and dl.status is DeliveryStatus.SENT
            and self.s.sends.get(dl.key, (None,))[0] is None
            and dl.updated_at < updated_before
        ]
        return sorted(found, key=lambda dl: dl.updated_at)[:limit]


class InMemoryRefreshTokenRepository(_Repo):
    async def add(self, digest: str, user_id: UserId, *, expires_at: datetime) -> None:
        self.s.refresh_tokens[digest] = (user_id, expires_at, False)

    async def consume(self, digest: str, *, at: datetime) -> UserId | None:
        found = self.s.refresh_tokens.get(digest)
        if found is None or found[2] or found[1] <= at:
            return None
        self.s.refresh_tokens[digest] = (found[0], found[1], True)
        return found[0]


class InMemoryOutbox(_Repo):
    async def add(
        self, topic: str, key: str, event: Mapping[str, Any], *, headers: Mapping[str, str] | None = None
    ) -> None:
        if headers:
            self.s.outbox_headers[len(self.s.outbox)] = dict(headers)
        self.s.outbox.append((topic, key, dict(event)))

    async def claim(self, limit: int) -> Sequence[OutboxRecord]:
        # One unit of work at a time holds the store, so claiming needs no lock of its own.
        # Only committed rows, as in PostgreSQL (where pending rows travel with the COMMIT):
        # the snapshot taken at the last commit holds exactly those.
        snapshot = self._uow._snapshot
        committed = len(snapshot.outbox) if snapshot is not None else len(self.s.outbox)
        waiting = [i for i in range(committed) if i not in self.s.published][:limit]
        return [
            OutboxRecord(
                i + 1,
                *self.s.outbox[i][:2],
                copy.deepcopy(self.s.outbox[i][2]),
                headers=dict(self.s.outbox_headers.get(i, {})),
            )
            for i in waiting
        ]

    async def mark_published(self, ids: Sequence[int], *, at: datetime) -> None:
        self.s.published.update(i - 1 for i in ids)
        self.s.published_at.update((i - 1, at) for i in ids)

    async def backlog(self) -> int:
        snapshot = self._uow._snapshot  # committed rows only, as claim sees them
        committed = len(snapshot.outbox) if snapshot is not None else len(self.s.outbox)
        return sum(1 for i in range(committed) if i not in self.s.published)

    async def unpublish(self, *, published_after: datetime, published_before: datetime) -> int:
        again = [
            i
            for i, at in self.s.published_at.items()
            if published_after <= at < published_before and i not in self.s.purged
        ]
        for i in again:
            self.s.published.discard(i)
            del self.s.published_at[i]
        return len(again)

    async def purge(self, *, published_before: datetime, limit: int) -> int:
        # Positions stay (tests read the outbox as a list); purged ones are only marked.
        old = [i for i, at in sorted(self.s.published_at.items()) if at < published_before and i not in self.s.purged]
        self.s.purged.update(old[:limit])
        return len(old[:limit])


class InMemoryRoutingProgress(_Repo):
    async def lock(self, conversation_ids: Sequence[ConversationId], *, at: datetime) -> Mapping[ConversationId, int]:
        # Unknown conversations are absent, as in PostgreSQL (progress rows reference conversations).
        return {c: self.s.routed.get(c, 0) for c in conversation_ids if c in self.s.conversations}

    async def advance(self, routed: Mapping[ConversationId, int], *, at: datetime) -> None:
        for conversation_id, seq in routed.items():
            if conversation_id in self.s.conversations:
                self.s.routed[conversation_id] = max(seq, self.s.routed.get(conversation_id, 0))

    async def behind(self, *, active_after: datetime, idle_since: datetime, limit: int) -> Mapping[ConversationId, int]:
        late: dict[ConversationId, int] = {}
        for m in self.s.messages.values():
            if active_after < m.created_at < idle_since and m.seq > self.s.routed.get(m.conversation_id, 0):
                late[m.conversation_id] = max(m.seq, late.get(m.conversation_id, 0))
        return dict(list(late.items())[:limit])


class InMemorySendLookups(_Repo):
    async def for_sending(
        self, conversation_ids: Sequence[ConversationId], message_ids: Sequence[MessageId]
    ) -> SendContext:
        conversations = {i: copy.deepcopy(c) for i in conversation_ids if (c := self.s.conversations.get(i))}
        members = {m.user_id for c in conversations.values() for m in c.members if m.user_id is not None}
        channels: dict[UserId, set[Channel]] = {}
        for identity in self.s.identities.values():
            if identity.user_id in members:
                channels.setdefault(identity.user_id, set()).add(identity.channel)
        return SendContext(
            existing=await self._uow.messages.get_many(message_ids),
            conversations=conversations,
            channels={user: frozenset(linked) for user, linked in channels.items()},
        )


class InMemorySendLedger(_Repo):
    async def sent(self, keys: Sequence[DeliveryKey]) -> Mapping[DeliveryKey, str]:
        found = {k: self.s.sends.get(k, (None,))[0] for k in keys}
        return {k: pid for k, pid in found.items() if pid is not None}

    def _status(self, key: DeliveryKey) -> DeliveryStatus | None:
        return next((dl.status for dl in self.s.deliveries.get(key[0], []) if dl.key == key), None)

    async def claim(
        self, keys: Sequence[DeliveryKey], *, at: datetime, reopen: Collection[DeliveryKey] = ()
    ) -> Mapping[DeliveryKey, SendClaim]:
        out: dict[DeliveryKey, SendClaim] = {}
        for key in dict.fromkeys(keys):
            status = self._status(key)
            if status is None or (status is DeliveryStatus.FAILED and key not in reopen):
                continue
            if key in self.s.sends:
                pid, claimed_at = self.s.sends[key]
                out[key] = SendClaim(platform_message_id=pid, claimed_at=claimed_at, fresh=False)
            else:
                self.s.sends[key] = (None, at)
                out[key] = SendClaim(platform_message_id=None, claimed_at=at, fresh=True)
        return out

    async def record(
        self, handed_over: Sequence[tuple[DeliveryKey, str]], *, at: datetime
    ) -> Mapping[DeliveryKey, datetime]:
        completed: dict[DeliveryKey, datetime] = {}
        for key, platform_message_id in handed_over:
            # Platform ids are unique per channel (as the PostgreSQL index is), not across channels.
            taken = any(k[2] is key[2] and pid == platform_message_id for k, (pid, _) in self.s.sends.items())
            current = self.s.sends.get(key)
            if not taken and (current is None or current[0] is None):
                self.s.sends[key] = (platform_message_id, current[1] if current else at)
                completed[key] = self.s.sends[key][1]
        return completed

    async def take_over(self, claims: Mapping[DeliveryKey, datetime], *, at: datetime) -> Collection[DeliveryKey]:
        taken: set[DeliveryKey] = set()
        for key, claimed_at in claims.items():
            if self.s.sends.get(key) == (None, claimed_at):
                self.s.sends[key] = (None, at)
                taken.add(key)
        return taken

    async def release(self, keys: Sequence[DeliveryKey]) -> None:
        for key in keys:
            if key in self.s.sends and self.s.sends[key][0] is None:
                del self.s.sends[key]

    async def find(self, channel: Channel, platform_message_ids: Sequence[str]) -> Mapping[str, DeliveryKey]:
        wanted = set(platform_message_ids)
        return {pid: key for key, (pid, _) in self.s.sends.items() if key[2] is channel and pid in wanted}

    async def sent_up_to(
        self, channel: Channel, recipient_keys: Sequence[str], *, up_to: datetime, below: DeliveryStatus
    ) -> Sequence[DeliveryKey]:
        wanted = set(recipient_keys)
        statuses = {dl.key: dl.status for dls in self.s.deliveries.values() for dl in dls}
        found = [
            (claimed_at, key)
            for key, (pid, claimed_at) in self.s.sends.items()
            if key[2] is channel
            and key[1] in wanted
            and pid is not None
            and claimed_at <= up_to
            and key in statuses
            and RANK[statuses[key]] < RANK[below]
        ]
        return [key for _, key in sorted(found, key=lambda f: (f[0], str(f[1][0])))]

    async def unrecorded_up_to(
        self, channel: Channel, recipient_keys: Sequence[str], *, up_to: datetime
    ) -> Sequence[str]:
        wanted = set(recipient_keys)
        found = {
            key[1]
            for key, (pid, claimed_at) in self.s.sends.items()
            if key[2] is channel and key[1] in wanted and pid is None and claimed_at <= up_to
        }
        return [r for r in dict.fromkeys(recipient_keys) if r in found]


class InMemoryEarlyReceipts(_Repo):
    async def keep(self, receipts: Sequence[EarlyReceipt], *, at: datetime) -> None:
        for r in receipts:
            self.s.early_receipts.setdefault((r.channel, r.platform_message_id, r.status), (r, at))

    async def take(self, channel: Channel, platform_message_ids: Sequence[str]) -> Sequence[EarlyReceipt]:
        wanted = set(platform_message_ids)
        keys = [k for k in self.s.early_receipts if k[0] is channel and k[1] in wanted]
        found = [self.s.early_receipts.pop(k)[0] for k in keys]
        return sorted(found, key=lambda r: (r.at, RANK[r.status]))

    async def take_known(self, *, limit: int) -> Sequence[tuple[EarlyReceipt, DeliveryKey]]:
        ledger = {(key[2], pid): key for key, (pid, _) in self.s.sends.items() if pid is not None}
        known = [k for k in self.s.early_receipts if (k[0], k[1]) in ledger][:limit]
        taken = [(self.s.early_receipts.pop(k)[0], ledger[(k[0], k[1])]) for k in known]
        return sorted(taken, key=lambda t: (t[0].at, RANK[t[0].status]))

    async def purge(self, *, received_before: datetime, limit: int) -> int:
        old = [k for k, (_, at) in self.s.early_receipts.items() if at < received_before][:limit]
        for k in old:
            del self.s.early_receipts[k]
        return len(old)


class InMemoryEarlyWatermarks(_Repo):
    async def keep(self, watermarks: Sequence[EarlyWatermark], *, at: datetime) -> None:
        for w in watermarks:
            key = (w.channel, w.reader, w.status)
            kept = self.s.early_watermarks.get(key)
            if kept is None or w.up_to > kept[0].up_to:
                self.s.early_watermarks[key] = (w, at)

    async def covering(
        self, channel: Channel, claims: Mapping[DeliveryKey, datetime]
    ) -> Sequence[tuple[DeliveryKey, EarlyWatermark]]:
        found = [
            (key, w)
            for key, claimed_at in claims.items()
            for (c, reader, _), (w, received_at) in self.s.early_watermarks.items()
            if c is channel and reader == key[1] and claimed_at <= w.up_to and claimed_at <= received_at
        ]
        return sorted(found, key=lambda f: RANK[f[1].status])

    async def known(self, *, received_after: datetime, limit: int) -> Sequence[tuple[DeliveryKey, EarlyWatermark]]:
        statuses = {dl.key: dl.status for dls in self.s.deliveries.values() for dl in dls}
        found = [
            (key, w)
            for (channel, reader, _), (w, received_at) in self.s.early_watermarks.items()
            if received_at >= received_after
            for key, (pid, claimed_at) in self.s.sends.items()
            if key[2] is channel
            and key[1] == reader
            and pid is not None
            and claimed_at <= min(w.up_to, received_at)
            and key in statuses
            and RANK[statuses[key]] < RANK[w.status]
        ]
        return sorted(found, key=lambda f: RANK[f[1].status])[:limit]

    async def purge(self, *, received_before: datetime, limit: int) -> int:
        old = [k for k, (_, at) in self.s.early_watermarks.items() if at < received_before][:limit]
        for k in old:
            del self.s.early_watermarks[k]
        return len(old)


class InMemoryUploadRepository(_Repo):
    async def add(self, session: UploadSession) -> None:
        self.s.uploads[session.id] = copy.deepcopy(session)

    async def get(self, file_id: FileId, *, lock: bool = False) -> UploadSession | None:
        return copy.deepcopy(self.s.uploads.get(file_id))

    async def add_chunk(self, file_id: FileId, index: int, *, at: datetime) -> bool:
        received = self.s.uploads[file_id].received
        if index in received:
            return False
        received.add(index)
        return True

    async def save(self, session: UploadSession) -> None:
        stored = self.s.uploads[session.id]
        for field in ("status", "sha256", "failure", "blob_key", "store_upload_id"):
            setattr(stored, field, getattr(session, field))

    async def blob_of(self, sha256: str) -> str | None:
        done = [u for u in self.s.uploads.values() if u.status is UploadStatus.COMPLETED and u.sha256 == sha256]
        return min(done, key=lambda u: u.created_at).blob_key if done else None

    async def expired(self, *, at: datetime, limit: int) -> Sequence[UploadSession]:
        due = [u for u in self.s.uploads.values() if u.status is UploadStatus.UPLOADING and u.expires_at <= at]
        return [copy.deepcopy(u) for u in sorted(due, key=lambda u: u.expires_at)[:limit]]

    async def count_open(self) -> int:
        return sum(1 for u in self.s.uploads.values() if u.status is UploadStatus.UPLOADING)


class InMemoryAddressBindings(_Repo):
    async def bind(self, bindings: Mapping[ChannelAddress, ConversationId], *, at: datetime) -> None:
        for address, conversation_id in bindings.items():
            current = self.s.bindings.get(address)
            if current is None or current[1] <= at:
                self.s.bindings[address] = (conversation_id, at)

    async def bound(self, address: ChannelAddress) -> ConversationId | None:
        current = self.s.bindings.get(address)
        if current is None or current[0] not in self.s.conversations:
            return None
        return current[0]


class InMemoryWebhookRepository(_Repo):
    async def add(self, webhook: Webhook) -> None:
        self.s.webhooks[webhook.id] = copy.deepcopy(webhook)

    async def get(self, webhook_id: WebhookId) -> Webhook | None:
        return copy.deepcopy(self.s.webhooks.get(webhook_id))

    async def list_for(self, owner: UserId) -> Sequence[Webhook]:
        mine = [w for w in self.s.webhooks.values() if w.owner == owner]
        return [copy.deepcopy(w) for w in sorted(mine, key=lambda w: (w.created_at, str(w.id)))]

    async def remove(self, webhook_id: WebhookId) -> None:
        self.s.webhooks.pop(webhook_id, None)
        for d in [d for d in self.s.webhook_deliveries.values() if d.webhook_id == webhook_id]:
            del self.s.webhook_deliveries[d.id]

    async def save(self, webhook: Webhook) -> None:
        if webhook.id in self.s.webhooks:
            self.s.webhooks[webhook.id] = copy.deepcopy(webhook)

    async def subscribed(self, owners: Iterable[UserId], events: Iterable[WebhookEvent]) -> Sequence[Webhook]:
        who, what = set(owners), set(events)
        return [copy.deepcopy(w) for w in self.s.webhooks.values() if w.owner in who and w.active and w.events & what]

    async def add_deliveries(self, deliveries: Sequence[WebhookDelivery]) -> int:
        added = 0
        for d in deliveries:
            if d.id in self.s.webhook_deliveries or d.webhook_id not in self.s.webhooks:
                continue
            stored = copy.deepcopy(d)
            stored.position = 1 + max((x.position for x in self.s.webhook_deliveries.values()), default=0)
            self.s.webhook_deliveries[d.id] = stored
            added += 1
        return added

    async def claim_due(self, *, at: datetime, lease: timedelta, limit: int) -> Sequence[DueDelivery]:
        heads: dict[tuple[WebhookId, str], WebhookDelivery] = {}
        for d in sorted(self.s.webhook_deliveries.values(), key=lambda d: d.position):
            if d.state is WebhookDeliveryState.PENDING:
                heads.setdefault((d.webhook_id, d.ordering_key), d)
        due = [d for d in heads.values() if d.next_attempt_at <= at and self.s.webhook_leases.get(d.id, at) <= at]
        claimed = sorted(due, key=lambda d: (d.next_attempt_at, d.position))[:limit]
        for d in claimed:
            self.s.webhook_leases[d.id] = at + lease
        return [DueDelivery(copy.deepcopy(d), copy.deepcopy(self.s.webhooks[d.webhook_id])) for d in claimed]

    async def save_delivery(self, delivery: WebhookDelivery) -> None:
        stored = self.s.webhook_deliveries.get(delivery.id)
        if stored is not None:
            self.s.webhook_deliveries[delivery.id] = attrs.evolve(copy.deepcopy(delivery), position=stored.position)
            self.s.webhook_leases.pop(delivery.id, None)

    async def get_delivery(self, webhook_id: WebhookId, delivery_id: WebhookDeliveryId) -> WebhookDelivery | None:
        d = self.s.webhook_deliveries.get(delivery_id)
        return copy.deepcopy(d) if d is not None and d.webhook_id == webhook_id else None

    async def deliveries_of(
        self, webhook_id: WebhookId, *, state: WebhookDeliveryState | None, before: int | None, limit: int
    ) -> Sequence[WebhookDelivery]:
        found = [
            d
            for d in self.s.webhook_deliveries.values()
            if d.webhook_id == webhook_id
            and (state is None or d.state is state)
            and (before is None or d.position < before)
        ]
        return [copy.deepcopy(d) for d in sorted(found, key=lambda d: -d.position)[:limit]]


class InMemoryUnitOfWork:
    """A transaction over an InMemoryStore; rolls back unless committed."""

    def __init__(self, store: InMemoryStore) -> None:
        self.store = store
        # Annotated with the ports, so mypy checks that this twin fits the UnitOfWork protocol.
        self.users: UserRepository = InMemoryUserRepository(self)
        self.clients: ApiClientRepository = InMemoryApiClientRepository(self)
        self.identities: IdentityRepository = InMemoryIdentityRepository(self)
        self.conversations: ConversationRepository = InMemoryConversationRepository(self)
        self.messages: MessageRepository = InMemoryMessageRepository(self)
        self.refresh_tokens: RefreshTokenRepository = InMemoryRefreshTokenRepository(self)
        self.outbox: Outbox = InMemoryOutbox(self)
        self.routing: RoutingProgress = InMemoryRoutingProgress(self)
        self.sends: SendLedger = InMemorySendLedger(self)
        self.lookups: SendLookups = InMemorySendLookups(self)
        self.bindings: AddressBindings = InMemoryAddressBindings(self)
        self.early_receipts: EarlyReceipts = InMemoryEarlyReceipts(self)
        self.early_watermarks: EarlyWatermarks = InMemoryEarlyWatermarks(self)
        self.uploads: UploadRepository = InMemoryUploadRepository(self)
        self.webhooks: WebhookRepository = InMemoryWebhookRepository(self)
        self._snapshot: _State | None = None

    async def __aenter__(self) -> Self:
        await self.store.lock.acquire()
        self._snapshot = copy.deepcopy(self.store.state)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await self.rollback()
        finally:
            self.store.lock.release()

    async def commit(self) -> None:
        self._snapshot = copy.deepcopy(self.store.state)

    async def rollback(self) -> None:
        if self._snapshot is not None:
            self.store.state = self._snapshot
            self._snapshot = copy.deepcopy(self._snapshot)


def _fits(store: InMemoryStore) -> UnitOfWork:
    return InMemoryUnitOfWork(store)  # mypy: the twin is a UnitOfWork
