"""Typed identifiers: every id in Chat4All is a UUID."""

from __future__ import annotations

from typing import NewType
from uuid import UUID

UserId = NewType("UserId", UUID)
ConversationId = NewType("ConversationId", UUID)
MessageId = NewType("MessageId", UUID)
FileId = NewType("FileId", UUID)
ClientId = NewType("ClientId", UUID)
WebhookId = NewType("WebhookId", UUID)
WebhookDeliveryId = NewType("WebhookDeliveryId", UUID)
