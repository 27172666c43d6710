"""Steps for features/integrations/webhooks.feature."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import pytest
from pytest_bdd import given, parsers, scenarios, then, when

from application import commands as c
from application import topics
from application.pipeline import RetryPolicy
from application.ports import WebhookResponse, WebhookSender
from application.webhooks import DispatchDeps, dispatch_due, record_events
from tests.bdd.world import World, step

pytestmark = pytest.mark.bdd

scenarios("integrations/webhooks.feature")


class Crm(WebhookSender):
    """The CRM's endpoint: answers from a script (then 200, unless down) and keeps every call."""

    def __init__(self) -> None:
        self.answers: list[int] = []
        self.down = False
        self.calls: list[tuple[bytes, dict[str, str]]] = []

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> WebhookResponse:
        self.calls.append((body, dict(headers)))
        status = self.answers.pop(0) if self.answers else 503 if self.down else 200
        return WebhookResponse(status)

    def received(self, text: str) -> list[tuple[dict[str, Any], dict[str, str]]]:
        found = []
        for body, headers in self.calls:
            document = json.loads(body)
            if document["data"].get("payload", {}).get("text") == text:
                found.append((document, headers))
        return found


@pytest.fixture
def crm() -> Crm:
    return Crm()


@pytest.fixture
def hooks() -> dict[str, Any]:
    return {}


def dispatcher(world: World, crm: Crm) -> DispatchDeps:
    return DispatchDeps(
        world.app.store.uow, world.app.clock, crm, RetryPolicy(max_attempts=5, base_delay=5.0, max_delay=3600.0)
    )


def call_due(world: World, crm: Crm) -> None:
    events = [e for t, _, e in world.app.store.state.outbox if t in (topics.MESSAGES, topics.STATUS)]
    world.run(record_events(world.app.store.uow, world.app.clock, events))
    world.run(dispatch_due(dispatcher(world, crm)))


@given(step('{owner}\'s CRM listens at "{url}" for new messages and statuses'))
def crm_listens(world: World, hooks: dict[str, Any], owner: str, url: str) -> None:
    events = ["message.created", "message.status"]
    hooks[owner] = world.run(world.app.handle(c.CreateWebhook(world.app.users[owner], url, events)))


@given(step("the CRM answers {status:d} twice"))
def crm_answers_twice(crm: Crm, status: int) -> None:
    crm.answers = [status, status]


@given("the CRM is down")
def crm_down(crm: Crm) -> None:
    crm.down = True


@when("Chat4All calls the webhooks that are due")
def calls_due(world: World, crm: Crm) -> None:
    call_due(world, crm)


@when(step("{minutes:d} minutes pass"))
def minutes_pass(world: World, minutes: int) -> None:
    world.app.clock.advance(timedelta(minutes=minutes))


@when("Chat4All keeps calling for a day")
def calls_for_a_day(world: World, crm: Crm) -> None:
    for _ in range(24):
        call_due(world, crm)
        world.app.clock.advance(timedelta(hours=1))


@when(step("the CRM is back and {owner} replays it"))
def replays(world: World, crm: Crm, hooks: dict[str, Any], owner: str) -> None:
    crm.down = False
    hook = hooks[owner]
    page = world.run(world.app.handle(c.ListWebhookDeliveries(world.app.users[owner], hook.webhook_id, "failed")))
    (dead,) = page.items
    world.run(world.app.handle(c.ReplayWebhookDelivery(world.app.users[owner], hook.webhook_id, dead.delivery_id)))


@when(parsers.parse('{owner} subscribes "{url}" to new messages'))
def subscribes(world: World, owner: str, url: str) -> None:
    world.attempt(world.app.handle(c.CreateWebhook(world.app.users[owner], url, ["message.created"])))


@then(step('the CRM received "{text}" once'))
def received_once(crm: Crm, text: str) -> None:
    assert len(crm.received(text)) == 1


@then(step("the call is signed with {owner}'s secret"))
def signed(crm: Crm, hooks: dict[str, Any], owner: str) -> None:
    body, headers = crm.calls[-1]
    timestamp = headers["X-Chat4All-Timestamp"]
    mac = hmac.new(hooks[owner].secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Chat4All-Signature"], f"sha256={mac}")


@then(step('the CRM received "{text}" {times:d} times, always as the same delivery'))
def received_times(crm: Crm, text: str, times: int) -> None:
    calls = crm.received(text)
    assert len(calls) == times
    assert len({headers["X-Chat4All-Delivery"] for _, headers in calls}) == 1
    assert len({document["id"] for document, _ in calls}) == 1


@then(step('{owner} sees one failed delivery of "{text}"'))
def one_failed(world: World, hooks: dict[str, Any], owner: str, text: str) -> None:
    page = world.run(
        world.app.handle(c.ListWebhookDeliveries(world.app.users[owner], hooks[owner].webhook_id, "failed"))
    )
    assert [d.body["data"]["payload"]["text"] for d in page.items] == [text]
    assert page.items[0].attempts == 5


@then(step('the CRM received "{text}" as the same delivery'))
def received_same(crm: Crm, text: str) -> None:
    calls = crm.received(text)
    assert calls[-1][1]["X-Chat4All-Delivery"] == calls[0][1]["X-Chat4All-Delivery"]
    assert len(calls) == 6  # five failed attempts, then the replay


@then("she is told this URL may not receive webhooks")
def refused_url(world: World) -> None:
    assert "may not receive webhooks" in world.error_message()
    assert getattr(world.error, "field", None) == "url"
