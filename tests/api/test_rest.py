"""The REST contract of docs/api.md, end to end in process."""

from __future__ import annotations

import re
import uuid

from adapters.memory import InMemoryStore
from tests.api.conftest import Api

PROBLEM = "application/problem+json"


async def test_register_login_and_me(api: Api) -> None:
    ana = await api.user("ana")
    assert ana["username"] == "ana" and ana["display_name"] == "ana"
    me = await api.client.get("/v1/me", headers=ana["headers"])
    assert me.status_code == 200 and me.json()["user_id"] == ana["user_id"]


async def test_taken_username_is_409_problem(api: Api) -> None:
    await api.user("ana")
    r = await api.client.post("/v1/users", json={"username": "ana", "password": "another pw"})
    assert r.status_code == 409
    assert r.headers["content-type"].startswith(PROBLEM)
    assert r.json()["type"].endswith("/conflict") and r.json()["status"] == 409


async def test_form_login_and_refresh_is_single_use(api: Api) -> None:
    await api.user("ana")
    r = await api.client.post("/auth/token", data={"username": "ana", "password": "correct horse"})
    assert r.status_code == 200 and r.json()["token_type"] == "bearer" and r.json()["expires_in"] == 3600
    refresh = r.json()["refresh_token"]
    first = await api.client.post("/auth/refresh", json={"refresh_token": refresh})
    assert first.status_code == 200 and first.json()["refresh_token"] != refresh
    again = await api.client.post("/auth/refresh", json={"refresh_token": refresh})
    assert again.status_code == 401 and again.headers["content-type"].startswith(PROBLEM)


async def test_client_credentials_act_as_their_owner(api: Api) -> None:
    ana = await api.user("ana")
    created = await api.client.post("/v1/clients", json={"name": "crm"}, headers=ana["headers"])
    assert created.status_code == 201
    creds = created.json()
    token = await api.client.post(
        "/auth/token", json={"client_id": creds["client_id"], "client_secret": creds["client_secret"]}
    )
    assert token.status_code == 200
    me = await api.client.get("/v1/me", headers={"Authorization": f"Bearer {token.json()['access_token']}"})
    assert me.json()["username"] == "ana"
    wrong = await api.client.post("/auth/token", json={"client_id": creds["client_id"], "client_secret": "nope"})
    assert wrong.status_code == 401


async def test_wrong_password_and_missing_token_are_401(api: Api) -> None:
    await api.user("ana")
    r = await api.client.post("/auth/token", json={"username": "ana", "password": "wrong password"})
    assert r.status_code == 401 and r.headers["content-type"].startswith(PROBLEM)
    assert (await api.client.get("/v1/me")).status_code == 401
    bad = await api.client.get("/v1/me", headers={"Authorization": "Bearer not-a-jwt"})
    assert bad.status_code == 401 and bad.headers["content-type"].startswith(PROBLEM)


async def test_identities_link_list_unlink(api: Api) -> None:
    ana = await api.user("ana")
    bob = await api.user("bob")
    r = await api.client.post(
        "/v1/users/me/identities", json={"channel": "whatsapp", "external_id": "+5511999998888"}, headers=ana["headers"]
    )
    assert r.status_code == 201 and r.json()["address"] == "whatsapp:+5511999998888"
    taken = await api.client.post(
        "/v1/users/me/identities", json={"channel": "whatsapp", "external_id": "+5511999998888"}, headers=bob["headers"]
    )
    assert taken.status_code == 409
    invalid = await api.client.post(
        "/v1/users/me/identities", json={"channel": "whatsapp", "external_id": "123"}, headers=bob["headers"]
    )
    assert invalid.status_code == 422 and invalid.json()["errors"][0]["field"] == "external_id"
    listed = await api.client.get("/v1/users/me/identities", headers=ana["headers"])
    assert [i["channel"] for i in listed.json()["items"]] == ["whatsapp"]
    assert (await api.client.delete("/v1/users/me/identities/whatsapp", headers=ana["headers"])).status_code == 204
    assert (await api.client.delete("/v1/users/me/identities/whatsapp", headers=ana["headers"])).status_code == 404


