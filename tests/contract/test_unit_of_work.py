"""UnitOfWork: nothing is kept unless committed, and outbox events commit with the change."""

from __future__ import annotations

import uuid

import pytest

from domain.conversations import Participant
from domain.ids import UserId
from domain.users import User
from tests.builders import T0, a_conversation, a_message
from tests.contract.backends import Backend, store

pytestmark = pytest.mark.contract


def a_user(username: str) -> User:
    return User.register(id=UserId(uuid.uuid4()), username=username, password_hash="h", display_name=None, at=T0)


async def test_leaving_without_commit_keeps_nothing(uow_factory: Backend) -> None:
    alice = a_user("alice")
    conv = a_conversation(creator=alice.id)
    m = a_message(conv)

    async with uow_factory() as uow:
        await uow.users.add(alice)
        await uow.conversations.add(conv)
        await uow.messages.add(m, [])
        await uow.refresh_tokens.add("a" * 64, alice.id, expires_at=T0)
        await uow.outbox.add("chat.messages", str(conv.id), {"type": "message.created"})
        assert await uow.users.get(alice.id) is not None  # visible inside its own unit of work

    async with uow_factory() as uow:
        assert await uow.users.get(alice.id) is None
        assert await uow.users.get_by_username("alice") is None
        assert await uow.conversations.get(conv.id) is None
        assert await uow.messages.get(m.id) is None
        assert await uow.refresh_tokens.consume("a" * 64, at=T0.replace(year=2000)) is None
    assert await uow_factory.outbox() == []


async def test_an_error_rolls_back_and_propagates(uow_factory: Backend) -> None:
    alice = a_user("alice")

    async def fail_midway() -> None:
        async with uow_factory() as uow:
            await uow.users.add(alice)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await fail_midway()

    async with uow_factory() as uow:
        assert await uow.users.get(alice.id) is None


async def test_rollback_discards_and_the_unit_of_work_goes_on(uow_factory: Backend) -> None:
    alice, bob = a_user("alice"), a_user("bob")

    async with uow_factory() as uow:
        await uow.users.add(alice)
        await uow.rollback()
        assert await uow.users.get(alice.id) is None
        await uow.users.add(bob)
        await uow.commit()

    async with uow_factory() as uow:
        assert await uow.users.get(alice.id) is None
        assert await uow.users.get(bob.id) is not None


async def test_work_after_a_commit_needs_its_own_commit(uow_factory: Backend) -> None:
    alice, bob = a_user("alice"), a_user("bob")

    async with uow_factory() as uow:
        await uow.users.add(alice)
        await uow.commit()
        await uow.users.add(bob)

    async with uow_factory() as uow:
        assert await uow.users.get(alice.id) is not None
        assert await uow.users.get(bob.id) is None


async def test_outbox_events_are_written_only_on_commit_in_order(uow_factory: Backend) -> None:
    conv = a_conversation()
    first = {"type": "message.created", "seq": 1, "to": ["user:1", "whatsapp:+5511999998888"], "meta": {"k": None}}
    second = {"type": "message.status", "status": "READ"}

    async with uow_factory() as uow:
        await uow.outbox.add("chat.messages", "dropped", {"type": "never"})
    assert await uow_factory.outbox() == []

    async with uow_factory() as uow:
        await uow.outbox.add("chat.messages", str(conv.id), first)
        await uow.outbox.add("chat.status", str(conv.id), second)
        await uow.commit()

    assert await uow_factory.outbox() == [
        ("chat.messages", str(conv.id), first),
        ("chat.status", str(conv.id), second),
    ]


async def test_a_unit_of_work_can_be_used_again_after_it_ends(uow_factory: Backend) -> None:
    conv = a_conversation()
    await store(uow_factory, conversations=[conv])
    uow = uow_factory()

    async with uow:
        first = (await uow.conversations.reserve_seqs({conv.id: 1}, at=T0))[conv.id]
        await uow.commit()
    async with uow:
        second = (await uow.conversations.reserve_seqs({conv.id: 1}, at=T0))[conv.id]
        got = await uow.conversations.get(conv.id)

    assert (first, second) == (1, 2)
    assert got is not None and Participant.user(conv.created_by) in got.members
