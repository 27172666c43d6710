"""Builders and fakes shared by the unit tests and the BDD specs.

Domain builders (``a_conversation(**overrides)``, ``a_delivery``, ``an_upload``...) replace fixture soup;
``Chat4All`` wires the real ``MessageBus`` over the in-memory adapters with a controllable clock and
offers the few steps almost every application test needs (register people, start conversations, send).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs

from adapters.memory import InMemoryStore
from adapters.security import JwtTokenIssuer, TokenSettings
from adapters.system import UuidGenerator
from adapters.webhooks import EgressPolicy, EgressUrlPolicy
from application import commands as c
from application import views as v
from application.bus import MessageBus
from application.errors import Unavailable
from application.handlers import Deps, Settings
from application.limits import RateLimits
from application.ports import (
    ChannelCapabilities,
    ChannelError,
    DeliveryKey,
    Event,
    OutboundMessage,
    PasswordHasher,
    StorageUnavailable,
)
from domain.channels import Channel, ChannelAddress
from domain.conversations import Conversation, ConversationType, Participant
from domain.deliveries import Delivery
from domain.ids import ConversationId, FileId, MessageId, UserId
from domain.messages import Message, TextContent
from domain.uploads import UploadSession

T0 = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)
PASSWORD = "correct horse battery staple"


# --- fakes ---------------------------------------------------------------------------


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, start: datetime = T0) -> None:
        self._now = start

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta = timedelta(seconds=1)) -> datetime:
        self._now += delta
        return self._now

    def set(self, at: datetime) -> None:
        self._now = at


class FakePasswordHasher:
    """Fast and deterministic; records what it was asked to verify."""

    PREFIX = "fake-sha256$"

    def __init__(self) -> None:
        self.verified: list[str] = []
        self.hashed = 0

    async def hash(self, password: str) -> str:
        self.hashed += 1
        return self.PREFIX + hashlib.sha256(password.encode()).hexdigest()

    async def verify(self, encoded: str, password: str) -> bool:
        self.verified.append(encoded)
        return encoded == self.PREFIX + hashlib.sha256(password.encode()).hexdigest()


# --- domain builders -----------------------------------------------------------------


def a_user_id() -> UserId:
    return UserId(uuid.uuid4())


def a_message_id() -> MessageId:
    return MessageId(uuid.uuid4())


def an_address(text: str = "whatsapp:+5511999998888") -> ChannelAddress:
    return ChannelAddress.parse(text)


def a_conversation(
    *,
    creator: UserId | None = None,
    others: Sequence[Participant] | None = None,
    type: ConversationType | None = None,
    **overrides: Any,
) -> Conversation:
    creator = creator or a_user_id()
    others = list(others) if others is not None else [Participant.user(a_user_id())]
    kind = type or (ConversationType.PRIVATE if len(others) == 1 else ConversationType.GROUP)
    args: dict[str, Any] = {
        "id": ConversationId(uuid.uuid4()),
        "type": kind,
        "creator": creator,
        "others": others,
        "metadata": {},
        "at": T0,
    }
    args.update(overrides)
    return Conversation.start(**args)


def a_message(conversation: Conversation, *, sender: Participant | None = None, **overrides: Any) -> Message:
    sender = sender or conversation.members[0]
    args: dict[str, Any] = {
        "id": a_message_id(),
        "conversation": conversation,
        "sender": sender,
        "seq": 1,
        "content": TextContent("hello"),
        "recipients": conversation.others_than(sender),
        "channels": None,
        "metadata": {},
        "at": T0,
        "fingerprint": "f" * 64,
    }
    args.update(overrides)
    return Message.accept(**args)


def a_delivery(**overrides: Any) -> Delivery:
    args: dict[str, Any] = {
        "message_id": a_message_id(),
        "recipient": Participant.user(a_user_id()),
        "channel": Channel.INTERNAL,
        "at": T0,
    }
    args.update(overrides)
    return Delivery.accepted(**args)


def an_upload(**overrides: Any) -> UploadSession:
    args: dict[str, Any] = {
        "id": FileId(uuid.uuid4()),
        "owner_id": a_user_id(),
        "filename": "report.pdf",
        "size": 3 * UploadSession.MIN_CHUNK + 10,
        "content_type": "application/pdf",
        "checksum": None,
        "chunk_size": UploadSession.MIN_CHUNK,
        "at": T0,
        "expires_at": T0 + timedelta(hours=24),
    }
    args.update(overrides)
    return UploadSession.initiate(**args)


class FakePublisher:
    """The event log as a list; told to fail, it raises Unavailable like the real one."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.failing = False

    async def publish(self, events: Sequence[Event]) -> None:
        if self.failing:
            raise Unavailable("the event log is down")
        self.events.extend(events)

    def on(self, topic: str) -> list[Mapping[str, Any]]:
        return [e.payload for e in self.events if e.topic == topic]


