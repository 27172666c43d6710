"""`chat4all drill failover`: kill -9 a router, a channel worker, the relay and an API process under load.

Each process is killed the hard way (SIGKILL: no shutdown, no commit, no goodbye to the broker) while
messages flow at a steady rate. The supervisor of `chat4all up` restarts it; Kafka gives a dead
consumer's partitions to the group's survivors or to its replacement; clients of the killed API
process see their connections drop and retry with the same ``message_id``. The drill reports what was
accepted and delivered, what was lost (must be 0), what reached the platform twice (must be 0), and for
each kill how long until the replacement ran and until everything accepted before the kill was
DELIVERED.
"""

from __future__ import annotations

import asyncio
from typing import Any

import click

from entrypoints.drill.runner import Action, Plan, execute, load_options
from entrypoints.drill.target import Target

RESTART_TIMEOUT_S = 60.0


def kill(name: str) -> Action:
    """SIGKILL runtime ``name`` (or, for ``http``, the last API process) and wait for its replacement."""

    async def action(target: Target) -> dict[str, Any]:
        runtime = api_process(target) if name == "http" else name
        pid = target.kill_runtime(runtime)
        took = await asyncio.to_thread(target.wait_replaced, runtime, pid, RESTART_TIMEOUT_S)
        return {"runtime": runtime, "pid": pid, "restarted_s": round(took, 2)}

    return action


def api_process(target: Target) -> str:
    """The API process to kill: the last of several (the others keep serving), or the only one."""
    return [n for n in target.runtime_names() if n == "http" or n.startswith("http-")][-1]


VICTIMS = ("router", "channels", "relay", "http")


@click.command("failover")
@load_options(rate=50, seconds=60)
@click.option(
    "--every",
    type=click.FloatRange(min=1),
    default=10.0,
    show_default=True,
    help="seconds between kills (the first comes after one interval)",
)
def command(
    rate: float, seconds: float, senders: int, conversations: int, drain_timeout: float, as_json: bool, every: float
) -> None:
    """Kill -9 a router, a channel worker, the relay and an API process in turn under steady load."""
    plan = Plan(
        name="failover",
        rate=rate,
        seconds=seconds,
        senders=senders,
        conversations=conversations,
        drain_timeout=drain_timeout,
        disruptions=[(every * (i + 1), f"kill -9 {victim}", kill(victim)) for i, victim in enumerate(VICTIMS)],
    )
    raise SystemExit(execute(Target.from_environment, plan, as_json=as_json))
