"""`chat4all drill scale-out`: workers added at run time take load the first ones could not keep up with.

The stack starts the drill with one relay, router, channel worker and status worker. The platform
answers each send after ``--platform-latency-ms`` (the sandbox's latency fault, put back afterwards),
as real platforms take tens to hundreds of milliseconds: one channel worker, which sends to
32 conversations at a time, then has a ceiling below the offered
rate and a backlog builds. After a phase the drill asks `chat4all up` for a second worker of each
kind (`chat4all scale`), after another for a third; Kafka's consumer groups hand them partitions
and the backlog drains. The report gives, for each phase, what was accepted and delivered per second
and the backlog at its end.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiohttp
import click

from entrypoints.drill.load import CHANNEL, Load
from entrypoints.drill.runner import Action, Disruption, Plan, execute, load_options
from entrypoints.drill.target import DrillError, Target
from entrypoints.stack.commands import ScaleError, request_scale

KINDS = ("relay", "router", "channels", "status")
WARM_UP_S = 25.0
"""The start of each phase (at most a third of it), left out of its rate: the new workers start (four Python
processes on a machine already busy take 20-25 s here), join their groups (a rebalance stops every member of a
group for a few seconds) and the rate settles."""


def scale_to(count: int) -> Action:
    async def action(target: Target) -> dict[str, Any]:
        started = asyncio.get_running_loop().time()
        try:
            await asyncio.to_thread(request_scale, target.data_dir, dict.fromkeys(KINDS, count), timeout=60.0)
        except ScaleError as exc:
            raise DrillError(str(exc)) from exc
        return {"workers": count, "scaled_s": round(asyncio.get_running_loop().time() - started, 2)}

    return action


def platform_latency(
    latency_ms: int,
) -> Callable[[Target, aiohttp.ClientSession], Awaitable[Callable[[], Awaitable[None]]]]:
    """Make the sandbox's Messenger answer after ``latency_ms``; what puts its previous latency back."""

    async def prepare(target: Target, session: aiohttp.ClientSession) -> Callable[[], Awaitable[None]]:
        if target.sandbox_url is None:
            raise DrillError("the stack runs no channel sandbox (CHAT4ALL_SANDBOX): the drill sets its latency")
        faults = f"{target.sandbox_url}/sandbox/faults"
        async with session.get(faults) as response:
            before = next(f for f in (await response.json())["items"] if f["channel"] == CHANNEL)
        async with session.post(faults, json={"channel": CHANNEL, "latency_ms": latency_ms}) as response:
            response.raise_for_status()
        names = target.runtime_names()
        counts = {kind: sum(1 for n in names if n == kind or n.startswith(f"{kind}-")) for kind in KINDS}
        await asyncio.to_thread(request_scale, target.data_dir, dict.fromkeys(KINDS, 1), timeout=60.0)

        async def restore() -> None:
            async with session.post(faults, json={"channel": CHANNEL, "latency_ms": before["latency_ms"]}) as done:
                done.raise_for_status()
            await asyncio.to_thread(request_scale, target.data_dir, counts, timeout=60.0)

        return restore

    return prepare


def phases(phase_s: float) -> Callable[[Load, Sequence[Disruption]], dict[str, Any]]:
    warm_up = min(WARM_UP_S, phase_s / 3)

    def figures(load: Load, disruptions: Sequence[Disruption]) -> dict[str, Any]:
        end_of_load = load.started + 3 * phase_s
        bounds = [load.started, *(d.at for d in disruptions), end_of_load]
        rows = []
        for workers, (start, end) in enumerate(itertools.pairwise(bounds), start=1):
            window = (start + warm_up, end)
            span = max(window[1] - window[0], 1e-9)
            accepted = sum(1 for s in load.sent if s.acked is not None and window[0] <= s.acked < window[1])
            delivered = sum(1 for s in load.sent if s.delivered is not None and window[0] <= s.delivered < window[1])
            backlog = sum(
                1
                for s in load.sent
                if s.acked is not None and s.acked < end and (s.delivered is None or s.delivered >= end)
            )
            rows.append(
                {
                    "workers": workers,
                    "accepted_per_s": round(accepted / span, 1),
                    "delivered_per_s": round(delivered / span, 1),
                    "backlog_at_end": backlog,
                }
            )
        # After the load stops, the last workers have only the backlog to deliver: their rate, with no warm-up, over
        # its first three quarters (the tail is the few conversations with the deepest backlogs, one send at a time).
        drained = sorted(s.delivered for s in load.sent if s.delivered is not None and s.delivered >= end_of_load)
        most = math.ceil(len(drained) * 0.75)
        drain = {
            "workers": len(rows),
            "delivered": len(drained),
            "seconds": round(drained[-1] - end_of_load, 1) if drained else 0.0,
            "delivered_per_s": round(most / max(drained[most - 1] - end_of_load, 1e-9), 1) if drained else 0.0,
        }
        notes = [
            f"{r['workers']} of each: accepted {r['accepted_per_s']}/s, delivered {r['delivered_per_s']}/s, "
            f"{r['backlog_at_end']} waiting at the end of the phase"
            for r in rows
        ]
        notes.append(
            f"after the load, {drain['workers']} of each delivered the {drain['delivered']} waiting in "
            f"{drain['seconds']}s, the first three quarters at {drain['delivered_per_s']}/s"
        )
        return {"phases": rows, "drain": drain, "notes": notes}

    return figures


@click.command("scale-out")
@load_options(rate=30, seconds=180)
@click.option(
    "--platform-latency-ms",
    type=click.IntRange(min=0, max=5000),
    default=2000,
    show_default=True,
    help="how long the sandbox's Messenger takes to answer a send during the drill",
)
def command(
    rate: float,
    seconds: float,
    senders: int,
    conversations: int,
    drain_timeout: float,
    as_json: bool,
    platform_latency_ms: int,
) -> None:
    """Start with one worker of each kind under more load than it can carry; add a second, then a third."""
    phase = seconds / 3
    plan = Plan(
        name="scale-out",
        rate=rate,
        seconds=seconds,
        senders=senders,
        conversations=max(conversations, 128),
        drain_timeout=drain_timeout,
        disruptions=[(phase, "scale to 2 of each", scale_to(2)), (2 * phase, "scale to 3 of each", scale_to(3))],
        prepare=platform_latency(platform_latency_ms),
        figures=phases(phase),
    )
    raise SystemExit(execute(Target.from_environment, plan, as_json=as_json))
