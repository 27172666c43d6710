"""`chat4all drill stress`: a fixed arrival rate for a chosen time, nothing broken.

Open-model load (arrivals do not wait for answers, so a stack that slows down shows it as latency)
reported as two latencies, since they answer different questions: the acknowledgement (request to
202: the message is durable) and accepted -> DELIVERED (202 to the sender's WebSocket telling it
the platform confirmed delivery).
"""

from __future__ import annotations

import click

from entrypoints.drill.runner import Plan, execute, load_options
from entrypoints.drill.target import Target


@click.command("stress")
@load_options(rate=50, seconds=60)
def command(rate: float, seconds: float, senders: int, conversations: int, drain_timeout: float, as_json: bool) -> None:
    """Send at a fixed rate for a while; report acknowledgement and accepted -> DELIVERED latency."""
    plan = Plan(
        name="stress",
        rate=rate,
        seconds=seconds,
        senders=senders,
        conversations=conversations,
        drain_timeout=drain_timeout,
    )
    raise SystemExit(execute(Target.from_environment, plan, as_json=as_json))
