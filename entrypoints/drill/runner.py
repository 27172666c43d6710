"""Running a load drill: set up, send with disruptions on a schedule, drain, check, report.

Every load drill answers the same questions, so they share this: how much was accepted and
delivered, whether anything acknowledged was lost or reached the platform twice or out of order,
the acknowledgement and accepted -> DELIVERED latencies, and for each disruption how long the stack
took to recover (until everything acknowledged before it was DELIVERED).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiohttp
import attrs
import click

from entrypoints.drill.load import (
    Event,
    Load,
    Sent,
    Watch,
    create_load,
    drain,
    drive,
    latency_summary,
    platform_check,
)
from entrypoints.drill.target import DrillError, Target


@attrs.define
class Disruption:
    """What a drill did to the stack, when, and what it saw of the restart."""

    what: str
    at: float = 0.0
    details: dict[str, Any] = attrs.field(factory=dict)


Action = Callable[[Target], Awaitable[dict[str, Any]]]
"""A disruption: does it, waits for the stack to take it (a restart), returns details to report."""


@attrs.frozen
class Plan:
    name: str
    rate: float
    seconds: float
    senders: int
    conversations: int
    drain_timeout: float
    disruptions: Sequence[tuple[float, str, Action]] = ()
    rate_at: Callable[[float], float] | None = None
    prepare: Callable[[Target, aiohttp.ClientSession], Awaitable[Callable[[], Awaitable[None]]]] | None = None
    """Set the stack up for the drill (before the load); returns what puts it back (always run)."""
    figures: Callable[[Load, Sequence[Disruption]], dict[str, Any]] | None = None
    """The drill's own figures, added to the report."""


def load_options(rate: float, seconds: float, senders: int = 8) -> Callable[[Callable[..., Any]], Any]:
    """The options every load drill takes, with that drill's defaults."""

    def decorate(f: Callable[..., Any]) -> Any:
        for option in reversed(
            [
                click.option(
                    "--rate",
                    type=click.FloatRange(min=1),
                    default=rate,
                    show_default=True,
                    help="messages a second (open model: arrivals do not wait for answers)",
                ),
                click.option(
                    "--seconds",
                    type=click.FloatRange(min=5),
                    default=seconds,
                    show_default=True,
                    help="how long to send",
                ),
                click.option(
                    "--senders",
                    type=click.IntRange(min=1, max=200),
                    default=senders,
                    show_default=True,
                    help="sending users (each may send 50 msgs/s under the default rate limits)",
                ),
                click.option(
                    "--conversations",
                    type=click.IntRange(min=1, max=2000),
                    default=32,
                    show_default=True,
                    help="private conversations with Messenger contacts (the sandbox)",
                ),
                click.option(
                    "--drain-timeout",
                    type=click.FloatRange(min=1),
                    default=120.0,
                    show_default=True,
                    help="how long to wait for every accepted message to be DELIVERED",
                ),
                click.option("--json", "as_json", is_flag=True, help="print the report as JSON"),
            ]
        ):
            f = option(f)
        return f

    return decorate


