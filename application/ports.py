"""Ports: what the use cases need from the outside world, as typing.Protocol classes."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import AsyncIterable, AsyncIterator, Collection, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Protocol, Self
from uuid import UUID

import attrs

from application.cursors import SyncPosition, encode_conversation_cursor
from application.errors import Unavailable
from domain.channels import Channel, ChannelAddress
from domain.conversations import Conversation, Participant
from domain.deliveries import Delivery, DeliveryStatus
from domain.ids import ClientId, ConversationId, FileId, MessageId, UserId, WebhookDeliveryId, WebhookId
from domain.messages import Message
from domain.presence import PresenceStatus
from domain.uploads import UploadSession
from domain.users import ApiClient, ChannelIdentity, User
from domain.webhooks import Webhook, WebhookDelivery, WebhookDeliveryState, WebhookEvent


class Clock(Protocol):
    """The current time."""

    @abstractmethod
    def now(self) -> datetime:
        """Return the current UTC time (timezone-aware)."""


class IdGenerator(Protocol):
    """New unique ids."""

    @abstractmethod
    def new(self) -> UUID:
        """Return a fresh UUID."""


class PasswordHasher(Protocol):
    """Slow, salted password hashing (Argon2id in production)."""

    @abstractmethod
    async def hash(self, password: str) -> str:
        """Return an encoded hash of ``password``."""

    @abstractmethod
    async def verify(self, encoded: str, password: str) -> bool:
        """Return True when ``password`` matches ``encoded``; never raises for a mismatch."""


@attrs.frozen
class AccessToken:
    """A signed, short-lived bearer token."""

    token: str
    expires_in: int


class TokenIssuer(Protocol):
    """Issues access tokens and random secrets."""

    @abstractmethod
    def issue_access(self, user_id: UserId, *, at: datetime) -> AccessToken:
        """Return a signed access token for ``user_id``, valid from ``at``."""

    @abstractmethod
    def new_secret(self) -> str:
        """Return a new high-entropy, URL-safe secret (refresh tokens, client secrets)."""


@attrs.frozen
class PageRequest:
    """Keyset pagination: at most ``limit`` items after an opaque cursor."""

    limit: int
    cursor: str | None = None


@attrs.frozen
class ConversationPage:
    """One page of conversations and the cursor of the next page, if any."""

    items: Sequence[Conversation]
    next_cursor: str | None

    @classmethod
    def of(cls, found: Sequence[Conversation], limit: int) -> ConversationPage:
        """The first ``limit`` of ``found`` (most recent first); a cursor when ``found`` holds more."""
        items = list(found[:limit])
        last = items[-1] if items else None
        more = len(found) > limit
        cursor = (
            encode_conversation_cursor(last.last_activity_at, last.id)
            if more and last is not None and last.last_activity_at is not None
            else None
        )
        return cls(items=items, next_cursor=cursor)


class UserRepository(Protocol):
    """Users, unique by id and by username."""

    @abstractmethod
    async def add(self, user: User) -> None:
        """Store a new user.

        Raises:
            Conflict: the username is taken.
        """

    @abstractmethod
    async def get(self, user_id: UserId) -> User | None:
        """Return the user, or None."""

    @abstractmethod
    async def get_by_username(self, username: str) -> User | None:
        """Return the user with this username, or None."""

    @abstractmethod
    async def get_many(self, user_ids: Sequence[UserId]) -> Mapping[UserId, User]:
        """Return the users among ``user_ids`` that exist."""


class ApiClientRepository(Protocol):
    """Application credentials."""

    @abstractmethod
    async def add(self, client: ApiClient) -> None:
        """Store a new client."""

    @abstractmethod
    async def get(self, client_id: ClientId) -> ApiClient | None:
        """Return the client, or None."""


class IdentityRepository(Protocol):
    """Linked platform identities: one per channel per user, one user per address."""

    @abstractmethod
    async def add(self, identity: ChannelIdentity) -> None:
        """Link an identity.

        Raises:
            Conflict: the user already has this channel, or the address belongs to someone.
        """

    @abstractmethod
    async def remove(self, user_id: UserId, channel: Channel) -> bool:
        """Unlink; return False when there was nothing to unlink."""

    @abstractmethod
    async def list_for_user(self, user_id: UserId) -> Sequence[ChannelIdentity]:
        """The user's identities, ordered by channel."""

    @abstractmethod
    async def find_by_address(self, address: ChannelAddress) -> ChannelIdentity | None:
        """Who owns ``address``, if anyone."""

    @abstractmethod
    async def list_for_users(self, user_ids: Sequence[UserId]) -> Sequence[ChannelIdentity]:
        """Every identity of these users."""