async def test_private_and_group_conversations(api: Api) -> None:
    ana, _bob, _cid = await api.user("ana"), await api.user("bob"), await api.user("cid")
    private = await api.conversation(ana, "bob")
    assert private["type"] == "private"
    assert [m["username"] for m in private["members"]] == ["ana", "bob"]
    group = await api.conversation(ana, "bob", "cid", "telegram:123456", type_="group")
    assert group["members"][-1] == {"kind": "contact", "address": "telegram:123456"}
    too_few = await api.client.post(
        "/v1/conversations", json={"type": "group", "members": ["bob"]}, headers=ana["headers"]
    )
    assert too_few.status_code == 422
    unknown = await api.client.post(
        "/v1/conversations", json={"type": "private", "members": ["nobody"]}, headers=ana["headers"]
    )
    assert unknown.status_code == 422 and "nobody" in unknown.json()["detail"]
    listed = await api.client.get("/v1/conversations", headers=ana["headers"])
    assert [c["conversation_id"] for c in listed.json()["items"]] == [
        group["conversation_id"],
        private["conversation_id"],
    ]


async def test_non_member_gets_403_and_unknown_404(api: Api) -> None:
    ana, _bob, eve = await api.user("ana"), await api.user("bob"), await api.user("eve")
    conv = await api.conversation(ana, "bob")
    r = await api.client.get(f"/v1/conversations/{conv['conversation_id']}", headers=eve["headers"])
    assert r.status_code == 403 and r.headers["content-type"].startswith(PROBLEM)
    r = await api.client.get(f"/v1/conversations/{uuid.uuid4()}", headers=eve["headers"])
    assert r.status_code == 404
    sent = await api.send(eve, conv["conversation_id"], "hi")
    assert sent.status_code == 403


async def test_send_is_idempotent_and_ordered(api: Api, store: InMemoryStore) -> None:
    ana, _bob = await api.user("ana"), await api.user("bob")
    conv = await api.conversation(ana, "bob")
    mid = str(uuid.uuid4())
    first = await api.send(ana, conv["conversation_id"], "Olá!", message_id=mid)
    assert first.status_code == 202
    assert first.json()["status"] == "accepted" and first.json()["seq"] == 1
    again = await api.send(ana, conv["conversation_id"], "Olá!", message_id=mid)
    assert again.status_code == 202 and again.json() == first.json()
    clash = await api.send(ana, conv["conversation_id"], "different", message_id=mid)
    assert clash.status_code == 409
    second = await api.send(ana, conv["conversation_id"], "again")
    assert second.json()["seq"] == 2
    assert len(store.state.messages) == 2
    assert [t for t, _, _ in store.state.outbox] == ["chat.activity", "chat.messages", "chat.messages"]


async def test_history_status_and_read(api: Api) -> None:
    ana, bob = await api.user("ana"), await api.user("bob")
    conv = await api.conversation(ana, "bob")
    cid = conv["conversation_id"]
    ids = [(await api.send(ana, cid, f"m{i}")).json()["message_id"] for i in range(5)]
    page = await api.client.get(f"/v1/conversations/{cid}/messages?limit=2", headers=bob["headers"])
    assert [m["payload"]["text"] for m in page.json()["items"]] == ["m3", "m4"]
    older = await api.client.get(
        f"/v1/conversations/{cid}/messages?limit=2&cursor={page.json()['next_cursor']}", headers=bob["headers"]
    )
    assert [m["seq"] for m in older.json()["items"]] == [2, 3]
    after = await api.client.get(f"/v1/conversations/{cid}/messages?after_seq=3", headers=bob["headers"])
    assert [m["seq"] for m in after.json()["items"]] == [4, 5]
    assert after.json()["items"][0]["from"]["username"] == "ana"
    read = await api.client.post(f"/v1/messages/{ids[3]}/read", headers=bob["headers"])
    assert read.status_code == 200 and read.json()["status"] == "READ"
    again = await api.client.post(f"/v1/messages/{ids[3]}/read", headers=bob["headers"])
    assert again.json()["read_at"] == read.json()["read_at"]
    status = await api.client.get(f"/v1/messages/{ids[0]}/status", headers=ana["headers"])
    body = status.json()
    assert body["status"] == "READ"
    assert [h["status"] for h in body["history"]] == ["SENT", "DELIVERED", "READ"]  # read implies delivered
    unread = await api.client.get(f"/v1/messages/{ids[4]}/status", headers=ana["headers"])
    assert unread.json()["status"] == "DELIVERED"  # bob's client fetched it, and has not read it
    assert [h["status"] for h in unread.json()["history"]] == ["SENT", "DELIVERED"]
    assert (await api.client.post(f"/v1/messages/{ids[0]}/read", headers=ana["headers"])).status_code == 403
    assert (await api.client.post(f"/v1/messages/{uuid.uuid4()}/read", headers=bob["headers"])).status_code == 404


