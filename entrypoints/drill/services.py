"""`chat4all drill broker-loss` and `chat4all drill database-restart`: a backing service dies under load.

**broker-loss** kills the embedded Kafka broker (Tansu keeps its log in memory: it comes back empty,
with every topic, record and committed offset gone). `chat4all up` starts it again and re-creates the
topics; what the broker lost is still in PostgreSQL (the outbox, the deliveries), and the platform
must still get every accepted message, once.

**database-restart** kills PostgreSQL (SIGKILL of the postmaster: a crash, recovered from the WAL).
While it is down, the API answers 503 problem+json with Retry-After and accepts nothing; the
clients retry with the same ``message_id``. `chat4all up` starts it again; the runtimes reconnect by
themselves, and nothing that was acknowledged is lost.
"""

from __future__ import annotations

import asyncio
from typing import Any

import click

from entrypoints.drill.runner import Action, Plan, execute, load_options
from entrypoints.drill.target import Target

RESTART_TIMEOUT_S = 120.0


def restart(service: str) -> Action:
    """SIGKILL the stack's embedded ``service`` and wait until the supervisor has started it again."""

    async def action(target: Target) -> dict[str, Any]:
        pid = target.kill_service(service)
        took = await asyncio.to_thread(target.wait_replaced, service, pid, RESTART_TIMEOUT_S)
        return {"pid": pid, "restarted_s": round(took, 2)}

    return action


def _plan(
    name: str,
    service: str,
    rate: float,
    seconds: float,
    senders: int,
    conversations: int,
    drain_timeout: float,
    at: float | None,
) -> Plan:
    return Plan(
        name=name,
        rate=rate,
        seconds=seconds,
        senders=senders,
        conversations=conversations,
        drain_timeout=drain_timeout,
        disruptions=[(seconds / 3 if at is None else at, f"kill -9 {service}", restart(service))],
    )


_AT = click.option(
    "--at",
    "at",
    type=click.FloatRange(min=0),
    default=None,
    help="seconds into the load to kill it (default: a third of the way)",
)


@click.command("broker-loss")
@load_options(rate=50, seconds=45)
@_AT
def broker_loss(
    rate: float, seconds: float, senders: int, conversations: int, drain_timeout: float, as_json: bool, at: float | None
) -> None:
    """Kill the embedded Kafka broker under load (it restarts empty); everything accepted is still delivered."""
    plan = _plan("broker-loss", "kafka", rate, seconds, senders, conversations, drain_timeout, at)
    raise SystemExit(execute(Target.from_environment, plan, as_json=as_json))


@click.command("database-restart")
@load_options(rate=50, seconds=45)
@_AT
def database_restart(
    rate: float, seconds: float, senders: int, conversations: int, drain_timeout: float, as_json: bool, at: float | None
) -> None:
    """Kill PostgreSQL under load; clients get 503 + Retry-After meanwhile, nothing accepted is lost."""
    plan = _plan("database-restart", "postgres", rate, seconds, senders, conversations, drain_timeout, at)
    raise SystemExit(execute(Target.from_environment, plan, as_json=as_json))