async def run_plan(target: Target, plan: Plan, echo: Callable[[str], None]) -> dict[str, Any]:
    timeout = aiohttp.ClientTimeout(total=30, connect=5)
    connector = aiohttp.TCPConnector(limit=256, force_close=False)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        echo(f"setting up {plan.senders} senders and {plan.conversations} conversations on {target.http_url}")
        began = time.monotonic()
        load = await create_load(target, session, senders=plan.senders, conversations=plan.conversations)
        echo(f"  ready in {time.monotonic() - began:.1f}s (run {load.run_id})")
        disruptions: list[Disruption] = []

        def scheduled(what: str, action: Action) -> Callable[[], Awaitable[None]]:
            async def run() -> None:
                d = Disruption(what, time.monotonic())
                disruptions.append(d)
                echo(f"  t+{d.at - load.started:5.1f}s  {what}")
                try:
                    d.details = await action(target)
                except DrillError as exc:
                    d.details = {"error": str(exc)}
                echo(f"           {_details(d.details)}")

            return run

        events: list[Event] = [(at, scheduled(what, action)) for at, what, action in plan.disruptions]
        restore = await plan.prepare(target, session) if plan.prepare is not None else None
        try:
            async with Watch(load, session) as watch:
                echo(f"sending {plan.rate:g} msgs/s for {plan.seconds:g}s")
                await drive(load, session, rate=plan.rate, seconds=plan.seconds, events=events, rate_at=plan.rate_at)
                sent_for = time.monotonic() - load.started
                echo(f"  every send answered after {sent_for:.1f}s; waiting for deliveries")
                drained = await drain(watch, plan.drain_timeout)
                await asyncio.sleep(1.0)  # let a late duplicate, if any, reach the sandbox before it is counted
                check = await platform_check(load, session)
        finally:
            if restore is not None:
                await restore()
        result = report(plan, load, disruptions, check, sent_for=sent_for, drained=drained, db_errors=watch.db_errors)
        if plan.figures is not None:
            result.update(plan.figures(load, disruptions))
        return result


def _details(details: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in details.items())


def report(
    plan: Plan,
    load: Load,
    disruptions: Sequence[Disruption],
    check: Any,
    *,
    sent_for: float,
    drained: float,
    db_errors: int,
) -> dict[str, Any]:
    acked = load.acked()
    delivered = [s for s in acked if s.delivered is not None]
    answers: Counter[str] = Counter()
    for s in load.sent:
        answers.update(s.answers)
    window = [s for s in acked if s.due - load.started <= plan.seconds]
    last_delivery = max((s.delivered for s in delivered if s.delivered is not None), default=load.started)
    return {
        "drill": plan.name,
        "rate": plan.rate,
        "seconds": plan.seconds,
        "senders": plan.senders,
        "conversations": plan.conversations,
        "sent": len(load.sent),
        "accepted": len(acked),
        "refused": sum(1 for s in load.sent if s.refused is not None),
        "refusals": sorted({s.refused for s in load.sent if s.refused is not None})[:5],
        "retried": sum(1 for s in load.sent if s.attempts > 1),
        "answers": dict(sorted(answers.items())),
        "problems": _problem_summary(load),
        "delivered": len(delivered),
        "lost": len(acked) - len(delivered),
        "platform_received": check.received,
        "duplicated": check.duplicated,
        "out_of_order": check.out_of_order,
        "accepted_per_s": round(len(window) / plan.seconds, 1),
        "delivered_per_s": round(len(delivered) / max(last_delivery - load.started, 1e-9), 1),
        "ack_latency": latency_summary([s.acked - s.due for s in acked if s.acked is not None]),
        "delivered_latency": latency_summary(
            [s.delivered - s.acked for s in delivered if s.delivered is not None and s.acked is not None]
        ),
        "sending_took_s": round(sent_for, 1),
        "drain_s": round(drained, 1),
        "socket_reconnects": load.reconnects,
        "database_poll_errors": db_errors,
        "disruptions": [
            {
                "what": d.what,
                "at_s": round(d.at - load.started, 1),
                **d.details,
                "recovered_s": recovery(load.sent, d.at),
            }
            for d in disruptions
        ],
    }


def _problem_summary(load: Load) -> list[dict[str, Any]]:
    """The distinct error answers clients saw: status, content type, whether Retry-After came, one body."""
    seen: dict[tuple[int, str, bool], dict[str, Any]] = {}
    for p in load.problems:
        key = (p.status, p.content_type, p.retry_after is not None)
        if key not in seen:
            seen[key] = {
                "status": p.status,
                "content_type": p.content_type,
                "retry_after": p.retry_after,
                "count": 0,
                "body": p.body[:200],
            }
        seen[key]["count"] += 1
    return list(seen.values())


