"""The pipeline workers' Prometheus metrics.

Under `chat4all up` every runtime shares one ``PROMETHEUS_MULTIPROC_DIR`` (prometheus-client's multiprocess
mode), so the HTTP API's ``GET /metrics`` shows these summed over every worker process, restarted ones included.
Each worker process writes its own files there; a process on its own (no such directory) keeps them in memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from application.pipeline import JobResult, Outcome, Routed, Swept
from domain.channels import Channel
from domain.deliveries import DeliveryStatus

OUTBOX_RELAYED = Counter("chat4all_outbox_relayed", "Outbox events the relay published to Kafka.")
BROKER_LOG_LOSSES = Counter(
    "chat4all_broker_log_losses",
    "Times the relay found the broker's log shorter than before (it lost records) and published the outbox again.",
)
MESSAGES_ROUTED = Counter(
    "chat4all_messages_routed", "Messages the router found behind and routed (acceptance queues the others' jobs)."
)
JOBS_ROUTED = Counter("chat4all_jobs_routed", "Delivery jobs the router published to chat.outbound.<channel>.")
DELIVERY_JOBS = Counter(
    "chat4all_delivery_jobs",
    "Delivery jobs the channel workers handled, by channel and outcome "
    "(handed_over, already_sent, failed, dead, deferred).",
    ["channel", "outcome"],
)
DEAD_LETTERS = Counter("chat4all_dead_letters", "Delivery jobs published to chat.dlq, by channel.", ["channel"])
RECEIPTS_APPLIED = Counter("chat4all_receipts_applied", "Receipts that moved a delivery forward.")
SWEEPER_REDRIVEN = Counter(
    "chat4all_sweeper_redriven",
    "What the sweeper re-drove: stuck conversations and delivery jobs.",
    ["what"],
)
FRAMES_PUSHED = Counter(
    "chat4all_frames_pushed",
    "Real-time frames the push worker published, by outcome (published, dropped).",
    ["outcome"],
)
WEBHOOK_ATTEMPTS = Counter(
    "chat4all_webhook_attempts",
    "Outbound webhook attempts, by outcome (delivered, retrying, dead, gone: the receiver answered 410).",
    ["outcome"],
)
CIRCUIT_OPEN = Gauge(
    "chat4all_circuit_open",
    "1 while a channel's circuit breaker is open or half-open in some channel worker, else 0.",
    ["channel"],
    multiprocess_mode="livemax",
)
CONNECTOR_ERRORS = Counter(
    "chat4all_connector_errors",
    "Send attempts a platform failed, by channel and kind. transient: a failure that may pass (retried, or the "
    "last of a dead or deferred job): every attempt of a dead or deferred job, every attempt but the last of a "
    "handed-over or failed one; permanent: the platform refused the message for good, the last attempt of a "
    "failed job. A job failed before any send (a file it cannot attach) counts nowhere.",
    ["channel", "kind"],
)

# Sampled gauges: every sampler reads the same database, so the freshest reading of a live process is the value
# (a sum would count it once per sampler; a max would keep a stalled sampler's stale peak). No value until the
# first reading.
OUTBOX_BACKLOG = Gauge(
    "chat4all_outbox_backlog",
    "Outbox events committed and not yet published to Kafka (sampled by the relay, at most every 5 s).",
    multiprocess_mode="livemostrecent",
)
UPLOADS_ACTIVE = Gauge(
    "chat4all_uploads_active",
    "Upload sessions open (still taking chunks), sampled by the sweeper every sweep.",
    multiprocess_mode="livemostrecent",
)

# Counted by the webhooks worker, which reads every event of chat.messages and chat.status (once per group).
MESSAGES_ACCEPTED = Counter("chat4all_messages_accepted", "Messages accepted (message.created events in the log).")
DELIVERIES_PLANNED = Counter(
    "chat4all_deliveries_planned",
    "Deliveries created when messages were accepted, by target channel (internal: Chat4All's own clients).",
    ["channel"],
)
DELIVERIES = Counter(
    "chat4all_deliveries",
    "Delivery status changes seen in the log, by channel and status (DELIVERED, READ, FAILED).",
    ["channel", "status"],
)
DELIVERY_LATENCY = Histogram(
    "chat4all_delivery_latency_seconds",
    "Seconds from a message's acceptance to its delivery becoming DELIVERED, by channel "
    "(a READ that skips DELIVERED is not observed).",
    ["channel"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
_COUNTED_STATUSES = frozenset({DeliveryStatus.DELIVERED.value, DeliveryStatus.READ.value, DeliveryStatus.FAILED.value})
_CHANNELS = frozenset(c.value for c in Channel)
_latency: dict[str, Any] = {}


def relayed(count: int) -> None:
    OUTBOX_RELAYED.inc(count)


def log_losses() -> None:
    BROKER_LOG_LOSSES.inc()


def routed(r: Routed) -> None:
    MESSAGES_ROUTED.inc(r.messages)
    JOBS_ROUTED.inc(r.jobs)


def channel_started(channel: Channel) -> None:
    """Every series of ``channel`` at 0, so rates start from the worker's start; the circuit closed."""
    for outcome in Outcome:
        DELIVERY_JOBS.labels(channel.value, outcome.value)
    DEAD_LETTERS.labels(channel.value)
    for kind in ("transient", "permanent"):
        CONNECTOR_ERRORS.labels(channel.value, kind)
    CIRCUIT_OPEN.labels(channel.value).set(0)


