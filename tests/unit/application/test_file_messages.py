"""File messages: sharing a completed upload, what history shows of it, who may download it, and how it
reaches each platform (an attachment, or a text with a link)."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from adapters.memory.objects import InMemoryObjectStore
from adapters.system import UuidGenerator
from application import topics, uploads
from application.attachments import Attachments, human_size, link_text
from application.errors import NotFound
from application.handlers import MESSAGES_TOPIC
from application.pipeline import (
    ChannelDeps,
    CircuitBreaker,
    DeliveryJob,
    Outcome,
    PipelineDeps,
    deliver_jobs,
    relay_outbox,
    route_events,
)
from application.ports import ChannelCapabilities, ChannelError, OutboundMessage
from application.uploads import FileDeps, FileSettings
from domain.channels import Channel, ChannelAddress
from domain.errors import BusinessRuleViolation
from domain.ids import ConversationId, FileId, MessageId
from domain.uploads import UploadSession
from tests.builders import Chat4All, FakeClock, FakePublisher, ScriptedConnector

pytestmark = pytest.mark.unit

CHUNK = UploadSession.MIN_CHUNK
DATA = hashlib.sha256(b"seed").digest() * (CHUNK // 32 + 100)  # two chunks


@pytest.fixture
def objects() -> InMemoryObjectStore:
    return InMemoryObjectStore()


@pytest.fixture
def files(app: Chat4All, objects: InMemoryObjectStore, clock: FakeClock) -> FileDeps:
    return FileDeps(
        uow=app.store.uow, clock=clock, ids=UuidGenerator(), store=objects, settings=FileSettings(max_size=10 * CHUNK)
    )


@pytest.fixture
async def group(app: Chat4All) -> ConversationId:
    """ana, bruno and carla; eve exists but is not in it."""
    await app.register_all("ana", "bruno", "carla", "eve")
    return await app.start("ana", "bruno", "carla")


async def stream(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def an_upload(files: FileDeps, app: Chat4All, owner: str, *, complete: bool = True) -> FileId:
    view = await uploads.initiate(
        files,
        app.users[owner],
        filename="contrato.pdf",
        size=len(DATA),
        content_type="application/pdf",
        chunk_size=CHUNK,
    )
    for i, start in enumerate(range(0, len(DATA), CHUNK)):
        part = DATA[start : start + CHUNK]
        await uploads.put_chunk(files, app.users[owner], view.file_id, i, stream(part), len(part))
    if complete:
        await uploads.complete(files, app.users[owner], view.file_id)
    return view.file_id


def file_payload(file_id: FileId, caption: str | None = "o contrato") -> dict[str, Any]:
    return {"type": "file", "file_id": str(file_id)} | ({"caption": caption} if caption else {})


# --- sending ------------------------------------------------------------------------------------


async def test_a_completed_upload_is_shared_and_history_describes_the_file(
    app: Chat4All, files: FileDeps, group: ConversationId
) -> None:
    file_id = await an_upload(files, app, "ana")

    accepted = await app.send("ana", group, payload=file_payload(file_id))

    described = {
        "type": "file",
        "file_id": str(file_id),
        "caption": "o contrato",
        "filename": "contrato.pdf",
        "size": len(DATA),
        "content_type": "application/pdf",
    }
    [seen] = (await app.history("bruno", group)).items
    assert (seen.message_id, seen.payload) == (accepted.message_id, described)
    [event] = app.events(MESSAGES_TOPIC)
    assert event["payload"] == described


@pytest.mark.parametrize("case", ["unknown", "unfinished", "someone else's"])
async def test_a_file_the_sender_cannot_share_is_refused_and_nothing_is_stored(
    app: Chat4All, files: FileDeps, group: ConversationId, case: str
) -> None:
    if case == "unknown":
        file_id = FileId(uuid.uuid4())
    else:
        file_id = await an_upload(
            files, app, "eve" if case == "someone else's" else "ana", complete=case != "unfinished"
        )

    with pytest.raises(BusinessRuleViolation) as raised:
        await app.send("ana", group, payload=file_payload(file_id))

    assert raised.value.field == "payload.file_id"
    assert app.stored_messages() == []


async def test_a_recipient_forwards_a_file_it_received(app: Chat4All, files: FileDeps, group: ConversationId) -> None:
    file_id = await an_upload(files, app, "ana")
    await app.send("ana", group, payload=file_payload(file_id))
    elsewhere = await app.start("bruno", "eve")

    await app.send("bruno", elsewhere, payload=file_payload(file_id, caption=None))

    [seen] = (await app.history("eve", elsewhere)).items
    assert seen.payload["filename"] == "contrato.pdf"
    assert "caption" not in seen.payload


# --- downloading --------------------------------------------------------------------------------


async def test_the_owner_and_the_recipients_download_and_no_one_else(
    app: Chat4All, files: FileDeps, group: ConversationId
) -> None:
    file_id = await an_upload(files, app, "ana")
    await app.send("ana", group, payload=file_payload(file_id), to=["bruno"])  # carla does not see this one

    for reader in ("ana", "bruno"):
        link = await uploads.download(files, app.users[reader], file_id)
        assert (link.filename, link.size) == ("contrato.pdf", len(DATA))
    for outsider in ("carla", "eve"):
        with pytest.raises(NotFound):
            await uploads.download(files, app.users[outsider], file_id)


async def test_a_member_who_left_no_longer_downloads(app: Chat4All, files: FileDeps, group: ConversationId) -> None:
    file_id = await an_upload(files, app, "ana")
    await app.send("ana", group, payload=file_payload(file_id))
    state = app.store.state.conversations[group]
    state.members = [m for m in state.members if m.user_id != app.users["bruno"]]

    with pytest.raises(NotFound):
        await uploads.download(files, app.users["bruno"], file_id)


# --- to the platforms ---------------------------------------------------------------------------


def outbound(file_id: FileId, caption: str | None = "o contrato") -> OutboundMessage:
    return OutboundMessage(
        delivery=(MessageId(uuid.uuid4()), "whatsapp:+5511999998888", Channel.WHATSAPP),
        conversation_id=ConversationId(uuid.uuid4()),
        seq=1,
        to=ChannelAddress.parse("whatsapp:+5511999998888"),
        sender="user:x",
        payload=file_payload(file_id, caption) | {"filename": "contrato.pdf", "size": len(DATA)},
    )


@pytest.fixture
def attachments(app: Chat4All, objects: InMemoryObjectStore, clock: FakeClock) -> Attachments:
    return Attachments(uow=app.store.uow, store=objects, clock=clock)


async def test_a_file_the_platform_takes_goes_as_an_attachment_with_a_short_lived_link(
    app: Chat4All, files: FileDeps, attachments: Attachments
) -> None:
    await app.register("ana")
    file_id = await an_upload(files, app, "ana")

    sent = await attachments.prepare(outbound(file_id), ChannelCapabilities(max_attachment_bytes=len(DATA)))

    assert sent.payload == {
        "type": "file",
        "url": sent.payload["url"],
        "filename": "contrato.pdf",
        "size": len(DATA),
        "content_type": "application/pdf",
        "caption": "o contrato",
    }
    assert sent.payload["url"].startswith("memory://")


@pytest.mark.parametrize(
    "capabilities",
    [
        ChannelCapabilities(max_attachment_bytes=len(DATA) - 1),
        ChannelCapabilities(files=False),
        ChannelCapabilities(attachment_types=("image/", "video/")),
    ],
    ids=["too large", "no files", "not a type it takes"],
)
async def test_any_other_file_goes_as_a_text_with_the_caption_and_a_link_valid_for_days(
    app: Chat4All, files: FileDeps, attachments: Attachments, clock: FakeClock, capabilities: ChannelCapabilities
) -> None:
    await app.register("ana")
    file_id = await an_upload(files, app, "ana")

    sent = await attachments.prepare(outbound(file_id), capabilities)

    assert sent.payload["type"] == "text"
    caption, line = sent.payload["text"].split("\n")
    until = clock.now() + timedelta(days=7)
    assert caption == "o contrato"
    assert line.startswith(f"contrato.pdf ({human_size(len(DATA))}, link valid until {until:%Y-%m-%d %H:%M} UTC): ")
    assert line.rsplit(" ", 1)[1].startswith("memory://")


async def test_a_text_that_would_not_fit_loses_caption_and_name_first_never_the_link() -> None:
    url = "https://files.example/" + "x" * 300
    until = FakeClock().now()

    text = link_text("c" * 1024, filename="n" * 255, size=10, url=url, until=until, limit=500)

    assert len(text.encode()) <= 500
    assert text.endswith(url)
    assert "…" in text
    with pytest.raises(ChannelError) as raised:
        link_text(None, filename="n", size=10, url=url, until=until, limit=300)
    assert raised.value.permanent


def test_sizes_read_as_people_read_them() -> None:
    assert [human_size(n) for n in (0, 1023, 1536, 25 * 1024**2, 2 * 1024**3)] == [
        "0 bytes",
        "1023 bytes",
        "1.5 KB",
        "25.0 MB",
        "2.0 GB",
    ]


async def test_a_channel_worker_hands_the_platform_the_file_and_fails_one_that_is_gone(
    app: Chat4All, files: FileDeps, attachments: Attachments, clock: FakeClock
) -> None:
    await app.register_all("ana", "bruno")
    await app.link("bruno", "telegram", "4242")
    pair = await app.start("ana", "bruno")
    kept, lost = await an_upload(files, app, "ana"), await an_upload(files, app, "ana")
    for file_id in (kept, lost):
        await app.send("ana", pair, payload=file_payload(file_id), channels=["telegram"])
    log = FakePublisher()
    deps = PipelineDeps(uow=app.store.uow, clock=clock, publisher=log)
    while await relay_outbox(deps):
        pass
    await route_events(deps, log.on(topics.MESSAGES))
    jobs = [DeliveryJob.from_event(e) for e in log.on(topics.outbound(Channel.TELEGRAM))]
    del app.store.state.uploads[lost]  # as if its record were gone
    platform = ScriptedConnector(Channel.TELEGRAM)
    d = ChannelDeps(pipeline=deps, connector=platform, breaker=CircuitBreaker(clock), attachments=attachments)

    sent, gone = await deliver_jobs(d, jobs)

    assert sent.outcome is Outcome.HANDED_OVER
    [handed] = platform.accepted
    assert handed.payload["type"] == "file"
    assert handed.payload["url"].startswith("memory://")
    assert gone.outcome is Outcome.FAILED
    assert gone.error == "the file is no longer stored"


async def test_a_worker_without_attachments_fails_file_jobs(app: Chat4All, files: FileDeps, clock: FakeClock) -> None:
    await app.register_all("ana", "bruno")
    await app.link("bruno", "telegram", "4242")
    pair = await app.start("ana", "bruno")
    await app.send("ana", pair, payload=file_payload(await an_upload(files, app, "ana")), channels=["telegram"])
    log = FakePublisher()
    deps = PipelineDeps(uow=app.store.uow, clock=clock, publisher=log)
    while await relay_outbox(deps):
        pass
    await route_events(deps, log.on(topics.MESSAGES))
    [job] = [DeliveryJob.from_event(e) for e in log.on(topics.outbound(Channel.TELEGRAM))]
    platform = ScriptedConnector(Channel.TELEGRAM)

    [result] = await deliver_jobs(ChannelDeps(pipeline=deps, connector=platform, breaker=CircuitBreaker(clock)), [job])

    assert (result.outcome, result.error) == (Outcome.FAILED, "this worker cannot send files")
    assert platform.calls == 0
