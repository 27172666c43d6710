"""Outbound webhooks through the whole stack, to a receiver on loopback (``chat4all up`` allows loopback):
signed calls, retries after 500s that keep the delivery id, a dead letter listed and replayed, and a
metadata-address URL refused."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from typing import Any

import attrs
import pytest

from tests.e2e.platforms import FakePlatform, a_user, running
from tests.e2e.test_metrics import metric

pytestmark = pytest.mark.e2e


@attrs.define
class Receiver:
    """A webhook receiver on 127.0.0.1 (a ``FakePlatform``): answers what ``answers[path]`` says next, then 200."""

    platform: FakePlatform
    answers: dict[str, list[int]]
    statuses: list[int]

    @property
    def url(self) -> str:
        return self.platform.url

    def on(self, path: str) -> list[dict[str, Any]]:
        """The calls to ``path``: their headers (lower case), raw body and the status they got."""
        with self.platform.lock:
            calls = zip(self.platform.calls, self.platform.raw, self.statuses, strict=True)
            return [{"headers": h, "body": raw, "status": st} for (p, h, _), raw, st in calls if p == path]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    answers: dict[str, list[int]] = {}
    statuses: list[int] = []

    def answer(path: str, headers: dict[str, str], body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        script = answers.get(path, [])
        statuses.append(script.pop(0) if script else 200)  # under the platform's lock, beside its call
        return statuses[-1], {}

    with running(answer) as platform:
        yield Receiver(platform, answers, statuses)


def verified(call: dict[str, Any], secret: str) -> bool:
    headers = call["headers"]
    signed = f"{headers['x-chat4all-timestamp']}.".encode() + call["body"]
    expected = "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, headers["x-chat4all-signature"])


def test_webhooks_are_signed_retried_with_one_id_dead_lettered_and_replayed(stack: Any, receiver: Receiver) -> None:
    http = stack.http
    ana_user, bob_user = a_user(http, "ana"), a_user(http, "bob")
    ana, bob = ana_user["headers"], bob_user["headers"]
    retried = http.post(
        "/v1/webhooks", json={"url": receiver.url + "/retried", "events": ["message.created"]}, headers=ana
    )
    assert retried.status_code == 201, retried.text
    dead = http.post("/v1/webhooks", json={"url": receiver.url + "/dead", "events": ["message.status"]}, headers=bob)
    assert dead.status_code == 201, dead.text
    receiver.answers["/retried"] = [500, 500]
    receiver.answers["/dead"] = [500] * 40  # every attempt of every status fails, until the replay below
    before = metric(stack, "chat4all_webhook_attempts_total", outcome="delivered") or 0.0

    conv = http.post("/v1/conversations", json={"type": "private", "members": [ana_user["username"]]}, headers=bob)
    sent = http.post(
        "/v1/messages",
        json={"conversation_id": conv.json()["conversation_id"], "payload": {"type": "text", "text": "olá"}},
        headers=bob,
    )
    assert sent.status_code == 202, sent.text
    message_id = sent.json()["message_id"]

    stack.wait_until(lambda: len(receiver.on("/retried")) >= 3, 30, "three attempts at ana's webhook")
    calls = receiver.on("/retried")
    assert [c["status"] for c in calls] == [500, 500, 200]
    assert len({c["headers"]["x-chat4all-delivery"] for c in calls}) == 1  # one id across the retries
    assert len({c["body"] for c in calls}) == 1
    assert all(verified(c, retried.json()["secret"]) for c in calls)
    body = json.loads(calls[0]["body"])
    assert body["id"] == calls[0]["headers"]["x-chat4all-delivery"]
    assert (body["type"], body["data"]["message_id"], body["data"]["payload"]["text"]) == (
        "message.created",
        message_id,
        "olá",
    )

    # ana reads it: bob's status webhook hears READ, every attempt fails, and the delivery is a dead letter.
    assert http.post(f"/v1/messages/{message_id}/read", headers=ana).status_code == 200
    deliveries = f"/v1/webhooks/{dead.json()['webhook_id']}/deliveries"

    def dead_letters() -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = http.get(deliveries + "?state=failed", headers=bob).json()["items"]
        return items

    stack.wait_until(lambda: bool(dead_letters()), 30, "a dead letter on bob's status webhook")
    letter = dead_letters()[0]
    assert (letter["attempts"], letter["last_status"]) == (4, 500)
    assert letter["body"]["data"]["message_id"] == message_id
    assert http.get(deliveries, headers=ana).status_code == 404  # not ana's webhook

    receiver.answers["/dead"] = []
    replay = http.post(f"{deliveries}/{letter['delivery_id']}/replay", headers=bob)
    assert replay.status_code == 202, replay.text

    def replayed() -> bool:
        return any(
            c["status"] == 200 and c["headers"]["x-chat4all-delivery"] == letter["delivery_id"]
            for c in receiver.on("/dead")
        )

    stack.wait_until(replayed, 30, "the replayed delivery reaching bob's receiver")
    stack.wait_until(
        lambda: (metric(stack, "chat4all_webhook_attempts_total", outcome="delivered") or 0.0) >= before + 2,
        15,
        "delivered webhook attempts counted on /metrics",
    )
    assert (metric(stack, "chat4all_webhook_attempts_total", outcome="dead") or 0.0) >= 1


def test_a_metadata_address_is_refused_and_nothing_is_called(stack: Any) -> None:
    ana = a_user(stack.http, "ana")["headers"]
    for url in ("http://169.254.169.254/latest/meta-data/", "http://[::ffff:169.254.169.254]/", "http://10.0.0.1/"):
        r = stack.http.post("/v1/webhooks", json={"url": url, "events": ["message.created"]}, headers=ana)
        assert r.status_code == 422, r.text
        assert r.json()["errors"][0]["field"] == "url"
    assert stack.http.get("/v1/webhooks", headers=ana).json()["items"] == []