def connector_errors(r: JobResult) -> tuple[int, int]:
    """The (transient, permanent) platform errors behind one job's result.

    ``_send_one`` counts the sends it tried in ``attempts``, and ends at the first success or permanent
    refusal: so every attempt failed transiently except a handed-over job's last one (it succeeded) and a
    failed job's last one (refused for good). A failed job without attempts failed before any send.
    """
    if r.attempts <= 0:
        return 0, 0
    if r.outcome is Outcome.HANDED_OVER:
        return r.attempts - 1, 0
    if r.outcome is Outcome.FAILED:
        return r.attempts - 1, 1
    if r.outcome in (Outcome.DEAD, Outcome.DEFERRED):
        return r.attempts, 0
    return 0, 0


def delivered(channel: Channel, results: Sequence[JobResult], breaker_state: str) -> None:
    """Count a batch's outcomes and platform errors, and record the circuit's state after it."""
    counts: dict[Outcome, int] = {}
    transient = permanent = 0
    for r in results:
        counts[r.outcome] = counts.get(r.outcome, 0) + 1
        if r.attempts:
            t, p = connector_errors(r)
            transient += t
            permanent += p
    for outcome, n in counts.items():
        DELIVERY_JOBS.labels(channel.value, outcome.value).inc(n)
    if dead := counts.get(Outcome.DEAD, 0):
        DEAD_LETTERS.labels(channel.value).inc(dead)
    if transient:
        CONNECTOR_ERRORS.labels(channel.value, "transient").inc(transient)
    if permanent:
        CONNECTOR_ERRORS.labels(channel.value, "permanent").inc(permanent)
    CIRCUIT_OPEN.labels(channel.value).set(0 if breaker_state == "closed" else 1)


def outbox_backlog(count: int) -> None:
    OUTBOX_BACKLOG.set(count)


def uploads_active(count: int) -> None:
    UPLOADS_ACTIVE.set(count)


def pushed(count: int, *, dropped: bool = False) -> None:
    FRAMES_PUSHED.labels("dropped" if dropped else "published").inc(count)


def receipts_applied(count: int) -> None:
    RECEIPTS_APPLIED.inc(count)


def sweeper_started() -> None:
    for what in ("conversations", "jobs"):
        SWEEPER_REDRIVEN.labels(what)


def swept(s: Swept) -> None:
    SWEEPER_REDRIVEN.labels("conversations").inc(s.conversations)
    SWEEPER_REDRIVEN.labels("jobs").inc(s.jobs)


def webhooks_started() -> None:
    """The webhooks' series and those of the events it counts (``events_seen``), at 0."""
    for outcome in ("delivered", "retrying", "dead", "gone"):
        WEBHOOK_ATTEMPTS.labels(outcome)
    for channel in _CHANNELS:
        DELIVERIES_PLANNED.labels(channel)
        DELIVERY_LATENCY.labels(channel)
        for status in _COUNTED_STATUSES:
            DELIVERIES.labels(channel, status)


def _seconds_between(start: object, end: object) -> float | None:
    try:
        seconds = (datetime.fromisoformat(str(end)) - datetime.fromisoformat(str(start))).total_seconds()
    except (TypeError, ValueError):  # malformed, or one of them without a time zone
        return None
    return max(seconds, 0.0)


def _count_created(event: Mapping[str, Any], planned: dict[str, int]) -> None:
    deliveries = event.get("deliveries")
    for dl in deliveries if isinstance(deliveries, list) else ():
        channel = dl.get("channel") if isinstance(dl, dict) else None
        if isinstance(channel, str) and channel in _CHANNELS:
            planned[channel] = planned.get(channel, 0) + 1


def _count_status(event: Mapping[str, Any], changes: dict[tuple[str, str], int]) -> None:
    channel, status = event.get("channel"), event.get("status")
    if not (isinstance(channel, str) and channel in _CHANNELS and isinstance(status, str)):
        return
    if status not in _COUNTED_STATUSES:
        return
    changes[(channel, status)] = changes.get((channel, status), 0) + 1
    if status != DeliveryStatus.DELIVERED.value or "sent_at" not in event:
        return
    seconds = _seconds_between(event["sent_at"], event.get("at"))
    if seconds is not None:
        histogram = _latency.get(channel)
        if histogram is None:
            histogram = _latency[channel] = DELIVERY_LATENCY.labels(channel)
        histogram.observe(seconds)


def events_seen(payloads: Iterable[Mapping[str, Any]]) -> None:
    """Count what the log says happened: messages accepted, deliveries planned, status changes and latencies.

    ``message.created``: one accepted message and one planned delivery per item of its ``deliveries``;
    ``message.status``: one change of DELIVERED, READ or FAILED, and for DELIVERED the time since the
    message's acceptance (``at - sent_at``). Unknown channels and malformed events are skipped.
    """
    accepted = 0
    planned: dict[str, int] = {}
    changes: dict[tuple[str, str], int] = {}
    for event in payloads:
        kind = event.get("type")
        if kind == "message.created":
            accepted += 1
            _count_created(event, planned)
        elif kind == "message.status":
            _count_status(event, changes)
    if accepted:
        MESSAGES_ACCEPTED.inc(accepted)
    for channel, n in planned.items():
        DELIVERIES_PLANNED.labels(channel).inc(n)
    for (channel, status), n in changes.items():
        DELIVERIES.labels(channel, status).inc(n)


def webhook_attempted(outcome: str) -> None:
    WEBHOOK_ATTEMPTS.labels(outcome).inc()
