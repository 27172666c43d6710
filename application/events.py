"""The shapes of the integration events the use cases publish, and the payload of a message's content."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from application import topics
from application.ports import Outbox
from domain.conversations import Conversation
from domain.deliveries import Delivery
from domain.ids import ConversationId
from domain.messages import Content, TextContent
from domain.uploads import UploadSession


def payload_of(content: Content) -> dict[str, Any]:
    """The JSON payload of a message's content (the shape the API accepts)."""
    if isinstance(content, TextContent):
        return {"type": "text", "text": content.text}
    out: dict[str, Any] = {"type": "file", "file_id": str(content.file_id)}
    if content.caption is not None:
        out["caption"] = content.caption
    if content.file is not None:
        out |= {"filename": content.file.filename, "size": content.file.size, "content_type": content.file.content_type}
    return out


def status_event(conversation_id: ConversationId, sender: str, dl: Delivery) -> dict[str, Any]:
    """The ``message.status`` event of a delivery's current status; ``sender`` is the message's sender key.

    ``sent_at`` is when the delivery began (its first history entry: the message's acceptance), so
    that readers of the log can tell how long it took to reach ``status`` (``at - sent_at``).
    """
    return {
        "type": "message.status",
        "message_id": str(dl.message_id),
        "conversation_id": str(conversation_id),
        "sender": sender,
        "recipient": dl.recipient.key,
        "channel": dl.channel.value,
        "status": dl.status.value,
        "at": dl.updated_at.isoformat(),
        "sent_at": (dl.history[0].at if dl.history else dl.updated_at).isoformat(),
        **({"error": dl.error} if dl.error else {}),
    }


async def emit_status(
    outbox: Outbox, conversation_id: ConversationId, sender: str, changed: Iterable[Delivery]
) -> None:
    """Queue a ``message.status`` event per changed delivery of one sender's messages, in the same transaction."""
    for dl in changed:
        await outbox.add(topics.STATUS, str(conversation_id), status_event(conversation_id, sender, dl))


async def emit_conversation_created(outbox: Outbox, conv: Conversation) -> None:
    """Queue the ``conversation.created`` event of a new conversation, in the same transaction."""
    await outbox.add(
        topics.ACTIVITY,
        str(conv.id),
        {
            "type": "conversation.created",
            "conversation_id": str(conv.id),
            "conversation_type": conv.type.value,
            "members": [m.key for m in conv.members],
            "created_by": f"user:{conv.created_by}",
            "metadata": dict(conv.metadata),
            "created_at": conv.created_at.isoformat(),
        },
    )


async def emit_file_completed(outbox: Outbox, session: UploadSession, *, at: str) -> None:
    """Queue the ``file.completed`` event of a completed upload, in the same transaction."""
    await outbox.add(
        topics.ACTIVITY,
        str(session.id),
        {
            "type": "file.completed",
            "file_id": str(session.id),
            "owner": f"user:{session.owner_id}",
            "filename": session.filename,
            "size": session.size,
            "content_type": session.content_type,
            "sha256": session.sha256,
            "completed_at": at,
        },
    )
