"""Steady, open-model message load for the drills, and the checks of what became of it.

The load is what a fleet of applications would send: ``senders`` users, each with conversations to
Messenger contacts played by the channel sandbox, post text messages through ``POST /v1/messages``
at a fixed arrival rate (message *i* is due at start + i/rate, whether or not earlier ones were
answered, so a slow stack shows as latency, not as a lighter load). Each message carries its own
``message_id``: a send answered by a network error, a 429 or a 503 is retried with the same id, as
the API asks clients to, so a retry can never store a message twice.

What became of it is read from three places: the 202s (acknowledgement latency), the senders'
WebSockets (``message.status`` DELIVERED: accepted -> DELIVERED latency as the sender sees it), and,
to be sure, PostgreSQL's deliveries (lost = acknowledged, yet not DELIVERED after the drain) and the
sandbox's record of what the platform received (duplicated platform sends, per-conversation order).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import math
import random
import secrets
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiohttp
import attrs
import psycopg

from entrypoints.drill.target import DrillError, Target

log = logging.getLogger("chat4all.drill")

CHANNEL = "messenger"
"""Messenger: the sandbox answers each send with a delivery webhook, and its pace (250/s) is above the drills' rates."""

DELIVERED = ("DELIVERED", "READ")
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
SEND_DEADLINE_S = 120.0
"""How long a message keeps being retried before the drill counts it as refused."""


@attrs.define
class Sender:
    username: str
    headers: dict[str, str]
    token: str
    conversations: list[str] = attrs.field(factory=list)


@attrs.define
class Sent:
    """One message of the load and what happened to it (times are ``time.monotonic()``)."""

    index: int
    message_id: str
    sender: Sender
    conversation_id: str
    due: float
    acked: float | None = None
    seq: int | None = None
    attempts: int = 0
    answers: Counter[str] = attrs.field(factory=Counter)
    """Every answer other than 202, by status (or ``network`` for a connection error)."""
    refused: str | None = None
    delivered: float | None = None

    @property
    def text(self) -> str:
        return f"drill {self.message_id} #{self.index}"


@attrs.define
class Problem:
    """A 4xx/5xx answer a client saw, kept to show that it was a clear problem+json with Retry-After."""

    status: int
    content_type: str
    retry_after: str | None
    body: str


@attrs.define
class Load:
    """A population of senders and everything sent on its behalf."""

    target: Target
    run_id: str
    senders: list[Sender]
    contacts: dict[str, str]
    """conversation id -> the Messenger contact's PSID."""
    sent: list[Sent] = attrs.field(factory=list)
    problems: list[Problem] = attrs.field(factory=list)
    reconnects: int = 0
    started: float = 0.0

    @property
    def conversations(self) -> list[str]:
        return list(self.contacts)

    def acked(self) -> list[Sent]:
        return [s for s in self.sent if s.acked is not None]


# -- setup -------------------------------------------------------------------------------------------------------------


async def _call(
    session: aiohttp.ClientSession, method: str, url: str, *, expect: int, deadline_s: float = 120.0, **kwargs: Any
) -> dict[str, Any]:
    """One setup call, waiting out 429s (the stack's sign-up and log-in limits) and brief 503s."""
    give_up = time.monotonic() + deadline_s
    while True:
        async with session.request(method, url, **kwargs) as response:
            if response.status == expect:
                return dict(await response.json())
            text = await response.text()
            if response.status not in RETRY_STATUSES or time.monotonic() > give_up:
                raise DrillError(f"{method} {url} answered {response.status}: {text[:300]}")
            await asyncio.sleep(_retry_after(response.headers.get("Retry-After"), 1.0))


def _retry_after(header: str | None, default: float) -> float:
    try:
        return min(max(float(header), 0.05), 10.0) if header else default
    except ValueError:
        return default


async def create_load(target: Target, session: aiohttp.ClientSession, *, senders: int, conversations: int) -> Load:
    """Register ``senders`` users and open ``conversations`` private conversations with fresh Messenger contacts.

    Sign-up and log-in count against the per-address limit of anonymous calls: with many senders this waits
    for the limit (``Retry-After``) and says so.
    """
    run_id = secrets.token_hex(4)
    base = target.http_url
    password = secrets.token_urlsafe(12)
    people: list[Sender] = []
    for i in range(senders):
        name = f"drill{run_id}s{i}"
        await _call(session, "POST", f"{base}/v1/users", expect=201, json={"username": name, "password": password})
        token = await _call(
            session, "POST", f"{base}/auth/token", expect=200, json={"username": name, "password": password}
        )
        access = str(token["access_token"])
        people.append(Sender(name, {"Authorization": f"Bearer {access}"}, access))
    contacts: dict[str, str] = {}
    for i in range(conversations):
        sender = people[i % senders]
        psid = str(10**15 + random.randrange(10**15))  # noqa: S311 - a made-up person, not a secret
        body = {"type": "private", "members": [f"{CHANNEL}:{psid}"]}
        made = await _call(session, "POST", f"{base}/v1/conversations", expect=201, json=body, headers=sender.headers)
        conversation = str(made["conversation_id"])
        sender.conversations.append(conversation)
        contacts[conversation] = psid
    return Load(target, run_id, people, contacts)


