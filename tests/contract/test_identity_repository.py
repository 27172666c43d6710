"""IdentityRepository: one identity per channel per user, one user per address."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from application.errors import Conflict
from domain.channels import Channel, ChannelAddress
from domain.conversations import Participant
from domain.ids import UserId
from domain.users import ChannelIdentity
from tests.builders import T0, a_conversation
from tests.contract.backends import Backend, store

pytestmark = pytest.mark.contract

ALICE, BOB = UserId(uuid.uuid4()), UserId(uuid.uuid4())


def identity(user_id: UserId, address: str, *, minutes: int = 0) -> ChannelIdentity:
    return ChannelIdentity(
        user_id=user_id, address=ChannelAddress.parse(address), linked_at=T0 + timedelta(minutes=minutes)
    )


async def link(backend: Backend, *identities: ChannelIdentity) -> None:
    async with backend() as uow:
        for i in identities:
            await uow.identities.add(i)
        await uow.commit()


async def test_a_linked_identity_is_found_by_its_address(uow_factory: Backend) -> None:
    mine = identity(ALICE, "instagram:@Alice.Smith", minutes=3)
    await link(uow_factory, mine)

    async with uow_factory() as uow:
        found = await uow.identities.find_by_address(ChannelAddress.of("instagram", "alice.smith"))
        nobody = await uow.identities.find_by_address(ChannelAddress.of("instagram", "bob"))

    assert found == mine
    assert nobody is None


async def test_a_users_identities_are_listed_by_channel(uow_factory: Backend) -> None:
    await link(
        uow_factory,
        identity(ALICE, "whatsapp:+5511999998888"),
        identity(ALICE, "telegram:12345"),
        identity(BOB, "telegram:999"),
        identity(ALICE, "instagram:alice"),
        identity(ALICE, "messenger:777"),
    )

    async with uow_factory() as uow:
        listed = await uow.identities.list_for_user(ALICE)
        none = await uow.identities.list_for_user(UserId(uuid.uuid4()))

    assert [i.channel for i in listed] == [Channel.INSTAGRAM, Channel.MESSENGER, Channel.TELEGRAM, Channel.WHATSAPP]
    assert all(i.user_id == ALICE for i in listed)
    assert none == []


async def test_an_address_linked_by_someone_else_is_a_conflict_on_external_id(uow_factory: Backend) -> None:
    await link(uow_factory, identity(ALICE, "telegram:12345"))

    async with uow_factory() as uow:
        with pytest.raises(Conflict) as raised:
            await uow.identities.add(identity(BOB, "telegram:12345"))

    assert raised.value.field == "external_id"


async def test_a_second_identity_on_the_same_channel_is_a_conflict_on_channel(uow_factory: Backend) -> None:
    await link(uow_factory, identity(ALICE, "whatsapp:+5511999998888"))

    async with uow_factory() as uow:
        with pytest.raises(Conflict) as raised:
            await uow.identities.add(identity(ALICE, "whatsapp:+5511977776666"))

    assert raised.value.field == "channel"


async def test_relinking_your_own_address_reports_the_address_first(uow_factory: Backend) -> None:
    await link(uow_factory, identity(ALICE, "telegram:12345"))

    async with uow_factory() as uow:
        with pytest.raises(Conflict) as raised:
            await uow.identities.add(identity(ALICE, "telegram:12345", minutes=1))

    assert raised.value.field == "external_id"


async def test_a_conflict_leaves_the_unit_of_work_usable(uow_factory: Backend) -> None:
    await link(uow_factory, identity(ALICE, "telegram:12345"))

    async with uow_factory() as uow:
        with pytest.raises(Conflict):
            await uow.identities.add(identity(BOB, "telegram:12345"))
        await uow.identities.add(identity(BOB, "telegram:999"))
        await uow.commit()

    async with uow_factory() as uow:
        assert [str(i.address) for i in await uow.identities.list_for_user(BOB)] == ["telegram:999"]
        owner = await uow.identities.find_by_address(ChannelAddress.parse("telegram:12345"))
    assert owner is not None and owner.user_id == ALICE


async def test_unlinking_frees_the_address_and_reports_whether_anything_was_linked(uow_factory: Backend) -> None:
    await link(uow_factory, identity(ALICE, "telegram:12345"), identity(ALICE, "instagram:alice"))

    async with uow_factory() as uow:
        first = await uow.identities.remove(ALICE, Channel.TELEGRAM)
        second = await uow.identities.remove(ALICE, Channel.TELEGRAM)
        never = await uow.identities.remove(BOB, Channel.INSTAGRAM)
        await uow.commit()

    assert (first, second, never) == (True, False, False)
    await link(uow_factory, identity(BOB, "telegram:12345"))
    async with uow_factory() as uow:
        assert [i.channel for i in await uow.identities.list_for_user(ALICE)] == [Channel.INSTAGRAM]
        owner = await uow.identities.find_by_address(ChannelAddress.parse("telegram:12345"))
    assert owner is not None and owner.user_id == BOB


async def test_the_send_path_gets_the_linked_channels_of_each_member(uow_factory: Backend) -> None:
    carol, nobody = UserId(uuid.uuid4()), UserId(uuid.uuid4())
    conv = a_conversation(creator=ALICE, others=[Participant.user(BOB), Participant.user(nobody)])
    await store(uow_factory, conversations=[conv])
    await link(
        uow_factory,
        identity(ALICE, "whatsapp:+5511999998888"),
        identity(ALICE, "telegram:12345"),
        identity(BOB, "instagram:bob"),
        identity(carol, "messenger:42"),  # linked, but not a member
    )

    async with uow_factory() as uow:
        found = (await uow.lookups.for_sending([conv.id], [])).channels
        empty = (await uow.lookups.for_sending([], [])).channels

    assert found[ALICE] == frozenset({Channel.WHATSAPP, Channel.TELEGRAM})
    assert found[BOB] == frozenset({Channel.INSTAGRAM})
    assert found.get(nobody, frozenset()) == frozenset()
    assert carol not in found
    assert empty == {}
