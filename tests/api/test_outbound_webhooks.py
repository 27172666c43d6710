"""Outbound webhook subscriptions over REST: 201 with the secret once, 422 for URLs that may not be called,
owners only, and the deliveries listing and replay."""

from __future__ import annotations

import uuid

import pytest

from adapters.memory import InMemoryStore
from application.webhooks import record_events
from tests.api.conftest import Api
from tests.builders import FakeClock

pytestmark = pytest.mark.unit

URL = "https://hooks.example.com/chat4all"


async def test_a_webhook_is_created_listed_and_deleted(api: Api) -> None:
    ana = await api.user("ana")
    r = await api.client.post(
        "/v1/webhooks", json={"url": URL, "events": ["message.created", "message.status"]}, headers=ana["headers"]
    )
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["secret"].startswith("whsec_") and created["active"] is True
    assert created["events"] == ["message.created", "message.status"]

    listed = (await api.client.get("/v1/webhooks", headers=ana["headers"])).json()["items"]
    assert [w["webhook_id"] for w in listed] == [created["webhook_id"]]
    assert "secret" not in listed[0]

    gone = await api.client.delete(f"/v1/webhooks/{created['webhook_id']}", headers=ana["headers"])
    assert gone.status_code == 204
    assert (await api.client.get("/v1/webhooks", headers=ana["headers"])).json()["items"] == []


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/iam",  # the cloud metadata service
        "http://[fd00:ec2::254]/",
        "http://127.0.0.1:8000/v1/users",
        "http://localhost/",
        "http://10.1.2.3/",
        "http://2130706433/",
        "file:///etc/passwd",
    ],
)
async def test_a_url_that_reaches_our_own_infrastructure_is_refused(api: Api, store: InMemoryStore, url: str) -> None:
    ana = await api.user("ana")
    r = await api.client.post("/v1/webhooks", json={"url": url, "events": ["message.created"]}, headers=ana["headers"])
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["errors"][0]["field"] == "url"
    assert store.state.webhooks == {}


async def test_bad_bodies_are_4xx_and_change_nothing(api: Api, store: InMemoryStore) -> None:
    ana = await api.user("ana")
    for body in ({"url": URL}, {"url": URL, "events": []}, {"url": URL, "events": ["nope"]}, {"events": ["x"]}):
        r = await api.client.post("/v1/webhooks", json=body, headers=ana["headers"])
        assert r.status_code in (400, 422), (body, r.text)
    assert (await api.client.post("/v1/webhooks", json={"url": URL, "events": ["message.created"]})).status_code == 401
    assert store.state.webhooks == {}


async def test_only_the_owner_sees_lists_and_replays_deliveries(api: Api, store: InMemoryStore) -> None:
    ana, bob, eve = await api.user("ana"), await api.user("bob"), await api.user("eve")
    hook = (
        await api.client.post("/v1/webhooks", json={"url": URL, "events": ["message.created"]}, headers=ana["headers"])
    ).json()
    conv = await api.conversation(bob, "ana")
    assert (await api.send(bob, conv["conversation_id"], "olá")).status_code == 202
    events = [e for t, _, e in store.state.outbox if t == "chat.messages"]
    assert await record_events(store.uow, FakeClock(), events) == 1

    base = f"/v1/webhooks/{hook['webhook_id']}/deliveries"
    page = (await api.client.get(base, headers=ana["headers"])).json()
    (delivery,) = page["items"]
    assert (delivery["event"], delivery["state"], delivery["attempts"]) == ("message.created", "pending", 0)
    assert delivery["body"]["data"]["payload"] == {"type": "text", "text": "olá"}
    assert delivery["body"]["id"] == delivery["delivery_id"]
    assert (await api.client.get(base, headers=eve["headers"])).status_code == 404
    assert (await api.client.get(base + "?state=lost", headers=ana["headers"])).status_code == 422
    replay = f"{base}/{delivery['delivery_id']}/replay"
    assert (await api.client.post(replay, headers=eve["headers"])).status_code == 404
    assert (await api.client.post(replay, headers=ana["headers"])).status_code == 409  # still pending
    unknown = f"{base}/{uuid.uuid4()}/replay"
    assert (await api.client.post(unknown, headers=ana["headers"])).status_code == 404