async def test_operations_endpoints(api: Api) -> None:
    assert (await api.client.get("/health/live")).json()["status"] == "ok"
    ready = await api.client.get("/health/ready")
    assert ready.status_code == 200 and ready.json()["checks"] == {"database": True, "storage": True}
    schema = await api.client.get("/schema/openapi.json")
    assert schema.status_code == 200 and "/v1/messages" in schema.json()["paths"]
    assert (await api.client.get("/v1/me")).status_code == 401
    metrics = await api.client.get("/metrics")
    assert metrics.status_code == 200
    for counted in [
        r'chat4all_http_requests_total\{method="GET",route="/health/live",status="200"\} [1-9]',
        r'chat4all_http_requests_total\{method="GET",route="/v1/me",status="401"\} [1-9]',
        r'chat4all_http_request_duration_seconds_count\{method="GET",route="/schema/openapi.json"\} [1-9]',
    ]:
        assert re.search(counted, metrics.text), counted
    docs = await api.client.get("/docs", follow_redirects=False)
    assert docs.status_code in {301, 302, 307, 308}


async def test_forged_and_confused_tokens_are_401(api: Api) -> None:
    import time

    import jwt

    ana = await api.user("ana")
    now = int(time.time())
    base = {"sub": ana["user_id"], "iss": "chat4all", "aud": "chat4all", "iat": now, "exp": now + 600}
    forged = {
        "alg none": jwt.encode(base, key=None, algorithm="none"),
        "wrong key": jwt.encode(base, "w" * 40, algorithm="HS256"),
        "expired": jwt.encode({**base, "exp": now - 120, "iat": now - 4000}, "t" * 40, algorithm="HS256"),
        "wrong audience": jwt.encode({**base, "aud": "other"}, "t" * 40, algorithm="HS256"),
        "wrong issuer": jwt.encode({**base, "iss": "other"}, "t" * 40, algorithm="HS256"),
        "no exp": jwt.encode({k: v for k, v in base.items() if k != "exp"}, "t" * 40, algorithm="HS256"),
        "not a uuid": jwt.encode({**base, "sub": "ana"}, "t" * 40, algorithm="HS256"),
    }
    genuine = jwt.encode(base, "t" * 40, algorithm="HS256")
    assert (await api.client.get("/v1/me", headers={"Authorization": f"Bearer {genuine}"})).status_code == 200
    for name, token in forged.items():
        r = await api.client.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401, name
        assert r.headers["content-type"].startswith("application/problem+json"), name


async def test_one_message_reads_as_in_history_for_its_people_only(api: Api) -> None:
    ana, bob, zed = await api.user("ana"), await api.user("bob"), await api.user("zed")
    conv = await api.conversation(ana, "bob")
    sent = await api.send(ana, conv["conversation_id"], "just this one")
    message_id = sent.json()["message_id"]

    seen = [await api.client.get(f"/v1/messages/{message_id}", headers=who["headers"]) for who in (ana, bob, zed)]

    assert [r.status_code for r in seen] == [200, 200, 404]
    assert seen[0].json()["payload"] == {"type": "text", "text": "just this one"}
    assert seen[1].json()["status"] == "DELIVERED"  # bob fetched it
    assert (await api.client.get(f"/v1/messages/{uuid.uuid4()}", headers=ana["headers"])).status_code == 404
