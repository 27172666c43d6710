"""RefreshTokenRepository: a token works once, before it expires."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from domain.ids import UserId
from tests.builders import T0
from tests.contract.backends import Backend

pytestmark = pytest.mark.contract

ALICE, BOB = UserId(uuid.uuid4()), UserId(uuid.uuid4())
DAY = timedelta(days=1)


async def given_tokens(backend: Backend, *tokens: tuple[str, UserId, timedelta]) -> None:
    async with backend() as uow:
        for digest, user_id, ttl in tokens:
            await uow.refresh_tokens.add(digest, user_id, expires_at=T0 + ttl)
        await uow.commit()


async def test_a_token_is_consumed_once(uow_factory: Backend) -> None:
    await given_tokens(uow_factory, ("a" * 64, ALICE, DAY), ("b" * 64, BOB, DAY))

    async with uow_factory() as uow:
        first = await uow.refresh_tokens.consume("a" * 64, at=T0)
        again = await uow.refresh_tokens.consume("a" * 64, at=T0)
        await uow.commit()
    async with uow_factory() as uow:
        later = await uow.refresh_tokens.consume("a" * 64, at=T0 + timedelta(seconds=1))
        bobs = await uow.refresh_tokens.consume("b" * 64, at=T0)

    assert (first, again, later, bobs) == (ALICE, None, None, BOB)


async def test_an_unknown_token_is_none(uow_factory: Backend) -> None:
    await given_tokens(uow_factory, ("a" * 64, ALICE, DAY))

    async with uow_factory() as uow:
        assert await uow.refresh_tokens.consume("c" * 64, at=T0) is None


async def test_a_token_expires_at_its_expiry_time(uow_factory: Backend) -> None:
    ttl = timedelta(seconds=10)
    await given_tokens(uow_factory, ("a" * 64, ALICE, ttl), ("b" * 64, BOB, ttl))

    async with uow_factory() as uow:
        at_expiry = await uow.refresh_tokens.consume("a" * 64, at=T0 + ttl)
        just_before = await uow.refresh_tokens.consume("b" * 64, at=T0 + ttl - timedelta(microseconds=1))

    assert (at_expiry, just_before) == (None, BOB)


async def test_a_rolled_back_use_leaves_the_token_usable(uow_factory: Backend) -> None:
    await given_tokens(uow_factory, ("a" * 64, ALICE, DAY))

    async with uow_factory() as uow:
        assert await uow.refresh_tokens.consume("a" * 64, at=T0) == ALICE
    async with uow_factory() as uow:
        assert await uow.refresh_tokens.consume("a" * 64, at=T0) == ALICE