# -- sending -----------------------------------------------------------------------------------------------------------


Event = tuple[float, Callable[[], Awaitable[None]]]
"""Something to do ``at`` seconds into the load (kill a process, restart a service, add workers)."""


async def drive(
    load: Load,
    session: aiohttp.ClientSession,
    *,
    rate: float,
    seconds: float,
    events: Sequence[Event] = (),
    rate_at: Callable[[float], float] | None = None,
) -> None:
    """Send for ``seconds`` at ``rate`` messages a second (or ``rate_at(elapsed)``), running ``events`` on time.

    Returns once every message was answered (202, or given up on after ``SEND_DEADLINE_S``).
    """
    pairs = [(sender, conversation) for sender in load.senders for conversation in sender.conversations]
    random.shuffle(pairs)
    tasks: set[asyncio.Task[None]] = set()
    load.started = start = time.monotonic()
    pending_events = sorted(events, key=lambda e: e[0])
    event_tasks = [asyncio.create_task(_at(start + at, action)) for at, action in pending_events]
    due = start
    index = 0
    while due < start + seconds:
        now = time.monotonic()
        if due > now:
            await asyncio.sleep(due - now)
        sender, conversation = pairs[index % len(pairs)]
        sent = Sent(index, str(uuid.uuid4()), sender, conversation, due)
        load.sent.append(sent)
        task = asyncio.create_task(_send(load, session, sent))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        index += 1
        current = rate_at(due - start) if rate_at is not None else rate
        due += 1.0 / current
    await asyncio.gather(*event_tasks)
    if tasks:
        await asyncio.gather(*tasks)


async def _at(when: float, action: Callable[[], Awaitable[None]]) -> None:
    await asyncio.sleep(max(0.0, when - time.monotonic()))
    await action()


async def _send(load: Load, session: aiohttp.ClientSession, sent: Sent) -> None:
    body = {
        "message_id": sent.message_id,
        "conversation_id": sent.conversation_id,
        "channels": [CHANNEL],
        "payload": {"type": "text", "text": sent.text},
    }
    url = f"{load.target.http_url}/v1/messages"
    give_up = sent.due + SEND_DEADLINE_S
    backoff = 0.1
    while True:
        sent.attempts += 1
        try:
            async with session.post(url, json=body, headers=sent.sender.headers) as response:
                if response.status in (200, 202):
                    answer = await response.json()
                    sent.acked = time.monotonic()
                    sent.seq = int(answer["seq"])
                    return
                text = await response.text()
                sent.answers[str(response.status)] += 1
                if len(load.problems) < 1000:
                    load.problems.append(
                        Problem(
                            response.status,
                            response.headers.get("Content-Type", ""),
                            response.headers.get("Retry-After"),
                            text[:500],
                        )
                    )
                if response.status not in RETRY_STATUSES:
                    sent.refused = f"{response.status}: {text[:200]}"
                    return
                wait = _retry_after(response.headers.get("Retry-After"), backoff)
        except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
            sent.answers["network"] += 1
            log.debug("send %s: %s", sent.message_id, exc)
            wait = backoff
        if time.monotonic() + wait > give_up:
            sent.refused = f"gave up after {sent.attempts} attempts: {dict(sent.answers)}"
            return
        await asyncio.sleep(wait * (0.5 + random.random()))  # noqa: S311 - jitter
        backoff = min(backoff * 2, 2.0)


# -- watching ----------------------------------------------------------------------------------------------------------