class ConversationRepository(Protocol):
    """Conversations, their members and their message counter."""

    @abstractmethod
    async def add(self, conversation: Conversation) -> None:
        """Store a new conversation."""

    @abstractmethod
    async def add_if_absent(self, conversation: Conversation) -> bool:
        """Store ``conversation`` unless one with its id exists; return True when this call stored it.

        Concurrent callers with the same id: one stores it, the others wait for it and get False.
        """

    @abstractmethod
    async def get(self, conversation_id: ConversationId) -> Conversation | None:
        """Return the conversation, or None."""

    @abstractmethod
    async def list_for(self, member: Participant, page: PageRequest) -> ConversationPage:
        """The member's conversations, most recent activity first (ties by id)."""

    @abstractmethod
    async def peers_of(self, user_id: UserId) -> Sequence[UserId]:
        """The other users who share a conversation with ``user_id``, each once."""

    @abstractmethod
    async def reserve_seqs(self, counts: Mapping[ConversationId, int], *, at: datetime) -> Mapping[ConversationId, int]:
        """Reserve ``counts[c]`` consecutive message positions in each conversation; mark activity at ``at``.

        Returns the first reserved position of each conversation. Holds the conversations
        (locked in id order, so concurrent callers cannot deadlock) until the unit of work
        ends: concurrent senders get strictly increasing, gap-free positions, and a rolled-back
        reservation is given again.

        Raises:
            KeyError: a conversation does not exist.
        """


DeliveryKey = tuple[MessageId, str, Channel]
"""What identifies a delivery: (message id, recipient key, channel); see ``Delivery.key``."""


class DuplicateMessage(Exception):
    """A message with this id already exists (raised by MessageRepository.add)."""


@attrs.frozen
class MessageOrigin:
    """Where a message belongs and who sent it."""

    conversation_id: ConversationId
    sender: Participant


@attrs.frozen(kw_only=True)
class HistoryQuery:
    """Which slice of a conversation's history to read, as seen by ``viewer``."""

    conversation_id: ConversationId
    viewer: Participant
    limit: int
    after_seq: int | None = None
    before_seq: int | None = None
    since: datetime | None = None


@attrs.frozen
class ConversationSummary:
    """What a conversation list shows of one conversation's messages, as one viewer sees them."""

    last_message: Message | None
    """The latest (highest seq) message the viewer sent or receives, as history has it; None: there is none."""
    unread: int
    """How many of the messages the viewer receives it has read on none of its channels.

    A message is unread while the viewer has deliveries of it and none of them is READ: a read on any
    channel (``POST /v1/messages/{id}/read`` reads every channel; a platform's read receipt one) reads it.
    """


class MessageRepository(Protocol):
    """Messages and their deliveries."""

    @abstractmethod
    async def add(self, message: Message, deliveries: Sequence[Delivery]) -> None:
        """Store a message and its deliveries: ``add_many`` with one."""

    @abstractmethod
    async def add_many(self, accepted: Sequence[tuple[Message, Sequence[Delivery]]]) -> None:
        """Store messages and their deliveries, all or none.

        Raises:
            DuplicateMessage: a message id is taken, raised here or, as an adapter may write
                with the commit, by ``UnitOfWork.commit()``; nothing of the unit of work is kept.
        """

    @abstractmethod
    async def get(self, message_id: MessageId) -> Message | None:
        """Return the message, or None."""

    @abstractmethod
    async def get_many(self, message_ids: Sequence[MessageId]) -> Mapping[MessageId, Message]:
        """The messages that exist among ``message_ids``, by id."""

    @abstractmethod
    async def origins_of(self, message_ids: Sequence[MessageId]) -> Mapping[MessageId, MessageOrigin]:
        """The conversation and sender of each message that exists among ``message_ids`` (nothing else is read)."""

    @abstractmethod
    async def history(self, query: HistoryQuery) -> Sequence[Message]:
        """Messages the viewer sent or receives, ascending by seq.

        With ``after_seq`` the first ``limit`` after it; otherwise the last ``limit``
        before ``before_seq`` (or the end).
        """

    @abstractmethod
    async def summaries(
        self, viewer: Participant, conversation_ids: Sequence[ConversationId]
    ) -> Mapping[ConversationId, ConversationSummary]:
        """Each conversation's summary as ``viewer`` sees it (see ``ConversationSummary``), all in one query.

        One entry per id given: with no last message and nothing unread when the conversation holds
        nothing for the viewer, or does not exist. Membership is the caller's to check, as for ``history``.
        """

    @abstractmethod
    async def deliveries(self, message_ids: Sequence[MessageId]) -> Sequence[Delivery]:
        """The deliveries of these messages, with their history."""

    @abstractmethod
    async def created_since(self, viewer: Participant, after: SyncPosition, *, limit: int) -> Sequence[Message]:
        """The first ``limit`` messages after ``after`` (by ``created_at``, then id) the viewer may see.

        Those it sent or receives, in conversations it is a member of.
        """

    @abstractmethod
    async def changed_since(
        self, viewer: Participant, after: SyncPosition, *, limit: int
    ) -> Sequence[tuple[Delivery, MessageOrigin]]:
        """The first ``limit`` delivery changes after ``after`` (by ``updated_at``, then key) the viewer follows.

        Deliveries of messages the viewer sent, and its own deliveries once READ (its other clients
        read them), in conversations it is a member of.
        """

    @abstractmethod
    async def shares_file(self, file_id: FileId, viewer: Participant) -> bool:
        """Whether a message the viewer sent or receives, in a conversation it is a member of, carries the file."""

    @abstractmethod
    async def unsent_of(self, message_ids: Sequence[MessageId]) -> Sequence[DeliveryKey]:
        """The platform deliveries of these messages still SENT, by message then as planned (no history read)."""

    @abstractmethod
    async def pending_for(
        self, conversation_id: ConversationId, recipient: Participant, *, up_to_seq: int
    ) -> Sequence[Delivery]:
        """The recipient's deliveries in the conversation, up to ``up_to_seq``, not yet READ."""

    @abstractmethod
    async def save_progress(self, deliveries: Sequence[Delivery]) -> None:
        """Persist the new status and the new history entries of these deliveries."""

    @abstractmethod
    async def in_ranges(self, ranges: Mapping[ConversationId, tuple[int, int]]) -> Sequence[Message]:
        """For each conversation and ``(after_seq, up_to_seq)``, its messages with ``after_seq < seq <= up_to_seq``.

        Each conversation's messages come in ascending seq order (conversations in no set order).
        """

    @abstractmethod
    async def lock_deliveries(self, keys: Sequence[DeliveryKey]) -> Sequence[Delivery]:
        """The deliveries with these keys (unknown keys are skipped), locked until the unit of work ends."""

    @abstractmethod
    async def unsent_before(
        self, threads: Mapping[tuple[ConversationId, str, Channel], int], *, limit: int
    ) -> Sequence[Delivery]:
        """Platform deliveries still SENT and not handed over, below each thread's seq, oldest first.

        A thread is (conversation, recipient, channel): what must reach the platform before that seq.
        """

    @abstractmethod
    async def unsent(self, *, updated_before: datetime, limit: int) -> Sequence[Delivery]:
        """Platform deliveries still SENT, not handed to their platform, untouched since before ``updated_before``."""


