"""Starting, reading and listing conversations."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from application import commands as c
from application import views as v
from application.errors import Forbidden, NotFound
from application.handlers import Settings
from domain.conversations import ConversationType
from domain.errors import BusinessRuleViolation
from domain.ids import ConversationId
from tests.builders import T0, Chat4All, FakeClock, a_chat4all

PRIVATE, GROUP = ConversationType.PRIVATE, ConversationType.GROUP


async def test_a_private_conversation_by_username(app: Chat4All) -> None:
    ana, bruno = await app.register_all("ana", "bruno")

    view = await app.handle(c.CreateConversation(ana, PRIVATE, ["bruno"], {"topic": "lunch"}))

    assert view.type == "private"
    assert view.members == [
        v.MemberView(kind="user", user_id=ana, username="ana"),
        v.MemberView(kind="user", user_id=bruno, username="bruno"),
    ]
    assert view.metadata == {"topic": "lunch"}
    assert (view.created_at, view.last_activity_at, view.last_seq) == (T0, T0, 0)
    assert view.conversation_id in app.store.state.conversations


async def test_a_member_may_be_named_by_user_id(app: Chat4All) -> None:
    ana, bruno = await app.register_all("ana", "bruno")

    view = await app.handle(c.CreateConversation(ana, PRIVATE, [str(bruno)]))

    assert view.members[1].user_id == bruno


async def test_the_address_of_a_linked_user_names_that_user(app: Chat4All) -> None:
    ana, bruno = await app.register_all("ana", "bruno")
    await app.link("bruno", "whatsapp", "+5511999998888")

    view = await app.handle(c.CreateConversation(ana, PRIVATE, ["whatsapp:+5511999998888"]))

    assert view.members[1] == v.MemberView(kind="user", user_id=bruno, username="bruno")


async def test_an_unlinked_address_becomes_a_contact(app: Chat4All) -> None:
    ana = await app.register("ana")

    view = await app.handle(c.CreateConversation(ana, PRIVATE, ["instagram:@Carla.Dias"]))

    assert view.members[1] == v.MemberView(kind="contact", address="instagram:carla.dias")


async def test_a_group_may_mix_users_and_contacts_named_every_way(app: Chat4All) -> None:
    ana, bruno, carla = await app.register_all("ana", "bruno", "carla")

    view = await app.handle(c.CreateConversation(ana, GROUP, ["bruno", str(carla), "telegram:42", "bruno"]))

    assert view.type == "group"
    assert [(m.kind, m.user_id or m.address) for m in view.members] == [
        ("user", ana),
        ("user", bruno),
        ("user", carla),
        ("contact", "telegram:42"),
    ]


async def test_an_unknown_username_is_refused(app: Chat4All) -> None:
    ana = await app.register("ana")

    with pytest.raises(BusinessRuleViolation, match="nobody") as raised:
        await app.handle(c.CreateConversation(ana, PRIVATE, ["nobody"]))

    assert raised.value.field == "members"
    assert app.store.state.conversations == {}


async def test_an_unknown_user_id_is_refused(app: Chat4All) -> None:
    ana = await app.register("ana")

    with pytest.raises(BusinessRuleViolation):
        await app.handle(c.CreateConversation(ana, PRIVATE, [str(uuid.uuid4())]))


async def test_an_invalid_address_is_refused(app: Chat4All) -> None:
    ana = await app.register("ana")

    with pytest.raises(BusinessRuleViolation):
        await app.handle(c.CreateConversation(ana, PRIVATE, ["whatsapp:12"]))


@pytest.mark.parametrize(
    ("kind", "members"),
    [(PRIVATE, []), (PRIVATE, ["bruno", "carla"]), (PRIVATE, ["ana"]), (GROUP, ["bruno"]), (GROUP, ["bruno", "ana"])],
)
async def test_the_member_count_must_fit_the_type(app: Chat4All, kind: ConversationType, members: list[str]) -> None:
    ana, *_ = await app.register_all("ana", "bruno", "carla")

    with pytest.raises(BusinessRuleViolation) as raised:
        await app.handle(c.CreateConversation(ana, kind, members))

    assert raised.value.field == "members"
    assert app.store.state.conversations == {}


async def test_a_group_is_limited_by_the_configured_maximum() -> None:
    app = a_chat4all(settings=Settings(group_max=3))
    ana, *_ = await app.register_all("ana", "bruno", "carla", "dora")

    assert len((await app.handle(c.CreateConversation(ana, GROUP, ["bruno", "carla"]))).members) == 3
    with pytest.raises(BusinessRuleViolation, match="3 to 3"):
        await app.handle(c.CreateConversation(ana, GROUP, ["bruno", "carla", "dora"]))


# --- get ------------------------------------------------------------------------------


async def test_a_member_reads_the_conversation(app: Chat4All) -> None:
    await app.register_all("ana", "bruno")
    conv = await app.start("ana", "bruno")

    view = await app.handle(c.GetConversation(app.users["bruno"], conv))

    assert view.conversation_id == conv
    assert [m.username for m in view.members] == ["ana", "bruno"]


async def test_a_non_member_is_forbidden(app: Chat4All) -> None:
    await app.register_all("ana", "bruno", "eve")
    conv = await app.start("ana", "bruno")

    with pytest.raises(Forbidden):
        await app.handle(c.GetConversation(app.users["eve"], conv))


async def test_an_unknown_conversation_is_not_found(app: Chat4All) -> None:
    ana = await app.register("ana")

    with pytest.raises(NotFound):
        await app.handle(c.GetConversation(ana, ConversationId(uuid.uuid4())))


# --- list -----------------------------------------------------------------------------


async def test_the_list_shows_my_conversations_most_recent_activity_first(app: Chat4All, clock: FakeClock) -> None:
    ana, *_ = await app.register_all("ana", "bruno", "carla", "dora")
    with_bruno = await app.start("ana", "bruno")
    clock.advance()
    with_carla = await app.start("ana", "carla")
    clock.advance()
    await app.start("bruno", "carla")  # not ana's
    clock.advance()
    await app.send("ana", with_bruno, "bump")  # activity moves it to the top

    page = await app.handle(c.ListConversations(ana))

    assert [i.conversation_id for i in page.items] == [with_bruno, with_carla]
    assert page.items[0].last_activity_at == T0 + timedelta(seconds=3)
    assert page.items[0].last_seq == 1
    assert page.next_cursor is None


async def test_the_list_pages_with_a_cursor(app: Chat4All, clock: FakeClock) -> None:
    ana, *others = await app.register_all("ana", "user1", "user2", "user3", "user4", "user5")
    started = []
    for other in others:
        clock.advance()
        started.append(await app.start("ana", str(other)))
    newest_first = list(reversed(started))

    seen: list[ConversationId] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = await app.handle(c.ListConversations(ana, limit=2, cursor=cursor))
        pages += 1
        assert len(page.items) <= 2
        seen.extend(i.conversation_id for i in page.items)
        cursor = page.next_cursor
        if cursor is None:
            break

    assert seen == newest_first
    assert pages == 3


async def test_conversations_with_the_same_activity_time_are_all_listed_once(app: Chat4All) -> None:
    ana, *others = await app.register_all("ana", "user1", "user2", "user3", "user4")
    started = {await app.start("ana", str(other)) for other in others}  # all at T0

    first = await app.handle(c.ListConversations(ana, limit=3))
    assert first.next_cursor is not None
    second = await app.handle(c.ListConversations(ana, limit=3, cursor=first.next_cursor))

    listed = [i.conversation_id for i in [*first.items, *second.items]]
    assert sorted(listed) == sorted(started)
    assert second.next_cursor is None


@pytest.mark.parametrize("limit", [0, -1, 101])
async def test_the_list_limit_is_bounded(app: Chat4All, limit: int) -> None:
    ana = await app.register("ana")

    with pytest.raises(BusinessRuleViolation) as raised:
        await app.handle(c.ListConversations(ana, limit=limit))

    assert raised.value.field == "limit"


async def test_a_garbled_cursor_is_refused(app: Chat4All) -> None:
    ana = await app.register("ana")

    with pytest.raises(BusinessRuleViolation) as raised:
        await app.handle(c.ListConversations(ana, cursor="not a cursor!"))

    assert raised.value.field == "cursor"


# --- last message and unread count --------------------------------------------------------


async def test_a_new_conversation_has_no_last_message_and_nothing_unread(app: Chat4All) -> None:
    ana, _ = await app.register_all("ana", "bruno")

    view = await app.handle(c.CreateConversation(ana, PRIVATE, ["bruno"]))
    listed = await app.handle(c.ListConversations(ana))

    assert (view.last_message, view.unread_count) == (None, 0)
    assert [(i.last_message, i.unread_count) for i in listed.items] == [(None, 0)]


async def test_each_conversation_shows_the_last_message_the_viewer_sees_and_how_many_it_has_not_read(
    app: Chat4All, clock: FakeClock
) -> None:
    _, bruno, carla = await app.register_all("ana", "bruno", "carla")
    private = await app.start("ana", "bruno")
    group = await app.start("ana", "bruno", "carla")
    for sender, text in [("ana", "one"), ("bruno", "two"), ("ana", "three")]:
        clock.advance()
        await app.send(sender, private, text)
    clock.advance()
    await app.send("ana", group, "to all")
    clock.advance()
    await app.send("ana", group, "only carla", to=["carla"])

    brunos = {i.conversation_id: i for i in (await app.handle(c.ListConversations(bruno))).items}
    carlas = await app.handle(c.GetConversation(carla, group))
    anas = await app.handle(c.GetConversation(app.users["ana"], private))

    assert brunos[private].last_message is not None and brunos[private].last_message.payload["text"] == "three"
    assert brunos[private].unread_count == 2  # one and three: not his own
    assert brunos[group].last_message is not None and brunos[group].last_message.payload["text"] == "to all"
    assert brunos[group].unread_count == 1  # "only carla" is not his
    assert carlas.last_message is not None and carlas.last_message.payload["text"] == "only carla"
    assert carlas.unread_count == 2
    assert anas.last_message is not None and anas.last_message.payload["text"] == "three"  # her own
    assert anas.unread_count == 1


async def test_the_last_message_is_shown_as_history_shows_it(app: Chat4All) -> None:
    _, bruno = await app.register_all("ana", "bruno")
    private = await app.start("ana", "bruno")
    await app.send("ana", private, "hello", metadata={"client": "web"})

    history = await app.history("bruno", private)
    view = await app.handle(c.GetConversation(bruno, private))

    assert view.last_message == history.items[-1]


async def test_listing_changes_no_delivery(app: Chat4All) -> None:
    _, bruno = await app.register_all("ana", "bruno")
    private = await app.start("ana", "bruno")
    sent = await app.send("ana", private, "hello")

    await app.handle(c.ListConversations(bruno))
    view = await app.handle(c.GetConversation(bruno, private))

    assert view.last_message is not None and view.last_message.status == "SENT"
    assert (await app.status("ana", sent.message_id)).status == "SENT"


async def test_reading_a_message_reads_it_and_every_earlier_one(app: Chat4All) -> None:
    _, bruno = await app.register_all("ana", "bruno")
    await app.link("bruno", "telegram", "42")  # two deliveries of each message: still one message each
    private = await app.start("ana", "bruno")
    sent = [await app.send("ana", private, text) for text in ("one", "two", "three")]

    async def unread() -> int:
        view: v.ConversationView = await app.handle(c.GetConversation(bruno, private))
        return view.unread_count

    assert await unread() == 3
    await app.mark_read("bruno", sent[1].message_id)
    assert await unread() == 1
    await app.mark_read("bruno", sent[2].message_id)
    assert await unread() == 0
