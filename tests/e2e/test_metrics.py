"""The pipeline workers' counters on the HTTP API's /metrics (prometheus-client multiprocess mode across the stack)."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from typing import Any

import pytest
from grpclib.client import Channel
from grpclib.exceptions import GRPCError
from grpclib.health.v1.health_grpc import HealthStub
from grpclib.health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from domain.uploads import UploadSession

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


def scrape(stack: Any) -> tuple[set[str], list[Sample]]:
    """GET /metrics: the families it has (a HELP line each) and every sample."""
    r = stack.http.get("/metrics")
    assert r.status_code == 200, r.text
    families = list(text_string_to_metric_families(r.text))
    return {f.name for f in families}, [s for f in families for s in f.samples]


def found(samples: list[Sample], name: str, **labels: str) -> float | None:
    values = [s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    return sum(values) if values else None


async def _health_check(port: int) -> bool:
    channel = Channel("127.0.0.1", port)
    try:
        reply = await HealthStub(channel).Check(HealthCheckRequest(service=""), timeout=2)
        return reply is not None and reply.status == HealthCheckResponse.SERVING
    except (OSError, GRPCError, TimeoutError):
        return False
    finally:
        channel.close()


def _user(http: Any, name: str) -> dict[str, str]:
    assert http.post("/v1/users", json={"username": name, "password": "metrics-pw"}).status_code == 201
    token = http.post("/auth/token", json={"username": name, "password": "metrics-pw"}).json()["access_token"]
    return {"Authorization": f"Bearer {token}"}


def test_a_send_shows_every_family_of_the_metrics_catalogue(stack: Any) -> None:
    """After a send (and an upload, and a gRPC call), /metrics has every family docs list as one produces."""
    http = stack.http
    names = {who: f"{who}{uuid.uuid4().hex[:8]}" for who in ("ana", "bob")}
    headers = {who: _user(http, name) for who, name in names.items()}
    linked = http.post(
        "/v1/users/me/identities",
        json={"channel": "telegram", "external_id": str(uuid.uuid4().int % 10**9)},
        headers=headers["bob"],
    )
    assert linked.status_code == 201, linked.text
    conv = http.post("/v1/conversations", json={"type": "private", "members": [names["bob"]]}, headers=headers["ana"])
    assert conv.status_code == 201, conv.text

    _, before = scrape(stack)
    telegram = {"channel": "telegram"}
    delivered = {"channel": "telegram", "status": "DELIVERED"}
    was = {
        "accepted": found(before, "chat4all_messages_accepted_total") or 0.0,
        "planned": found(before, "chat4all_deliveries_planned_total", **telegram) or 0.0,
        "delivered": found(before, "chat4all_deliveries_total", **delivered) or 0.0,
        "latency": found(before, "chat4all_delivery_latency_seconds_count", **telegram) or 0.0,
        "upload_bytes": found(before, "chat4all_upload_bytes_total") or 0.0,
    }

    sent = http.post(
        "/v1/messages",
        json={"conversation_id": conv.json()["conversation_id"], "payload": {"type": "text", "text": "catalogued"}},
        headers=headers["ana"],
    )
    assert sent.status_code == 202, sent.text
    chunk = UploadSession.MIN_CHUNK
    upload = http.post(
        "/v1/files/initiate",
        json={"filename": "open.bin", "size": chunk + 10, "chunk_size": chunk},
        headers=headers["ana"],
    )
    assert upload.status_code == 201, upload.text
    file_id = upload.json()["file_id"]
    put = http.put(f"/v1/files/{file_id}/chunks/0", content=os.urandom(chunk), headers=headers["ana"])
    assert put.status_code == 200, put.text  # and the upload stays open: the sweeper counts it
    grpc_port = int(stack.env["CHAT4ALL_GRPC_PORT"])
    deadline = time.monotonic() + 30
    while not asyncio.run(_health_check(grpc_port)):
        assert time.monotonic() < deadline, f"the gRPC API did not answer within 30s\n{stack.log()}"
        time.sleep(0.2)

    def produced() -> bool:
        _, now = scrape(stack)
        return (
            (found(now, "chat4all_messages_accepted_total") or 0.0) >= was["accepted"] + 1
            and (found(now, "chat4all_deliveries_planned_total", **telegram) or 0.0) >= was["planned"] + 1
            and (found(now, "chat4all_deliveries_total", **delivered) or 0.0) >= was["delivered"] + 1
            and (found(now, "chat4all_delivery_latency_seconds_count", **telegram) or 0.0) >= was["latency"] + 1
            and (found(now, "chat4all_upload_bytes_total") or 0.0) >= was["upload_bytes"] + chunk
            and (found(now, "chat4all_uploads_active") or 0.0) >= 1
            and found(now, "chat4all_outbox_backlog") is not None
            and (found(now, "chat4all_grpc_requests_total", method="/grpc.health.v1.Health/Check", code="OK") or 0) >= 1
        )

    stack.wait_until(produced, 30, "the send, the upload and the gRPC call counted on /metrics")
    families, samples = scrape(stack)
    http.delete(f"/v1/files/{file_id}", headers=headers["ana"])

    assert (found(samples, "chat4all_http_requests_total", method="POST", route="/v1/messages", status="202") or 0) >= 1
    assert (
        found(samples, "chat4all_http_request_duration_seconds_count", method="POST", route="/v1/messages") or 0
    ) >= 1
    health = "/grpc.health.v1.Health/Check"
    assert (found(samples, "chat4all_grpc_request_duration_seconds_count", method=health) or 0) >= 1
    # Series that exist at 0 from their runtime's start, whether or not anything happened to them yet.
    assert found(samples, "chat4all_connector_errors_total", channel="telegram", kind="transient") is not None
    assert found(samples, "chat4all_connector_errors_total", channel="telegram", kind="permanent") is not None
    assert found(samples, "chat4all_websocket_connections") is not None
    assert found(samples, "chat4all_rate_limited_total", limit="send") is not None
    assert found(samples, "chat4all_webhook_attempts_total", outcome="delivered") is not None
    assert found(samples, "chat4all_deliveries_total", channel="whatsapp", status="FAILED") is not None
    catalogue = {
        "chat4all_http_requests",
        "chat4all_http_request_duration_seconds",
        "chat4all_grpc_requests",
        "chat4all_grpc_request_duration_seconds",
        "chat4all_messages_accepted",
        "chat4all_deliveries_planned",
        "chat4all_deliveries",
        "chat4all_delivery_latency_seconds",
        "chat4all_outbox_backlog",
        "chat4all_connector_errors",
        "chat4all_upload_bytes",
        "chat4all_uploads_active",
        "chat4all_websocket_connections",
        "chat4all_rate_limited",
        "chat4all_webhook_attempts",
    }
    assert catalogue - families == set()
    # Another engineer's (the consumers' lag, sampled by each worker): last, so that the rest is checked without it.
    assert any(s.name == "chat4all_consumer_lag" for s in samples), "no chat4all_consumer_lag series on /metrics"
