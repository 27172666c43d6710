"""Linking, unlinking and listing a user's platform identities."""

from __future__ import annotations

import pytest

from application import commands as c
from application import views as v
from application.errors import Conflict, NotFound
from domain.errors import BusinessRuleViolation
from tests.builders import T0, Chat4All, FakeClock


async def test_link_normalises_the_address_and_records_when(app: Chat4All, clock: FakeClock) -> None:
    ana = await app.register("ana")
    clock.advance()

    view = await app.handle(c.LinkIdentity(ana, "instagram", "@Ana.Lima"))

    assert view == v.IdentityView(
        channel="instagram", external_id="ana.lima", address="instagram:ana.lima", linked_at=clock.now()
    )
    assert view.linked_at > T0


async def test_list_returns_the_users_identities_ordered_by_channel(app: Chat4All) -> None:
    ana, bruno = await app.register_all("ana", "bruno")
    await app.link("ana", "whatsapp", "+5511999998888")
    await app.link("ana", "instagram", "ana")
    await app.link("bruno", "telegram", "42")

    listed = await app.handle(c.ListIdentities(ana))

    assert [i.address for i in listed] == ["instagram:ana", "whatsapp:+5511999998888"]
    assert [i.address for i in await app.handle(c.ListIdentities(bruno))] == ["telegram:42"]


async def test_an_address_linked_by_someone_else_is_a_conflict(app: Chat4All) -> None:
    await app.register_all("ana", "bruno")
    await app.link("ana", "whatsapp", "+5511999998888")

    with pytest.raises(Conflict) as raised:
        await app.link("bruno", "whatsapp", " +5511999998888 ")

    assert raised.value.field == "external_id"
    assert await app.handle(c.ListIdentities(app.users["bruno"])) == []


async def test_a_second_identity_on_the_same_channel_is_a_conflict(app: Chat4All) -> None:
    ana = await app.register("ana")
    await app.link("ana", "telegram", "42")

    with pytest.raises(Conflict) as raised:
        await app.link("ana", "telegram", "43")

    assert raised.value.field == "channel"
    assert [i.external_id for i in await app.handle(c.ListIdentities(ana))] == ["42"]


async def test_linking_the_same_address_twice_is_a_conflict(app: Chat4All) -> None:
    await app.register("ana")
    await app.link("ana", "telegram", "42")

    with pytest.raises(Conflict):
        await app.link("ana", "telegram", "42")


@pytest.mark.parametrize(
    ("channel", "external_id", "field"),
    [("sms", "123", "channel"), ("internal", "ana", "channel"), ("whatsapp", "123", "external_id")],
)
async def test_an_invalid_identity_is_refused(app: Chat4All, channel: str, external_id: str, field: str) -> None:
    await app.register("ana")

    with pytest.raises(BusinessRuleViolation) as raised:
        await app.link("ana", channel, external_id)

    assert raised.value.field == field


async def test_unlink_frees_the_channel_and_the_address(app: Chat4All) -> None:
    ana, _ = await app.register_all("ana", "bruno")
    await app.link("ana", "telegram", "42")

    assert await app.handle(c.UnlinkIdentity(ana, "telegram")) is None

    assert await app.handle(c.ListIdentities(ana)) == []
    assert (await app.link("bruno", "telegram", "42")).address == "telegram:42"
    assert (await app.link("ana", "telegram", "43")).address == "telegram:43"


async def test_unlinking_a_channel_with_no_identity_is_not_found(app: Chat4All) -> None:
    ana = await app.register("ana")
    await app.link("ana", "telegram", "42")

    with pytest.raises(NotFound):
        await app.handle(c.UnlinkIdentity(ana, "whatsapp"))
    assert len(await app.handle(c.ListIdentities(ana))) == 1


async def test_unlinking_an_unknown_channel_is_refused(app: Chat4All) -> None:
    ana = await app.register("ana")

    with pytest.raises(BusinessRuleViolation) as raised:
        await app.handle(c.UnlinkIdentity(ana, "sms"))

    assert raised.value.field == "channel"