class ScriptedConnector:
    """A platform whose answers are scripted: each send pops the next outcome (default: accepted)."""

    def __init__(
        self,
        channel: Channel = Channel.TELEGRAM,
        *script: ChannelError | None,
        lookup: bool = False,
        echoes: bool = False,
    ) -> None:
        self.channel = channel
        self.capabilities = ChannelCapabilities(lookup=lookup, echoes=echoes)
        self.script: list[ChannelError | None] = list(script)
        self.accepted: list[OutboundMessage] = []
        self.calls = 0
        self.down = False

    async def send(self, message: OutboundMessage) -> str:
        self.calls += 1
        if self.down:
            raise ChannelError(f"{self.channel.value} is down")
        outcome = self.script.pop(0) if self.script else None
        if outcome is not None:
            raise outcome
        self.accepted.append(message)
        return f"{self.channel.value}-{len(self.accepted)}"

    async def find_sent(self, delivery: DeliveryKey) -> str | None:
        found = [i for i, m in enumerate(self.accepted, 1) if m.delivery == delivery]
        return f"{self.channel.value}-{found[0]}" if found and self.capabilities.lookup else None

    async def close(self) -> None:
        self.closed = True


# --- the application core on in-memory adapters ---------------------------------------


@attrs.define
class Chat4All:
    """The real message bus over the in-memory adapters, with helpers for the usual arrangements."""

    store: InMemoryStore
    clock: FakeClock
    bus: MessageBus
    users: dict[str, UserId] = attrs.Factory(dict)

    async def handle(self, command: object) -> Any:
        return await self.bus.handle(command)

    async def register(self, username: str, *, password: str = PASSWORD, display_name: str | None = None) -> UserId:
        view: v.UserView = await self.bus.handle(c.RegisterUser(username, password, display_name))
        self.users[username] = view.user_id
        return view.user_id

    async def register_all(self, *usernames: str) -> list[UserId]:
        return [await self.register(name) for name in usernames]

    async def link(self, username: str, channel: str, external_id: str) -> v.IdentityView:
        view: v.IdentityView = await self.bus.handle(c.LinkIdentity(self.users[username], channel, external_id))
        return view

    async def start(
        self, creator: str, *members: str, type: ConversationType | None = None, **metadata: Any
    ) -> ConversationId:
        """Start a conversation between ``creator`` and ``members`` (usernames, ids or addresses)."""
        kind = type or (ConversationType.PRIVATE if len(members) == 1 else ConversationType.GROUP)
        view: v.ConversationView = await self.bus.handle(
            c.CreateConversation(self.users[creator], kind, list(members), metadata)
        )
        return view.conversation_id

    async def send(
        self, sender: str, conversation: ConversationId, text: str = "hello", **overrides: Any
    ) -> v.Accepted:
        args: dict[str, Any] = {
            "sender": self.users[sender],
            "conversation_id": conversation,
            "payload": {"type": "text", "text": text},
        }
        args.update(overrides)
        accepted: v.Accepted = await self.bus.handle(c.SendMessage(**args))
        return accepted

    async def history(self, viewer: str, conversation: ConversationId, **query: Any) -> v.HistoryView:
        page: v.HistoryView = await self.bus.handle(c.GetHistory(self.users[viewer], conversation, **query))
        return page

    async def status(self, viewer: str, message_id: MessageId) -> v.MessageStatusView:
        view: v.MessageStatusView = await self.bus.handle(c.GetMessageStatus(self.users[viewer], message_id))
        return view

    async def mark_read(self, reader: str, message_id: MessageId) -> v.ReadReceipt:
        receipt: v.ReadReceipt = await self.bus.handle(c.MarkRead(self.users[reader], message_id))
        return receipt

    def events(self, topic: str | None = None) -> list[Mapping[str, Any]]:
        """The outbox events committed so far, oldest first, optionally of one topic."""
        return [event for t, _key, event in self.store.state.outbox if topic is None or t == topic]

    def stored_messages(self) -> list[Message]:
        return list(self.store.state.messages.values())


def a_chat4all(
    *,
    clock: FakeClock | None = None,
    hasher: PasswordHasher | None = None,
    settings: Settings | None = None,
    limits: RateLimits | None = None,
) -> Chat4All:
    store = InMemoryStore()
    clock = clock or FakeClock()
    deps = Deps(
        uow=store.uow,
        clock=clock,
        ids=UuidGenerator(),
        hasher=hasher or FakePasswordHasher(),
        tokens=JwtTokenIssuer(TokenSettings(secret="x" * 32)),
        settings=settings or Settings(),
        webhook_urls=EgressUrlPolicy(EgressPolicy()),
    )
    return Chat4All(store=store, clock=clock, bus=MessageBus(deps, limits=limits))


class StoreOutage:
    """An object store whose calls named in ``down`` fail with StorageUnavailable, as S3 or a disk that is down."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.down: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        if name not in self.down:
            return getattr(self.store, name)
        if name == "read":

            async def failing_read(*_args: Any, **_kwargs: Any) -> Any:
                raise StorageUnavailable(f"{name}: connection refused")
                yield b""  # an async generator, as the real one

            return failing_read

        async def failing(*_args: Any, **_kwargs: Any) -> Any:
            raise StorageUnavailable(f"{name}: connection refused")

        return failing


def core_error_classes() -> list[type[Exception]]:
    """Every error class of ``domain`` and ``application``: each runtime must map them all."""
    import importlib
    import inspect
    import pkgutil

    import application
    import domain
    from application.errors import ApplicationError
    from domain.errors import DomainError

    found: set[type[Exception]] = set()
    for package in (domain, application):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            module = importlib.import_module(info.name)
            for _, obj in inspect.getmembers(module, inspect.isclass):
                if issubclass(obj, DomainError | ApplicationError):
                    found.add(obj)
    return sorted(found, key=lambda c: c.__qualname__)
