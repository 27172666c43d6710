"""The pipeline workers' counters on the HTTP API's /metrics (prometheus-client multiprocess mode across the stack)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.e2e


def metric(stack: Any, name: str, **labels: str) -> float | None:
    """The value of sample ``name`` with ``labels`` on GET /metrics; None when there is no such sample."""
    r = stack.http.get("/metrics")
    assert r.status_code == 200, r.text
    values = [
        s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    return sum(values) if values else None


def test_a_delivered_message_shows_in_the_workers_counters(stack: Any) -> None:
    http = stack.http
    names = {who: f"{who}{uuid.uuid4().hex[:8]}" for who in ("ana", "bob")}
    for name in names.values():
        assert http.post("/v1/users", json={"username": name, "password": "metrics-pw"}).status_code == 201
    headers = {}
    for who, name in names.items():
        token = http.post("/auth/token", json={"username": name, "password": "metrics-pw"}).json()["access_token"]
        headers[who] = {"Authorization": f"Bearer {token}"}
    linked = http.post(
        "/v1/users/me/identities",
        json={"channel": "telegram", "external_id": str(uuid.uuid4().int % 10**9)},
        headers=headers["bob"],
    )
    assert linked.status_code == 201, linked.text
    conv = http.post("/v1/conversations", json={"type": "private", "members": [names["bob"]]}, headers=headers["ana"])
    assert conv.status_code == 201, conv.text

    handed_over = {"channel": "telegram", "outcome": "handed_over"}
    before_relayed = metric(stack, "chat4all_outbox_relayed_total") or 0.0
    before_handed_over = metric(stack, "chat4all_delivery_jobs_total", **handed_over) or 0.0
    before_receipts = metric(stack, "chat4all_receipts_applied_total") or 0.0
    sent = http.post(
        "/v1/messages",
        json={"conversation_id": conv.json()["conversation_id"], "payload": {"type": "text", "text": "counted"}},
        headers=headers["ana"],
    )
    assert sent.status_code == 202, sent.text

    stack.wait_until(
        lambda: (
            # the message's event and its telegram job, both queued when it was accepted (ADR 004)
            (metric(stack, "chat4all_outbox_relayed_total") or 0.0) >= before_relayed + 2
            and (metric(stack, "chat4all_delivery_jobs_total", **handed_over) or 0.0) >= before_handed_over + 1
            and (metric(stack, "chat4all_receipts_applied_total") or 0.0) >= before_receipts + 1
        ),
        30,
        "the message counted as relayed, handed over to telegram and delivered on /metrics",
    )
    assert metric(stack, "chat4all_circuit_open", channel="telegram") == 0
    assert metric(stack, "chat4all_dead_letters_total", channel="telegram") is not None
    assert metric(stack, "chat4all_sweeper_redriven_total", what="jobs") is not None