class RefreshTokenRepository(Protocol):
    """Single-use refresh tokens, stored as digests."""

    @abstractmethod
    async def add(self, digest: str, user_id: UserId, *, expires_at: datetime) -> None:
        """Store a refresh token digest."""

    @abstractmethod
    async def consume(self, digest: str, *, at: datetime) -> UserId | None:
        """Atomically use the token once; None when unknown, used or expired."""


@attrs.frozen
class OutboxRecord:
    """A committed outbox row waiting for the relay."""

    id: int
    topic: str
    key: str
    payload: Mapping[str, Any]
    headers: Mapping[str, str] = attrs.field(factory=dict, kw_only=True)


class Outbox(Protocol):
    """Integration events written in the same transaction as the change they describe."""

    @abstractmethod
    async def add(
        self, topic: str, key: str, event: Mapping[str, Any], *, headers: Mapping[str, str] | None = None
    ) -> None:
        """Queue ``event`` for publication on ``topic`` under partition ``key``.

        ``headers`` travel with it to the log (a trace context); None: whatever the adapter finds current.
        """

    @abstractmethod
    async def claim(self, limit: int) -> Sequence[OutboxRecord]:
        """The oldest unpublished events, at most ``limit``, in id order.

        They stay claimed until the unit of work ends: concurrent relays skip them.
        """

    @abstractmethod
    async def mark_published(self, ids: Sequence[int], *, at: datetime) -> None:
        """Record that these events reached the log."""

    @abstractmethod
    async def purge(self, *, published_before: datetime, limit: int) -> int:
        """Delete at most ``limit`` events published before ``published_before``; return how many."""

    @abstractmethod
    async def unpublish(self, *, published_after: datetime, published_before: datetime) -> int:
        """Mark the events published in [after, before) as not published; return how many.

        The relay then publishes them again: the log that held them lost them.
        """

    @abstractmethod
    async def backlog(self) -> int:
        """How many committed events are not published yet."""


class RoutingProgress(Protocol):
    """How far the router has turned each conversation's messages into delivery jobs."""

    @abstractmethod
    async def lock(self, conversation_ids: Sequence[ConversationId], *, at: datetime) -> Mapping[ConversationId, int]:
        """Each conversation's routed seq (0 if never routed), locked until the unit of work ends."""

    @abstractmethod
    async def advance(self, routed: Mapping[ConversationId, int], *, at: datetime) -> None:
        """Record that each conversation's messages up to its seq in ``routed`` are routed."""

    @abstractmethod
    async def behind(self, *, active_after: datetime, idle_since: datetime, limit: int) -> Mapping[ConversationId, int]:
        """Conversations with unrouted messages accepted between the two times, with the last such seq."""


@attrs.frozen
class SendClaim:
    """Where one delivery stands in the send ledger, as a channel worker claims it."""

    platform_message_id: str | None
    """Set once the platform accepted it: nothing more to send."""
    claimed_at: datetime | None
    """When the (still unfinished) claim was made; None if another worker made it just now."""
    fresh: bool
    """True when this claim is the caller's: it may send."""


