"""Reading a conversation's history: ascending order, paging both ways, and who sees what."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from application import views as v
from application.cursors import decode_history_cursor
from application.errors import Forbidden, NotFound
from application.topics import STATUS as STATUS_TOPIC
from domain.errors import BusinessRuleViolation
from domain.ids import ConversationId
from tests.builders import T0, Chat4All, FakeClock, a_chat4all


async def send_many(app: Chat4All, conversation: ConversationId, n: int, *, clock: FakeClock | None = None) -> None:
    for i in range(1, n + 1):
        if clock is not None:
            clock.advance(timedelta(minutes=1))
        await app.send("ana" if i % 2 else "bruno", conversation, f"message {i}")


def seqs(page: v.HistoryView) -> list[int]:
    return [m.seq for m in page.items]


@pytest.fixture
async def pair(app: Chat4All) -> ConversationId:
    await app.register_all("ana", "bruno", "eve")
    return await app.start("ana", "bruno")


async def test_history_is_in_ascending_order(app: Chat4All, pair: ConversationId) -> None:
    await send_many(app, pair, 5)

    page = await app.history("bruno", pair)

    assert seqs(page) == [1, 2, 3, 4, 5]
    assert [m.payload for m in page.items] == [{"type": "text", "text": f"message {i}"} for i in range(1, 6)]
    assert page.next_cursor is None


async def test_an_empty_conversation_has_an_empty_history(app: Chat4All, pair: ConversationId) -> None:
    assert await app.history("ana", pair) == v.HistoryView(items=[], next_cursor=None)


async def test_by_default_the_latest_messages_come_with_a_cursor_to_older_ones(
    app: Chat4All, pair: ConversationId
) -> None:
    await send_many(app, pair, 5)

    page = await app.history("ana", pair, limit=2)

    assert seqs(page) == [4, 5]
    assert page.next_cursor is not None
    assert decode_history_cursor(page.next_cursor) == ("before", 4)


async def test_before_seq_reads_older_messages(app: Chat4All, pair: ConversationId) -> None:
    await send_many(app, pair, 5)

    middle = await app.history("ana", pair, limit=2, before_seq=4)
    oldest = await app.history("ana", pair, limit=2, before_seq=2)

    assert seqs(middle) == [2, 3]
    assert middle.next_cursor is not None
    assert decode_history_cursor(middle.next_cursor) == ("before", 2)
    assert seqs(oldest) == [1]
    assert oldest.next_cursor is None


async def test_after_seq_reads_newer_messages(app: Chat4All, pair: ConversationId) -> None:
    await send_many(app, pair, 5)

    first = await app.history("ana", pair, limit=2, after_seq=1)
    last = await app.history("ana", pair, limit=2, after_seq=3)

    assert seqs(first) == [2, 3]
    assert first.next_cursor is not None
    assert decode_history_cursor(first.next_cursor) == ("after", 3)
    assert seqs(last) == [4, 5]
    assert last.next_cursor is None
    assert seqs(await app.history("ana", pair, after_seq=5)) == []


async def test_after_seq_and_before_seq_together_are_refused(app: Chat4All, pair: ConversationId) -> None:
    with pytest.raises(BusinessRuleViolation):
        await app.history("ana", pair, after_seq=1, before_seq=3)


async def test_since_reads_forward_from_a_time(app: Chat4All, pair: ConversationId, clock: FakeClock) -> None:
    await send_many(app, pair, 5, clock=clock)  # message i is created at T0 + i minutes

    page = await app.history("ana", pair, since=T0 + timedelta(minutes=2), limit=2)
    rest = await app.history("ana", pair, since=T0 + timedelta(minutes=2), after_seq=3)

    assert seqs(page) == [2, 3]
    assert page.next_cursor is not None
    assert decode_history_cursor(page.next_cursor) == ("after", 3)
    assert seqs(rest) == [4, 5]
    assert rest.next_cursor is None


async def test_since_with_before_seq_reads_the_latest_messages_before_it(
    app: Chat4All, pair: ConversationId, clock: FakeClock
) -> None:
    await send_many(app, pair, 10, clock=clock)

    page = await app.history("ana", pair, since=T0, before_seq=10, limit=3)

    # The page is the newest three before seq 10 and continues backwards, like before_seq without since.
    assert seqs(page) == [7, 8, 9]
    assert page.next_cursor is not None
    assert decode_history_cursor(page.next_cursor) == ("before", 7)


async def test_a_viewer_only_sees_messages_it_sent_or_receives(app: Chat4All) -> None:
    await app.register_all("ana", "bruno", "carla")
    group = await app.start("ana", "bruno", "carla")
    await app.send("ana", group, "to everyone")
    await app.send("ana", group, "to bruno only", to=["bruno"])
    await app.send("bruno", group, "to carla only", to=["carla"])

    assert seqs(await app.history("ana", group)) == [1, 2]
    assert seqs(await app.history("bruno", group)) == [1, 2, 3]
    assert seqs(await app.history("carla", group)) == [1, 3]


async def test_a_message_view_describes_the_message(app: Chat4All) -> None:
    ana, bruno, carla = await app.register_all("ana", "bruno", "carla")
    group = await app.start("ana", "bruno", "carla")
    accepted = await app.send("ana", group, "hi", to=["bruno"], channels=["internal"], metadata={"k": 1})

    (item,) = (await app.history("bruno", group)).items

    assert item == v.MessageView(
        message_id=accepted.message_id,
        conversation_id=group,
        seq=1,
        sender=v.MemberView(kind="user", user_id=ana, username="ana"),
        to=[v.MemberView(kind="user", user_id=bruno, username="bruno")],
        channels=["internal"],
        payload={"type": "text", "text": "hi"},
        metadata={"k": 1},
        status="DELIVERED",  # bruno's client has it now: fetching it is its delivery
        created_at=T0,
    )
    assert carla not in {m.user_id for m in item.to}


async def test_a_message_to_every_channel_shows_all(app: Chat4All, pair: ConversationId) -> None:
    await app.send("ana", pair)

    (item,) = (await app.history("ana", pair)).items

    assert item.channels == ["all"]


async def test_history_shows_the_overall_status(app: Chat4All, pair: ConversationId) -> None:
    accepted = await app.send("ana", pair)
    await app.mark_read("bruno", accepted.message_id)

    (item,) = (await app.history("ana", pair)).items

    assert item.status == "READ"


@pytest.mark.parametrize("limit", [0, -5, 201])
async def test_the_limit_is_bounded(app: Chat4All, pair: ConversationId, limit: int) -> None:
    with pytest.raises(BusinessRuleViolation) as raised:
        await app.history("ana", pair, limit=limit)

    assert raised.value.field == "limit"


async def test_the_largest_limit_is_accepted(app: Chat4All, pair: ConversationId) -> None:
    await send_many(app, pair, 3)

    assert seqs(await app.history("ana", pair, limit=200)) == [1, 2, 3]


async def test_a_non_member_is_forbidden(app: Chat4All, pair: ConversationId) -> None:
    with pytest.raises(Forbidden):
        await app.history("eve", pair)


async def test_an_unknown_conversation_is_not_found(app: Chat4All, pair: ConversationId) -> None:
    with pytest.raises(NotFound):
        await app.history("ana", ConversationId(uuid.uuid4()))


@pytest.mark.parametrize("cursor", ["", "garbage!", "c2lkZXdheXM6Mw", "YWZ0ZXI6eA"])
def test_a_cursor_not_made_by_the_server_is_refused(cursor: str) -> None:
    with pytest.raises(BusinessRuleViolation) as raised:
        decode_history_cursor(cursor)

    assert raised.value.field == "cursor"


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 12), limit=st.integers(1, 5), hidden=st.sets(st.integers(1, 12)))
def test_following_cursors_visits_every_visible_message_once(n: int, limit: int, hidden: set[int]) -> None:
    """Backwards from the end and forwards from the start, pages tile the viewer's history exactly."""

    async def scenario() -> None:
        app = a_chat4all()
        await app.register_all("ana", "bruno", "carla")
        group = await app.start("ana", "bruno", "carla")
        for i in range(1, n + 1):
            # Messages in ``hidden`` go to carla only, so bruno must not see them.
            await app.send("ana", group, f"m{i}", to=["carla"] if i in hidden else None)
        visible = [i for i in range(1, n + 1) if i not in hidden]

        backwards: list[list[int]] = []
        page = await app.history("bruno", group, limit=limit)
        backwards.append(seqs(page))
        while page.next_cursor is not None:
            _, before = decode_history_cursor(page.next_cursor)
            page = await app.history("bruno", group, limit=limit, before_seq=before)
            backwards.append(seqs(page))

        forwards: list[list[int]] = []
        page = await app.history("bruno", group, limit=limit, after_seq=0)
        forwards.append(seqs(page))
        while page.next_cursor is not None:
            _, after = decode_history_cursor(page.next_cursor)
            page = await app.history("bruno", group, limit=limit, after_seq=after)
            forwards.append(seqs(page))

        assert [s for p in reversed(backwards) for s in p] == visible
        assert [s for p in forwards for s in p] == visible
        assert all(1 <= len(p) <= limit for p in backwards + forwards if visible)
        assert all(p == sorted(p) for p in backwards + forwards)

    with asyncio.Runner() as runner:
        runner.run(scenario())


async def test_fetching_history_delivers_the_viewers_internal_copies_once(app: Chat4All, pair: ConversationId) -> None:
    accepted = await app.send("ana", pair, "hi")
    assert [e["status"] for e in app.events(STATUS_TOPIC)] == []

    await app.history("ana", pair)  # the sender's own fetch delivers nothing
    assert (await app.status("ana", accepted.message_id)).status == "SENT"

    await app.history("bruno", pair)
    await app.history("bruno", pair)  # a second fetch changes nothing more

    status = await app.status("ana", accepted.message_id)
    assert status.status == "DELIVERED"
    assert [(e["recipient"], e["channel"], e["status"]) for e in app.events(STATUS_TOPIC)] == [
        (f"user:{app.users['bruno']}", "internal", "DELIVERED")
    ]


async def test_fetching_history_never_moves_a_read_message_back(app: Chat4All, pair: ConversationId) -> None:
    accepted = await app.send("ana", pair, "hi")
    await app.mark_read("bruno", accepted.message_id)

    (item,) = (await app.history("bruno", pair)).items

    assert item.status == "READ"
