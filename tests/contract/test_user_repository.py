"""UserRepository and ApiClientRepository: the same behaviour on every adapter."""

from __future__ import annotations

import uuid
from datetime import timedelta

import attrs
import pytest

from application.errors import Conflict
from domain.ids import ClientId, UserId
from domain.users import ApiClient, User
from tests.builders import T0
from tests.contract.backends import Backend, store

pytestmark = pytest.mark.contract


def a_user(username: str, *, display_name: str | None = None) -> User:
    return User.register(
        id=UserId(uuid.uuid4()),
        username=username,
        password_hash=f"$argon2id$hash-of-{username}",
        display_name=display_name,
        at=T0 + timedelta(microseconds=123456),
    )


async def test_a_stored_user_reads_back_whole_by_id_and_by_username(uow_factory: Backend) -> None:
    alice = a_user("alice", display_name="Alice Liddell")
    await store(uow_factory, users=[alice])

    async with uow_factory() as uow:
        by_id = await uow.users.get(alice.id)
        by_name = await uow.users.get_by_username("alice")

    assert by_id is not None and by_name is not None
    assert attrs.asdict(by_id) == attrs.asdict(alice)
    assert attrs.asdict(by_name) == attrs.asdict(alice)


async def test_unknown_users_are_none(uow_factory: Backend) -> None:
    await store(uow_factory, users=[a_user("alice")])

    async with uow_factory() as uow:
        assert await uow.users.get(UserId(uuid.uuid4())) is None
        assert await uow.users.get_by_username("bob") is None
        assert await uow.users.get_by_username("ALICE") is None


async def test_get_many_returns_only_the_users_that_exist(uow_factory: Backend) -> None:
    alice, bob, carol = a_user("alice"), a_user("bob"), a_user("carol")
    await store(uow_factory, users=[alice, bob, carol])
    ghost = UserId(uuid.uuid4())

    async with uow_factory() as uow:
        found = await uow.users.get_many([bob.id, ghost, alice.id])
        none = await uow.users.get_many([])

    assert set(found) == {alice.id, bob.id}
    assert found[alice.id].username == "alice"
    assert found[bob.id].username == "bob"
    assert none == {}


async def test_a_taken_username_is_a_conflict_and_the_unit_of_work_goes_on(uow_factory: Backend) -> None:
    alice = a_user("alice")
    await store(uow_factory, users=[alice])
    impostor, carol = a_user("alice"), a_user("carol")

    async with uow_factory() as uow:
        with pytest.raises(Conflict) as raised:
            await uow.users.add(impostor)
        await uow.users.add(carol)
        await uow.commit()

    assert raised.value.field == "username"
    async with uow_factory() as uow:
        assert await uow.users.get(impostor.id) is None
        owner = await uow.users.get_by_username("alice")
        assert await uow.users.get(carol.id) is not None
    assert owner is not None and owner.id == alice.id


async def test_the_same_username_twice_in_one_unit_of_work_is_a_conflict(uow_factory: Backend) -> None:
    async with uow_factory() as uow:
        await uow.users.add(a_user("alice"))
        with pytest.raises(Conflict):
            await uow.users.add(a_user("alice"))


async def test_an_api_client_reads_back_whole(uow_factory: Backend) -> None:
    alice = a_user("alice")
    client = ApiClient(
        id=ClientId(uuid.uuid4()), owner_id=alice.id, name="crm sync", secret_hash="ab" * 32, created_at=T0
    )
    await store(uow_factory, users=[alice])
    async with uow_factory() as uow:
        await uow.clients.add(client)
        await uow.commit()

    async with uow_factory() as uow:
        assert await uow.clients.get(client.id) == client
        assert await uow.clients.get(ClientId(uuid.uuid4())) is None