class SendLedger(Protocol):
    """What each platform accepted: one entry per delivery, claimed before the send, completed after it.

    A claim without a platform id is a send whose outcome is unknown (its worker died): the next
    worker must not simply send again, or the platform gets the message twice.
    """

    @abstractmethod
    async def sent(self, keys: Sequence[DeliveryKey]) -> Mapping[DeliveryKey, str]:
        """The platform message ids of those of ``keys`` already handed over."""

    @abstractmethod
    async def claim(
        self, keys: Sequence[DeliveryKey], *, at: datetime, reopen: Collection[DeliveryKey] = ()
    ) -> Mapping[DeliveryKey, SendClaim]:
        """Claim the deliveries not claimed yet; report every existing delivery's entry (unknown ones are absent).

        Deliveries that FAILED are absent too, unless ``reopen`` names them: a platform's refusal is final even
        when its job is read again (a rebalance, the sweeper or the relay published it twice), while a dead
        letter replayed is meant to go out again.
        """

    @abstractmethod
    async def record(
        self, handed_over: Sequence[tuple[DeliveryKey, str]], *, at: datetime
    ) -> Mapping[DeliveryKey, datetime]:
        """Complete entries with the platform's message ids; return those this completed, with their claim times.

        A delivery already completed keeps its id (and is not returned); a delivery without an entry
        gets one claimed at ``at``; a platform id the ledger already holds for another delivery is
        skipped. The caller makes sure the deliveries exist (it holds them locked).
        """

    @abstractmethod
    async def take_over(self, claims: Mapping[DeliveryKey, datetime], *, at: datetime) -> Collection[DeliveryKey]:
        """Make unfinished claims the caller's, claimed anew at ``at``; return those taken.

        Each is taken only if it is still unfinished and still claimed at the time given (the claim
        the caller saw): of two workers that decide to send the same send in doubt, one sends it.
        The new claim time keeps watermarks from covering a send made after them.
        """

    @abstractmethod
    async def release(self, keys: Sequence[DeliveryKey]) -> None:
        """Drop unfinished claims (the send was not made, or failed): a later job may claim them again."""

    @abstractmethod
    async def find(self, channel: Channel, platform_message_ids: Sequence[str]) -> Mapping[str, DeliveryKey]:
        """The deliveries behind these platform message ids (unknown ids are absent)."""

    @abstractmethod
    async def sent_up_to(
        self, channel: Channel, recipient_keys: Sequence[str], *, up_to: datetime, below: DeliveryStatus
    ) -> Sequence[DeliveryKey]:
        """The deliveries on ``channel`` to these recipients handed over, claimed by ``up_to``, still below ``below``.

        What a watermark receipt ("everything before this time was read") covers, oldest first. The
        claim is the bound: it precedes the send, so the platform's time for the message is later.
        Only recorded sends count: a claim whose answer is not recorded may never have reached the
        platform (its worker died before sending it); ``unrecorded_up_to`` names those.
        """

    @abstractmethod
    async def unrecorded_up_to(
        self, channel: Channel, recipient_keys: Sequence[str], *, up_to: datetime
    ) -> Sequence[str]:
        """Those of ``recipient_keys`` with claims on ``channel`` made by ``up_to`` whose answer is not recorded.

        A watermark that outruns the ledger (or a send in doubt) is kept for them as an ``EarlyWatermark``.
        """


@attrs.frozen
class EarlyReceipt:
    """A platform's receipt for a platform id the send ledger does not know yet."""

    channel: Channel
    platform_message_id: str
    status: DeliveryStatus
    at: datetime
    error: str | None = None


class EarlyReceipts(Protocol):
    """Receipts that outran their send's ledger entry, kept until the entry is written.

    A platform may report a message delivered before the channel worker that sent it has recorded
    the platform's id (its batch is still being sent): such receipts wait here, and recording the
    id applies them.
    """

    @abstractmethod
    async def keep(self, receipts: Sequence[EarlyReceipt], *, at: datetime) -> None:
        """Keep these receipts (received at ``at``); a repeated one is kept once."""

    @abstractmethod
    async def take(self, channel: Channel, platform_message_ids: Sequence[str]) -> Sequence[EarlyReceipt]:
        """Remove and return the kept receipts of these platform ids, oldest receipt first."""

    @abstractmethod
    async def take_known(self, *, limit: int) -> Sequence[tuple[EarlyReceipt, DeliveryKey]]:
        """Remove and return at most ``limit`` kept receipts the ledger can now match, each with its delivery.

        Catches what raced: a receipt kept just as its send was recorded (neither saw the other).
        """

    @abstractmethod
    async def purge(self, *, received_before: datetime, limit: int) -> int:
        """Forget at most ``limit`` receipts kept since before ``received_before`` (for messages not ours)."""