class Watch:
    """The senders' WebSockets and a PostgreSQL poll, noting when each message was first seen DELIVERED."""

    def __init__(self, load: Load, session: aiohttp.ClientSession, poll_interval: float = 0.25) -> None:
        self.load = load
        self.session = session
        self.poll_interval = poll_interval
        self.by_id: dict[str, Sent] = {}
        self._indexed = 0
        self.db_errors = 0
        self._tasks: list[asyncio.Task[None]] = []
        self.connected = asyncio.Event()
        self._open = 0

    def seen(self, message_id: str, at: float) -> None:
        sent = self.by_id.get(message_id)
        if sent is None:
            return  # another client's message in the same conversations (there is none in a drill)
        if sent.delivered is None or at < sent.delivered:
            sent.delivered = at

    async def __aenter__(self) -> Watch:
        self._tasks = [asyncio.create_task(self._socket(sender)) for sender in self.load.senders]
        self._tasks.append(asyncio.create_task(self._poll()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.connected.wait(), 15)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def index(self) -> None:
        """Index the messages sent so far (a socket may report one before its 202 arrives)."""
        for sent in self.load.sent[self._indexed :]:
            self.by_id[sent.message_id] = sent
        self._indexed = len(self.load.sent)

    async def _socket(self, sender: Sender) -> None:
        url = f"{self.load.target.http_url.replace('http', 'ws', 1)}/v1/ws?token={sender.token}"
        first = True
        while True:
            try:
                async with self.session.ws_connect(url, heartbeat=20) as ws:
                    self._open += 1
                    if self._open == len(self.load.senders):
                        self.connected.set()
                    try:
                        async for frame in ws:
                            if frame.type is not aiohttp.WSMsgType.TEXT:
                                continue
                            self._frame(json.loads(frame.data))
                    finally:
                        self._open -= 1
            except (aiohttp.ClientError, TimeoutError, ConnectionError):
                pass
            if not first:
                self.load.reconnects += 1
            first = False
            await asyncio.sleep(0.5)

    def _frame(self, frame: dict[str, Any]) -> None:
        if frame.get("type") == "message.status" and frame.get("status") in DELIVERED:
            now = time.monotonic()
            self.index()
            self.seen(str(frame["message_id"]), now)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                ids = await asyncio.to_thread(delivered_ids, self.load.target.database_url, self.load.conversations)
            except psycopg.Error:
                self.db_errors += 1
                continue
            now = time.monotonic()
            self.index()
            for message_id in ids:
                self.seen(message_id, now)

    def outstanding(self) -> list[Sent]:
        self.index()
        return [s for s in self.load.sent if s.acked is not None and s.delivered is None]


def delivered_ids(database_url: str, conversations: Sequence[str]) -> list[str]:
    with psycopg.connect(database_url, connect_timeout=2, autocommit=True) as db:
        rows = db.execute(
            "select message_id::text from deliveries where conversation_id = any(%s::uuid[])"
            " and channel = %s and status = any(%s)",
            (list(conversations), CHANNEL, list(DELIVERED)),
        ).fetchall()
    return [str(r[0]) for r in rows]


async def drain(watch: Watch, most_s: float) -> float:
    """Wait until every acknowledged message is DELIVERED (or ``most_s`` passed); the seconds waited."""
    start = time.monotonic()
    while watch.outstanding() and time.monotonic() - start < most_s:  # noqa: ASYNC110 - polls what two feeds fill
        await asyncio.sleep(0.25)
    return time.monotonic() - start


# -- verdict -----------------------------------------------------------------------------------------------------------


@attrs.frozen
class PlatformCheck:
    received: int
    duplicated: int
    out_of_order: int
    unexpected: int


async def platform_check(load: Load, session: aiohttp.ClientSession) -> PlatformCheck:
    """What the sandbox received: each acknowledged message once, in ``seq`` order per conversation."""
    if load.target.sandbox_url is None:
        raise DrillError("the stack runs no channel sandbox: the drills count platform sends there (CHAT4ALL_SANDBOX)")
    async with session.get(f"{load.target.sandbox_url}/sandbox/messages", params={"channel": CHANNEL}) as response:
        items = (await response.json())["items"]
    by_text = {s.text: s for s in load.sent}
    counts: Counter[str] = Counter()
    order: dict[str, list[int]] = defaultdict(list)
    unexpected = 0
    for item in items:
        text = item.get("text") or ""
        if not text.startswith("drill ") or text not in by_text:
            continue
        sent = by_text[text]
        counts[text] += 1
        if sent.acked is None:
            unexpected += 1  # reached the platform, yet the client never got its 202 (it gave up)
        elif counts[text] == 1 and sent.seq is not None:
            order[sent.conversation_id].append(sent.seq)
    out_of_order = sum(sum(1 for a, b in itertools.pairwise(seqs) if b < a) for seqs in order.values())
    return PlatformCheck(
        received=len(counts),
        duplicated=sum(n - 1 for n in counts.values()),
        out_of_order=out_of_order,
        unexpected=unexpected,
    )


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def latency_summary(values_s: Sequence[float]) -> dict[str, float | int | None]:
    """p50/p95/p99/max in milliseconds, and how many."""
    ms = [v * 1000 for v in values_s]
    return {
        "count": len(ms),
        "p50_ms": _round(percentile(ms, 50)),
        "p95_ms": _round(percentile(ms, 95)),
        "p99_ms": _round(percentile(ms, 99)),
        "max_ms": _round(max(ms) if ms else None),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
