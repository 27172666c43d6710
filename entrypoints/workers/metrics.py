"""The pipeline workers' Prometheus metrics.

Under `chat4all up` every runtime shares one ``PROMETHEUS_MULTIPROC_DIR`` (prometheus-client's multiprocess
mode), so the HTTP API's ``GET /metrics`` shows these summed over every worker process, restarted ones included.
Each worker process writes its own files there; a process on its own (no such directory) keeps them in memory.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import Counter, Gauge

from application.pipeline import JobResult, Outcome, Routed, Swept
from domain.channels import Channel

OUTBOX_RELAYED = Counter("chat4all_outbox_relayed", "Outbox events the relay published to Kafka.")
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


def relayed(count: int) -> None:
    OUTBOX_RELAYED.inc(count)


def routed(r: Routed) -> None:
    MESSAGES_ROUTED.inc(r.messages)
    JOBS_ROUTED.inc(r.jobs)


def channel_started(channel: Channel) -> None:
    """Every series of ``channel`` at 0, so rates start from the worker's start; the circuit closed."""
    for outcome in Outcome:
        DELIVERY_JOBS.labels(channel.value, outcome.value)
    DEAD_LETTERS.labels(channel.value)
    CIRCUIT_OPEN.labels(channel.value).set(0)


def delivered(channel: Channel, results: Sequence[JobResult], breaker_state: str) -> None:
    """Count a batch's outcomes and record the circuit's state after it."""
    counts: dict[Outcome, int] = {}
    for r in results:
        counts[r.outcome] = counts.get(r.outcome, 0) + 1
    for outcome, n in counts.items():
        DELIVERY_JOBS.labels(channel.value, outcome.value).inc(n)
    if dead := counts.get(Outcome.DEAD, 0):
        DEAD_LETTERS.labels(channel.value).inc(dead)
    CIRCUIT_OPEN.labels(channel.value).set(0 if breaker_state == "closed" else 1)


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
    for outcome in ("delivered", "retrying", "dead", "gone"):
        WEBHOOK_ATTEMPTS.labels(outcome)


def webhook_attempted(outcome: str) -> None:
    WEBHOOK_ATTEMPTS.labels(outcome).inc()