@attrs.frozen(kw_only=True)
class EarlyWatermark:
    """A watermark ("everything sent to ``reader`` up to ``up_to`` is ``status``") kept for sends not recorded yet."""

    channel: Channel
    reader: str
    """A recipient key: the reader's address, or the user whose identity that address is."""
    status: DeliveryStatus
    up_to: datetime
    at: datetime


class EarlyWatermarks(Protocol):
    """Watermarks that covered claims whose answer was not recorded yet, kept until those sends are recorded.

    A watermark only covers what the platform had. A claim without a recorded answer may be a send
    the platform accepted (its answer is on its way, or its worker died after the send) or one it
    never got (the worker died before sending): only its record tells. So the watermark waits here,
    and recording a send claimed by ``up_to`` (and before the watermark came) applies it then.
    """

    @abstractmethod
    async def keep(self, watermarks: Sequence[EarlyWatermark], *, at: datetime) -> None:
        """Keep these (received at ``at``): per channel, reader and status, the one reaching furthest."""

    @abstractmethod
    async def covering(
        self, channel: Channel, claims: Mapping[DeliveryKey, datetime]
    ) -> Sequence[tuple[DeliveryKey, EarlyWatermark]]:
        """The kept watermarks that cover these sends (by their claim times), each with the send, DELIVERED first.

        A watermark covers a send to its reader claimed by its ``up_to`` and before it was received.
        """

    @abstractmethod
    async def known(self, *, received_after: datetime, limit: int) -> Sequence[tuple[DeliveryKey, EarlyWatermark]]:
        """At most ``limit`` recorded sends a watermark kept since ``received_after`` covers, below its status.

        Each comes with that watermark. Catches what raced: a watermark kept just as a send it covers
        was recorded (neither saw the other).
        """

    @abstractmethod
    async def purge(self, *, received_before: datetime, limit: int) -> int:
        """Forget at most ``limit`` watermarks kept since before ``received_before``."""


class AddressBindings(Protocol):
    """Which conversation each platform address is bound to: where its replies go.

    An address is bound to the conversation that last sent to it (or that it last wrote in).
    """

    @abstractmethod
    async def bind(self, bindings: Mapping[ChannelAddress, ConversationId], *, at: datetime) -> None:
        """Bind each address to its conversation as of ``at``; an older binding never replaces a newer one."""

    @abstractmethod
    async def bound(self, address: ChannelAddress) -> ConversationId | None:
        """The conversation ``address`` is bound to, if any."""


@attrs.frozen
class Event:
    """An integration event for the log: ``payload`` is JSON; ``key`` picks the partition (order)."""

    topic: str
    key: str
    payload: Mapping[str, Any]
    headers: Mapping[str, str] = attrs.field(factory=dict, kw_only=True)
    """Opaque metadata that travels with the event (the trace context of the request that caused it); empty:
    the publisher's own context."""


class EventPublisher(Protocol):
    """The event log (Kafka): durable, ordered per key."""

    @abstractmethod
    async def publish(self, events: Sequence[Event]) -> None:
        """Publish ``events`` in order and return once the log acknowledged every one of them.

        Events sharing a key keep their relative order. Delivery is at least once: a failure
        may leave some of them published, so consumers must be idempotent.

        Raises:
            Unavailable: the log did not acknowledge them all.
        """


@attrs.frozen
class SendContext:
    """What accepting a batch of messages reads before it writes, fetched together."""

    existing: Mapping[MessageId, Message]
    """The messages that already exist among the ids the clients chose."""
    conversations: Mapping[ConversationId, Conversation]
    """The conversations written to, with their members."""
    channels: Mapping[UserId, frozenset[Channel]]
    """The platforms each user member of those conversations has linked."""


class SendLookups(Protocol):
    """The reads of the send path in one go (an adapter may send them in one round trip)."""

    @abstractmethod
    async def for_sending(
        self, conversation_ids: Sequence[ConversationId], message_ids: Sequence[MessageId]
    ) -> SendContext:
        """The existing messages among ``message_ids``, the conversations and their members' channels."""


class UploadRepository(Protocol):
    """Upload sessions and the chunks each has received."""

    @abstractmethod
    async def add(self, session: UploadSession) -> None:
        """Store a new upload session."""

    @abstractmethod
    async def get(self, file_id: FileId, *, lock: bool = False) -> UploadSession | None:
        """The session with its received chunks; with ``lock``, held until the unit of work ends."""

    @abstractmethod
    async def add_chunk(self, file_id: FileId, index: int, *, at: datetime) -> bool:
        """Record that chunk ``index`` is stored; False when it was already (concurrent resends are safe)."""

    @abstractmethod
    async def save(self, session: UploadSession) -> None:
        """Persist the session's status, digest, failure and blob."""

    @abstractmethod
    async def blob_of(self, sha256: str) -> str | None:
        """The blob of a completed file with this content, if any: identical files share it."""

    @abstractmethod
    async def expired(self, *, at: datetime, limit: int) -> Sequence[UploadSession]:
        """Sessions still uploading whose ``expires_at`` is past ``at``, oldest first."""

    @abstractmethod
    async def count_open(self) -> int:
        """How many sessions are still uploading (expired or not)."""


