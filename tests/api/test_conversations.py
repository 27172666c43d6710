"""Conversations over HTTP as a conversation list shows them: each with its last message and unread count."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import Api
from tests.api.test_files import CHUNK, content, uploaded

pytestmark = pytest.mark.unit


async def conversations(api: Api, who: dict[str, Any]) -> dict[str, dict[str, Any]]:
    r = await api.client.get("/v1/conversations", headers=who["headers"])
    assert r.status_code == 200, r.text
    return {c["conversation_id"]: c for c in r.json()["items"]}


async def test_a_new_conversation_has_no_last_message_and_nothing_unread(api: Api) -> None:
    ana, _ = await api.user("ana"), await api.user("bob")

    created = await api.conversation(ana, "bob")
    one = await api.client.get(f"/v1/conversations/{created['conversation_id']}", headers=ana["headers"])

    assert (created["last_message"], created["unread_count"]) == (None, 0)
    assert (one.json()["last_message"], one.json()["unread_count"]) == (None, 0)


async def test_the_list_shows_the_last_message_as_history_does_and_the_unread_count(api: Api) -> None:
    ana, bob, cid = await api.user("ana"), await api.user("bob"), await api.user("cid")
    private = (await api.conversation(ana, "bob"))["conversation_id"]
    group = (await api.conversation(ana, "bob", "cid", type_="group"))["conversation_id"]
    for who, text in [(ana, "one"), (bob, "two"), (ana, "three")]:
        assert (await api.send(who, private, text)).status_code == 202
    assert (await api.send(ana, group, "to all")).status_code == 202
    assert (await api.send(ana, group, "only cid", to=["cid"])).status_code == 202

    bobs = await conversations(api, bob)
    history = await api.client.get(f"/v1/conversations/{private}/messages", headers=ana["headers"])
    anas = await conversations(api, ana)
    cids = await conversations(api, cid)

    assert list(bobs) == [group, private]  # most recent activity first, as before
    last = bobs[private]["last_message"]
    assert set(last) == {
        "message_id",
        "conversation_id",
        "seq",
        "from",
        "to",
        "channels",
        "payload",
        "metadata",
        "status",
        "created_at",
    }
    assert (last["seq"], last["payload"], last["from"]["username"]) == (3, {"type": "text", "text": "three"}, "ana")
    assert bobs[private]["unread_count"] == 2  # one and three: not what he sent
    assert bobs[group]["last_message"]["payload"]["text"] == "to all"  # "only cid" is not his to see
    assert bobs[group]["unread_count"] == 1
    assert cids[group]["last_message"]["payload"]["text"] == "only cid"
    assert cids[group]["unread_count"] == 2
    assert anas[private]["last_message"] == history.json()["items"][-1]  # exactly what history shows
    assert anas[private]["unread_count"] == 1
    assert anas[group]["unread_count"] == 0


async def test_reading_lowers_the_unread_count(api: Api) -> None:
    ana, bob = await api.user("ana"), await api.user("bob")
    private = (await api.conversation(ana, "bob"))["conversation_id"]
    sent = [(await api.send(ana, private, text)).json()["message_id"] for text in ("one", "two", "three")]

    async def unread() -> int:
        r = await api.client.get(f"/v1/conversations/{private}", headers=bob["headers"])
        assert r.status_code == 200, r.text
        return int(r.json()["unread_count"])

    assert await unread() == 3
    assert (await api.client.post(f"/v1/messages/{sent[1]}/read", headers=bob["headers"])).status_code == 200
    assert await unread() == 1  # two and every earlier one
    assert (await api.client.post(f"/v1/messages/{sent[2]}/read", headers=bob["headers"])).status_code == 200
    assert await unread() == 0


async def test_a_file_message_shows_the_file_as_history_does(api: Api) -> None:
    ana, bob = await api.user("ana"), await api.user("bob")
    private = (await api.conversation(ana, "bob"))["conversation_id"]
    data = content(CHUNK)
    file_id = await uploaded(api, ana, data)
    sent = await api.client.post(
        "/v1/messages",
        json={"conversation_id": private, "payload": {"type": "file", "file_id": file_id, "caption": "a photo"}},
        headers=ana["headers"],
    )
    assert sent.status_code == 202, sent.text

    one = await api.client.get(f"/v1/conversations/{private}", headers=bob["headers"])

    assert one.json()["last_message"]["payload"] == {
        "type": "file",
        "file_id": file_id,
        "caption": "a photo",
        "filename": "photo.jpg",
        "size": len(data),
        "content_type": "image/jpeg",
    }
    assert one.json()["unread_count"] == 1
