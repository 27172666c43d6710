"""What the workers count from the event log (``events_seen``) and from a channel batch's results (connector errors)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from prometheus_client import REGISTRY

from application.accepting import message_event
from application.events import status_event
from application.pipeline import (
    ChannelDeps,
    CircuitBreaker,
    DeliveryJob,
    JobResult,
    Outcome,
    PipelineDeps,
    RetryPolicy,
    deliver_jobs,
    relay_outbox,
    route_events,
)
from application.ports import ChannelError
from domain.channels import Channel, ChannelAddress
from domain.conversations import Participant
from domain.deliveries import Delivery, DeliveryStatus
from entrypoints.workers import metrics
from tests.builders import T0, Chat4All, FakePublisher, ScriptedConnector, a_chat4all, a_conversation, a_message


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# --- events_seen ------------------------------------------------------------------------------------


def delivery_samples() -> dict[str, float]:
    """The samples events_seen moves, by a short name."""
    return {
        "accepted": value("chat4all_messages_accepted_total"),
        "planned_internal": value("chat4all_deliveries_planned_total", channel="internal"),
        "planned_telegram": value("chat4all_deliveries_planned_total", channel="telegram"),
        "delivered": value("chat4all_deliveries_total", channel="telegram", status="DELIVERED"),
        "read": value("chat4all_deliveries_total", channel="internal", status="READ"),
        "sent": value("chat4all_deliveries_total", channel="telegram", status="SENT"),
        "latency_count": value("chat4all_delivery_latency_seconds_count", channel="telegram"),
        "latency_sum": value("chat4all_delivery_latency_seconds_sum", channel="telegram"),
        "latency_le_2_5": value("chat4all_delivery_latency_seconds_bucket", channel="telegram", le="2.5"),
        "latency_le_1": value("chat4all_delivery_latency_seconds_bucket", channel="telegram", le="1.0"),
        "internal_latency": value("chat4all_delivery_latency_seconds_count", channel="internal"),
    }


def test_the_log_counts_accepted_messages_planned_deliveries_status_changes_and_latency() -> None:
    conv = a_conversation()
    sender, bob = conv.members[0], conv.members[1]
    m = a_message(conv, sender=sender, at=T0)
    internal = Delivery.accepted(message_id=m.id, recipient=bob, channel=Channel.INTERNAL, at=T0)
    telegram = Delivery.accepted(
        message_id=m.id,
        recipient=Participant.contact(ChannelAddress.parse("telegram:4242")),
        channel=Channel.TELEGRAM,
        at=T0,
    )
    created = message_event(m, [internal, telegram])
    telegram.advance(DeliveryStatus.DELIVERED, at=T0 + timedelta(seconds=2))
    delivered = status_event(conv.id, sender.key, telegram)
    internal.advance(DeliveryStatus.READ, at=T0 + timedelta(seconds=3))  # a READ that skips DELIVERED
    read = status_event(conv.id, sender.key, internal)
    assert delivered["sent_at"] == read["sent_at"] == T0.isoformat()

    before = delivery_samples()
    noise = [
        {"type": "conversation.created"},
        {"type": "message.status", "channel": "fax", "status": "DELIVERED"},
        {"type": "message.status", "channel": ["telegram"], "status": "DELIVERED"},
        {"type": "message.status", "channel": "telegram", "status": "SENT"},  # not a change counted
        {"type": "message.status", "channel": "telegram", "status": "DELIVERED", "at": "x", "sent_at": "y"},
    ]

    metrics.events_seen([created, delivered, read, *noise])

    after = delivery_samples()
    assert {k: after[k] - before[k] for k in before} == {
        "accepted": 1,
        "planned_internal": 1,
        "planned_telegram": 1,
        "delivered": 2,  # the malformed times still count the change, without a latency
        "read": 1,
        "sent": 0,
        "latency_count": 1,
        "latency_sum": 2.0,
        "latency_le_2_5": 1,
        "latency_le_1": 0,
        "internal_latency": 0,
    }


def test_the_webhooks_worker_starts_every_series_it_counts_at_zero() -> None:
    metrics.webhooks_started()
    for channel in Channel:
        assert REGISTRY.get_sample_value("chat4all_deliveries_planned_total", {"channel": channel.value}) is not None
        assert (
            REGISTRY.get_sample_value("chat4all_delivery_latency_seconds_count", {"channel": channel.value}) is not None
        )
        for status in ("DELIVERED", "READ", "FAILED"):
            labels = {"channel": channel.value, "status": status}
            assert REGISTRY.get_sample_value("chat4all_deliveries_total", labels) is not None


# --- connector errors -------------------------------------------------------------------------------


@pytest.fixture
def app() -> Chat4All:
    return a_chat4all()


async def telegram_jobs(app: Chat4All, deps: PipelineDeps, log: FakePublisher) -> list[DeliveryJob]:
    await app.register_all("ana", "bruno")
    await app.link("bruno", "telegram", "4242")
    await app.send("ana", await app.start("ana", "bruno"))
    while await relay_outbox(deps):
        pass
    await route_events(deps, log.on("chat.messages"))
    return [DeliveryJob.from_event(e) for e in log.on("chat.outbound.telegram")]


def channel_deps(deps: PipelineDeps, connector: ScriptedConnector, *, attempts: int, threshold: int) -> ChannelDeps:
    async def no_wait(_: float) -> None:
        pass

    return ChannelDeps(
        pipeline=deps,
        connector=connector,
        breaker=CircuitBreaker(deps.clock, threshold=threshold, reset_after=timedelta(seconds=10)),
        retry=RetryPolicy(max_attempts=attempts, base_delay=0.1, max_delay=5.0),
        sleep=no_wait,
    )


T, P = ChannelError("503"), ChannelError("bot was blocked by the user", permanent=True)


@pytest.mark.parametrize(
    ("script", "attempts", "threshold", "outcome", "errors"),
    [
        ([], 3, 100, Outcome.HANDED_OVER, (0, 0)),
        ([T, T], 5, 100, Outcome.HANDED_OVER, (2, 0)),  # retried, then handed over
        ([P], 3, 100, Outcome.FAILED, (0, 1)),
        ([T, P], 3, 100, Outcome.FAILED, (1, 1)),
        ([T, T, T], 3, 100, Outcome.DEAD, (3, 0)),  # every attempt failed
        ([T], 3, 1, Outcome.DEFERRED, (1, 0)),  # the failure opened the circuit: deferred after one attempt
    ],
)
async def test_connector_errors_are_the_platforms_refusals_behind_a_result(
    app: Chat4All,
    script: list[ChannelError],
    attempts: int,
    threshold: int,
    outcome: Outcome,
    errors: tuple[int, int],
) -> None:
    log = FakePublisher()
    deps = PipelineDeps(uow=app.store.uow, clock=app.clock, publisher=log)
    jobs = await telegram_jobs(app, deps, log)
    telegram = ScriptedConnector(Channel.TELEGRAM, *script)

    (result,) = await deliver_jobs(channel_deps(deps, telegram, attempts=attempts, threshold=threshold), jobs)

    raised = script[: telegram.calls]  # what the platform answered, as the pipeline saw it
    assert result.outcome is outcome
    assert metrics.connector_errors(result) == errors
    assert errors == (sum(not e.permanent for e in raised), sum(e.permanent for e in raised))


def test_a_batch_counts_its_connector_errors_on_series_created_at_zero() -> None:
    channel = Channel.MESSENGER
    metrics.channel_started(channel)
    transient, permanent = (
        value("chat4all_connector_errors_total", channel="messenger", kind="transient"),
        value("chat4all_connector_errors_total", channel="messenger", kind="permanent"),
    )
    for kind in ("transient", "permanent"):
        labels = {"channel": "messenger", "kind": kind}
        assert REGISTRY.get_sample_value("chat4all_connector_errors_total", labels) is not None

    job = DeliveryJob.from_event(
        {
            "message_id": "00000000-0000-0000-0000-000000000001",
            "conversation_id": "00000000-0000-0000-0000-000000000002",
            "seq": 1,
            "recipient": "contact:messenger:1234567",
            "channel": "messenger",
            "to": "messenger:1234567",
            "sender": "user:00000000-0000-0000-0000-000000000003",
            "payload": {"type": "text", "text": "hi"},
            "created_at": T0.isoformat(),
        }
    )
    results = [
        JobResult(job, Outcome.HANDED_OVER, attempts=3),  # 2 transient
        JobResult(job, Outcome.FAILED, attempts=2),  # 1 transient, 1 permanent
        JobResult(job, Outcome.FAILED, attempts=0),  # failed before any send: nothing
        JobResult(job, Outcome.DEAD, attempts=4),  # 4 transient
        JobResult(job, Outcome.DEFERRED, attempts=1),  # 1 transient
        JobResult(job, Outcome.DEFERRED),  # never sent: nothing
        JobResult(job, Outcome.ALREADY_SENT),
    ]

    metrics.delivered(channel, results, "closed")

    assert value("chat4all_connector_errors_total", channel="messenger", kind="transient") == transient + 8
    assert value("chat4all_connector_errors_total", channel="messenger", kind="permanent") == permanent + 1