class UnitOfWork(Protocol):
    """One atomic transaction over every repository; rolls back unless committed."""

    users: UserRepository
    clients: ApiClientRepository
    identities: IdentityRepository
    conversations: ConversationRepository
    messages: MessageRepository
    refresh_tokens: RefreshTokenRepository
    outbox: Outbox
    routing: RoutingProgress
    sends: SendLedger
    lookups: SendLookups
    bindings: AddressBindings
    early_receipts: EarlyReceipts
    early_watermarks: EarlyWatermarks
    uploads: UploadRepository
    webhooks: WebhookRepository

    @abstractmethod
    async def __aenter__(self) -> Self:
        """Begin the transaction."""

    @abstractmethod
    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """End it, rolling back anything not committed."""

    @abstractmethod
    async def commit(self) -> None:
        """Make every change durable."""

    @abstractmethod
    async def rollback(self) -> None:
        """Discard every change made since the transaction began."""


# --- file storage ----------------------------------------------------------------------


@attrs.frozen
class StoredPart:
    """A part of a multipart upload the store holds: its index (0-based), the store's tag and its size."""

    index: int
    etag: str
    size: int


class PartLengthMismatch(Exception):
    """A part's stream did not have the announced number of bytes; nothing of it was kept."""

    def __init__(self, *, expected: int, received: int) -> None:
        super().__init__(f"expected {expected} bytes, received {received}")
        self.expected = expected
        self.received = received


class StorageUnavailable(Unavailable):
    """The object store could not be reached or failed (S3 down or answering 5xx, a disk error): retry later.

    Every ``ObjectStore`` call may raise it. Its message is for clients; ``reason`` (and the cause)
    says what failed, for the logs.
    """

    def __init__(self, reason: str) -> None:
        super().__init__("file storage is unavailable; try again later")
        self.reason = reason


class ObjectStore(Protocol):
    """Where files' bytes live (S3/MinIO, or a directory): objects assembled from numbered parts.

    Memory use is bounded by one part (or a read buffer), whatever the object's size: parts and
    reads are streams. Any call may raise ``StorageUnavailable`` when the store is down or failing.
    """

    min_part_size: int
    """The smallest part the store accepts, except the last one (S3: 5 MiB)."""
    supports_direct: bool
    """Clients can send parts to the store themselves, through ``part_upload_urls`` (S3: presigned PUTs)."""

    @abstractmethod
    async def start_upload(self, key: str, *, part_size: int | None = None) -> str:
        """Open a multipart upload of object ``key``; return its upload id.

        ``part_size`` is the size of every part but the last, when the caller knows it: a store may
        lay the parts out by it (the filesystem store writes them in place).
        """

    @abstractmethod
    async def put_part(self, key: str, upload_id: str, index: int, data: AsyncIterable[bytes], size: int) -> StoredPart:
        """Store part ``index`` (0-based) from ``data``, which must yield exactly ``size`` bytes.

        Sending a part again replaces it.

        Raises:
            PartLengthMismatch: ``data`` yielded more or fewer bytes (nothing is kept).
            KeyError: there is no such upload (aborted, completed or never started).
        """

    @abstractmethod
    async def part_upload_urls(
        self, key: str, upload_id: str, indexes: Sequence[int], *, expires_in: timedelta
    ) -> list[str]:
        """One URL per index, in order, that a client PUTs part ``index``'s bytes to until ``expires_in`` from now.

        The store answers each PUT with the part's ETag (the one ``list_parts`` then reports); a part
        sent again replaces the earlier one. Only for stores with ``supports_direct``.

        Raises:
            NotImplementedError: the store does not take parts from clients (``supports_direct`` is False).
            ValueError: ``expires_in`` is outside what the store signs (S3: 1 second to 7 days).
        """

    @abstractmethod
    async def list_parts(self, key: str, upload_id: str) -> Sequence[StoredPart]:
        """The parts the store holds for this upload, by index.

        Raises:
            KeyError: there is no such upload.
        """

    @abstractmethod
    async def complete_upload(
        self, key: str, upload_id: str, parts: Sequence[StoredPart], *, digest: bool = True
    ) -> str | None:
        """Assemble ``parts`` (in index order) into object ``key``; the upload then no longer exists.

        With ``digest``, returns the object's SHA-256 (hex) if the store can compute it cheaply (the
        filesystem store hashes the file it assembled, in one thread); else None: the caller hashes it.

        Raises:
            KeyError: there is no such upload.
            ValueError: a part is not (or no longer) the one stored.
        """

    @abstractmethod
    async def abort_upload(self, key: str, upload_id: str) -> None:
        """Drop an unfinished upload and its parts; unknown uploads are ignored."""

    @abstractmethod
    def read(self, key: str) -> AsyncIterator[bytes]:
        """The object's bytes, streamed in blocks.

        Raises:
            KeyError: there is no such object (when iteration starts).
        """

    @abstractmethod
    async def size(self, key: str) -> int | None:
        """The object's size in bytes, or None when there is no such object."""

    @abstractmethod
    async def delete(self, key: str) -> None:
        """Delete the object; a missing object is not an error."""

    @abstractmethod
    async def download_url(self, key: str, *, filename: str, content_type: str, expires_in: timedelta) -> str:
        """A URL that serves the object as ``filename`` until ``expires_in`` from now, and is refused after."""