def recovery(sent: Sequence[Sent], at: float) -> float | None:
    """Seconds from ``at`` until everything acknowledged before it was DELIVERED (None: some never was)."""
    before = [s for s in sent if s.acked is not None and s.acked <= at]
    if any(s.delivered is None for s in before):
        return None
    last = max((s.delivered for s in before if s.delivered is not None), default=at)
    return round(max(0.0, last - at), 2)


def verdict(result: dict[str, Any]) -> list[str]:
    """The guarantees that did not hold (empty: the drill passed)."""
    failures = []
    if result["lost"]:
        failures.append(f"{result['lost']} accepted messages were not DELIVERED")
    if result["duplicated"]:
        failures.append(f"{result['duplicated']} duplicated platform sends")
    if result["out_of_order"]:
        failures.append(f"{result['out_of_order']} platform sends out of per-conversation order")
    if result["refused"]:
        failures.append(f"{result['refused']} messages were never accepted: {result['refusals']}")
    if result["platform_received"] != result["delivered"]:
        failures.append(
            f"the platform received {result['platform_received']} messages, {result['delivered']} are DELIVERED"
        )
    for d in result["disruptions"]:
        if "error" in d:
            failures.append(f"{d['what']}: {d['error']}")
    return failures


def print_report(result: dict[str, Any], echo: Callable[[str], None]) -> None:
    def lat(summary: dict[str, Any]) -> str:
        return (
            f"p50 {summary['p50_ms']} ms, p95 {summary['p95_ms']} ms, p99 {summary['p99_ms']} ms, "
            f"max {summary['max_ms']} ms ({summary['count']} messages)"
        )

    echo("")
    echo(f"{result['drill']}: {result['rate']:g} msgs/s for {result['seconds']:g}s")
    echo(
        f"  sent {result['sent']}, accepted {result['accepted']} ({result['accepted_per_s']}/s), "
        f"retried {result['retried']}, never accepted {result['refused']}"
    )
    if result["answers"]:
        echo(f"  answers other than 202: {result['answers']}")
    for p in result["problems"]:
        echo(
            f"    {p['status']} {p['content_type'] or '(no content type)'} Retry-After: {p['retry_after']} "
            f"x{p['count']}: {p['body'][:120]}"
        )
    echo(
        f"  delivered {result['delivered']}, lost {result['lost']}, platform received {result['platform_received']}, "
        f"duplicated {result['duplicated']}, out of order {result['out_of_order']}"
    )
    echo(f"  acknowledgement latency: {lat(result['ack_latency'])}")
    echo(f"  accepted -> DELIVERED:   {lat(result['delivered_latency'])}")
    echo(
        f"  drained {result['drain_s']}s after the last answer; sockets reconnected {result['socket_reconnects']} times"
    )
    for line in result.get("notes", ()):
        echo(f"  {line}")
    for d in result["disruptions"]:
        rest = {k: v for k, v in d.items() if k not in ("what", "at_s", "recovered_s")}
        recovered = "never" if d["recovered_s"] is None else f"{d['recovered_s']}s"
        echo(
            f"  t+{d['at_s']}s {d['what']}: {_details(rest)}; everything accepted before it DELIVERED after {recovered}"
        )


def execute(target_of: Callable[[], Target], plan: Plan, *, as_json: bool) -> int:
    """Run ``plan``, print the report, exit 0 only when every guarantee held."""
    echo: Callable[[str], None] = (lambda _: None) if as_json else click.echo
    try:
        target = target_of()
        result = asyncio.run(run_plan(target, plan, echo))
    except DrillError as exc:
        click.echo(f"drill {plan.name}: {exc}", err=True)
        return 1
    failures = verdict(result)
    result["passed"] = not failures
    result["failures"] = failures
    if as_json:
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print_report(result, echo)
        echo("PASSED" if not failures else "FAILED: " + "; ".join(failures))
    return 0 if not failures else 1
