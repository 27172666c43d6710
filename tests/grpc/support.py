"""What the gRPC tests share: the in-process API handle and request builders (the fixtures are in conftest)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from grpclib.client import Channel
from grpclib.health.check import ServiceStatus

from application.bus import MessageBus
from application.realtime import push_events
from application.uploads import FileDeps
from entrypoints.grpc._generated.chat4all import v1 as pb
from tests.api.conftest import Api

CAP = 256 * 1024
"""The message-size cap of these tests' server (the default is 4 MiB)."""


@dataclass
class Grpc:
    """The gRPC channel, and the REST API of the same process for setting up and checking."""

    channel: Channel
    api: Api
    bus: MessageBus
    files: FileDeps
    serving: ServiceStatus
    database: dict[str, bool] = field(default_factory=lambda: {"database": True})
    realtime: Any = None
    outbox: Any = None

    async def push(self) -> int:
        """What the push worker does with the event log: here, with everything the outbox holds."""
        events = [e for topic, _, e in self.outbox.state.outbox if topic in ("chat.messages", "chat.status")]
        return await push_events(self.realtime.deps.fanout, events)

    def stub(self, who: dict[str, Any] | None = None, *, token: str | None = None) -> pb.Chat4AllStub:
        """A stub that calls as ``who`` (a user from ``api.user``), with ``token``, or without credentials."""
        if who is not None:
            return pb.Chat4AllStub(self.channel, metadata={"authorization": who["headers"]["Authorization"]})
        if token is not None:
            return pb.Chat4AllStub(self.channel, metadata={"authorization": token})
        return pb.Chat4AllStub(self.channel)

    async def pair(self, a: str = "ana", b: str = "bob") -> tuple[dict[str, Any], dict[str, Any], str]:
        """Two users and their private conversation's id."""
        first, second = await self.api.user(a), await self.api.user(b)
        conv = await self.api.conversation(first, b)
        return first, second, str(conv["conversation_id"])


def text(conversation_id: str, body: str, **extra: Any) -> pb.SendMessageRequest:
    return pb.SendMessageRequest(
        conversation_id=conversation_id, payload=pb.Payload(text=pb.TextPayload(text=body)), **extra
    )