# --- channels ------------------------------------------------------------------------


@attrs.frozen
class ChannelCapabilities:
    """What a platform supports."""

    receipts: bool = True
    """The platform reports DELIVERED/READ (through webhooks or the connector)."""
    lookup: bool = False
    """The platform can say whether it already has a message (``ChannelConnector.find_sent``)."""
    echoes: bool = False
    """The platform echoes the delivery key the connector attaches to a send, with its id for the send (WhatsApp's
    status webhooks, Messenger's and Instagram's message echoes): a send in doubt is settled by the echo."""
    files: bool = True
    """The platform takes files as attachments (else a file goes as a text with a link)."""
    max_attachment_bytes: int = 100 * 1024 * 1024
    attachment_types: tuple[str, ...] = ()
    """The content types (``image/png``) or families (``image/``) it takes as attachments; empty: any."""
    max_text_length: int = 4096
    """In characters, or in UTF-8 bytes on platforms that count bytes (a text within it in bytes always fits)."""

    def attaches(self, content_type: str, size: int) -> bool:
        """Whether a file of this type and size goes as an attachment, rather than as a link."""
        return (
            self.files
            and size <= self.max_attachment_bytes
            and (
                not self.attachment_types
                or any(
                    content_type == t or (t.endswith("/") and content_type.startswith(t)) for t in self.attachment_types
                )
            )
        )


@attrs.frozen
class OutboundMessage:
    """One delivery, as a connector sends it: to one address on its platform."""

    delivery: DeliveryKey
    conversation_id: ConversationId
    seq: int
    to: ChannelAddress
    sender: str
    payload: Mapping[str, Any]
    """``{"type": "text", "text"}``, or ``{"type": "file", "url", "filename", "size", "content_type", "caption"?}``.

    A connector is only handed a file the platform takes as an attachment (``capabilities.attaches``),
    with a short-lived ``url`` to fetch it from; other files reach it as texts carrying a link.
    """


