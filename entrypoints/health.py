"""Readiness: whether every backing service an API process needs to serve answers.

The HTTP API answers it on ``GET /health/ready``, the gRPC API through the standard health service. A replica
that cannot reach PostgreSQL, its Redis (with ``CHAT4ALL_REDIS_URL``) or the file store fails most
requests, so the load balancer should stop sending it any. The checks run at once, each bounded (a service
that hangs is a failed check, not a probe that times out), so the answer comes within ``DATABASE_TIMEOUT_S``.
Kafka is not checked: the API reaches it only through the outbox in PostgreSQL, so a broker away delays
events without failing a request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Final

import attrs
from redis.asyncio import Redis

from application.ports import ObjectStore
from entrypoints.container import Readiness
from entrypoints.storage import store_ready

log = logging.getLogger("chat4all.health")

Check = Callable[[], Awaitable[bool]]
"""One backing service's check: True when it answers as it should; False or raising when not."""

CHECK_TIMEOUT_S: Final = 1.0
DATABASE_TIMEOUT_S: Final = 2.0
"""The database's check waits up to 2 s for a pooled connection (``entrypoints/container.py``): a pool that is
busy for a moment under load is not a reason to take the replica out."""


@attrs.frozen
class Probe:
    check: Check
    timeout_s: float = CHECK_TIMEOUT_S


def readiness_of(probes: Mapping[str, Probe]) -> Readiness:
    """Every probe at once, each within its time: ``{name: passed}``.

    A probe that starts failing is logged once with its reason (a probe runs every few seconds per replica),
    and once more when it passes again.
    """
    failing: set[str] = set()

    async def ready() -> dict[str, bool]:
        passed = await asyncio.gather(*(_passes(name, probe, failing) for name, probe in probes.items()))
        return dict(zip(probes, passed, strict=True))

    return ready


async def _passes(name: str, probe: Probe, failing: set[str]) -> bool:
    try:
        async with asyncio.timeout(probe.timeout_s):
            reason = None if await probe.check() else "it answered no"
    except TimeoutError:
        reason = f"no answer within {probe.timeout_s:g} s"
    except Exception as exc:  # whatever the service raised, it is not ready
        reason = repr(exc)
    if reason is not None and name not in failing:
        failing.add(name)
        log.warning("readiness: %s fails: %s", name, reason)
    elif reason is None and name in failing:
        failing.discard(name)
        log.info("readiness: %s passes again", name)
    return reason is None


def api_readiness(database: Readiness, redis: Redis | None, store: ObjectStore) -> Readiness:
    """An API process's checks (HTTP and gRPC): ``database`` (the container's PostgreSQL check), ``redis`` when
    the process has one (PING), and ``storage`` (the S3 bucket answers, or the files directory takes a write)."""
    probes = {"database": Probe(partial(all_pass, database), DATABASE_TIMEOUT_S)}
    if redis is not None:
        probes["redis"] = Probe(redis.ping)
    probes["storage"] = Probe(partial(store_ready, store))
    return readiness_of(probes)


async def all_pass(readiness: Readiness) -> bool:
    """Whether every check of ``readiness`` passed."""
    return all((await readiness()).values())