class ChannelError(Exception):
    """A platform refused or failed a send.

    ``permanent`` errors (a blocked recipient, an invalid address) end the delivery as FAILED;
    the others are retried, after ``retry_after`` seconds when the platform said so.
    """

    def __init__(self, reason: str, *, permanent: bool = False, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent
        self.retry_after = retry_after


class ChannelConnector(Protocol):
    """A platform's send API (WhatsApp Cloud API, Messenger/Instagram Send API, Telegram Bot API...)."""

    channel: Channel
    capabilities: ChannelCapabilities

    @abstractmethod
    async def send(self, message: OutboundMessage) -> str:
        """Hand ``message`` to the platform; return the platform's id for it.

        With ``capabilities.echoes``, the request carries ``message.delivery`` where the platform
        echoes it back (the platform's id for the send comes with it, as a SENT ``Receipt`` naming both).

        Raises:
            ChannelError: the platform refused it or could not be reached.
        """

    @abstractmethod
    async def find_sent(self, delivery: DeliveryKey) -> str | None:
        """The platform's id for ``delivery`` if the platform already has it, else None.

        Only meaningful with ``capabilities.lookup``; platforms that cannot tell return None.
        """

    @abstractmethod
    async def close(self) -> None:
        """Release what the connector holds (connections, files)."""


# --- real time -------------------------------------------------------------------------


@attrs.frozen
class PresenceChange:
    """A user's status before and after a signal (equal when nothing changed for others)."""

    before: PresenceStatus
    after: PresenceStatus

    @property
    def changed(self) -> bool:
        return self.before is not self.after


class PresenceStore(Protocol):
    """Who is reachable now: each live client (a socket, a heartbeat) counts until its time-to-live lapses."""

    @abstractmethod
    async def seen(
        self, user_id: UserId, source: str, status: PresenceStatus, *, at: datetime, ttl: timedelta
    ) -> PresenceChange:
        """Client ``source`` of the user is alive with ``status`` until ``at + ttl``."""

    @abstractmethod
    async def gone(self, user_id: UserId, source: str, *, at: datetime) -> PresenceChange:
        """Client ``source`` of the user went away (a socket closed)."""

    @abstractmethod
    async def state(self, user_id: UserId, *, at: datetime) -> tuple[PresenceStatus, datetime | None]:
        """The user's status at ``at`` and when a client of theirs was last seen (None: never)."""

    @abstractmethod
    async def lapsed(self, *, at: datetime, limit: int) -> Sequence[tuple[UserId, datetime | None]]:
        """Users whose every client lapsed by ``at``, with when they were last seen.

        Each lapse is reported once, to one caller, however many call this at the same time.
        """


Frame = Mapping[str, Any]
"""A real-time event as clients receive it: a JSON object with a ``type``."""


class Fanout(Protocol):
    """Real-time frames to every live connection of the given users, whichever process holds them."""

    @abstractmethod
    async def push(self, frames: Sequence[tuple[Frame, Sequence[UserId]]]) -> None:
        """Send each frame to its users' connections (best effort: a client that misses one resyncs)."""


# --- rate limits ------------------------------------------------------------------------


@attrs.frozen
class Rate:
    """A sustained rate with a burst on top: ``burst`` calls at once, then one every ``1 / per_second`` s."""

    per_second: float
    burst: int = 1

    def __attrs_post_init__(self) -> None:
        if self.per_second <= 0 or self.burst < 1:
            raise ValueError("a rate is positive and its burst at least 1")


@attrs.frozen
class Ask:
    """One call's claim on the bucket ``key``: granted now, or booked up to ``max_wait`` seconds ahead."""

    key: str
    rate: Rate
    max_wait: float = 0.0
    """How long the caller will wait for its slot; 0: it takes one now or none (admission control)."""


@attrs.frozen
class Verdict:
    """A bucket's answer.

    Granted: go after ``wait`` seconds (0: at once). Refused: nothing was taken; a slot opens in ``wait`` seconds.
    """

    granted: bool
    wait: float = 0.0


class RateLimiter(Protocol):
    """Token buckets shared by every process that checks them (GCRA: one timestamp per bucket)."""

    @abstractmethod
    async def acquire(self, asks: Sequence[Ask]) -> list[Verdict]:
        """Answer each ask in order (a later ask of the same bucket sees what an earlier one took)."""


# --- outbound webhooks --------------------------------------------------------------------


@attrs.frozen
class DueDelivery:
    """A webhook delivery claimed for an attempt, with where and how to send it."""

    delivery: WebhookDelivery
    webhook: Webhook


class WebhookRepository(Protocol):
    """Webhooks and the log of their deliveries."""

    @abstractmethod
    async def add(self, webhook: Webhook) -> None:
        """Store a new webhook."""

    @abstractmethod
    async def get(self, webhook_id: WebhookId) -> Webhook | None:
        """The webhook, or None."""

    @abstractmethod
    async def list_for(self, owner: UserId) -> Sequence[Webhook]:
        """The owner's webhooks, oldest first."""

    @abstractmethod
    async def remove(self, webhook_id: WebhookId) -> None:
        """Forget the webhook and its deliveries."""

    @abstractmethod
    async def save(self, webhook: Webhook) -> None:
        """Store a webhook's changes (disabled)."""

    @abstractmethod
    async def subscribed(self, owners: Iterable[UserId], events: Iterable[WebhookEvent]) -> Sequence[Webhook]:
        """The active webhooks of any of ``owners`` that want any of ``events``."""

    @abstractmethod
    async def add_deliveries(self, deliveries: Sequence[WebhookDelivery]) -> int:
        """Record new deliveries in order, skipping those whose id is recorded already; return how many were new."""

    @abstractmethod
    async def claim_due(self, *, at: datetime, lease: timedelta, limit: int) -> Sequence[DueDelivery]:
        """Claim up to ``limit`` pending deliveries due by ``at`` for ``lease``, oldest due first.

        Only the first pending delivery of each (webhook, ordering key) is due, so each conversation's
        deliveries go out in order. A claimed delivery is not claimed again until its lease ends, by this
        caller or a concurrent one (so a dispatcher that dies mid-attempt delays it, never loses it).
        """

    @abstractmethod
    async def save_delivery(self, delivery: WebhookDelivery) -> None:
        """Store a delivery's attempt or replay, and end its lease."""

    @abstractmethod
    async def get_delivery(self, webhook_id: WebhookId, delivery_id: WebhookDeliveryId) -> WebhookDelivery | None:
        """The webhook's delivery, or None."""

    @abstractmethod
    async def deliveries_of(
        self, webhook_id: WebhookId, *, state: WebhookDeliveryState | None, before: int | None, limit: int
    ) -> Sequence[WebhookDelivery]:
        """The webhook's deliveries (in ``state``, if given), newest first, from ``position`` ``before`` down."""


@attrs.frozen
class WebhookResponse:
    """What a receiver answered."""

    status: int
    retry_after: float | None = None


class WebhookUnreachable(Exception):
    """No answer: the address was refused by the egress policy, the connection failed, or it timed out."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class WebhookSender(Protocol):
    """Sends webhook calls: POST, never following a redirect, to addresses the egress policy allows."""

    @abstractmethod
    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> WebhookResponse:
        """Raises ``WebhookUnreachable`` when there is no answer."""


class UrlPolicy(Protocol):
    """Which webhook URLs may be registered."""

    @abstractmethod
    def check(self, url: str) -> str:
        """The URL, normalised.

        Raises:
            ValueError: it may not be used, with the reason as its message.
        """
