"""`chat4all dlq list` and `chat4all dlq replay`: the dead-letter topic as an operator sees it.

Channel workers publish a job that exhausted its attempts to ``chat.dlq`` as ``{"type": "delivery.dead", "topic":
<its outbound topic>, "job": <the job>, "error", "attempts", "at"}``, keyed by conversation id. ``list`` reads the
whole topic without a consumer group; ``replay`` publishes each job not replayed yet back to its outbound topic
with the same key, marked ``"replayed": true`` (its delivery FAILED when the job died; only a replayed job may
send it again), and remembers how far it got in the consumer group ``chat4all-dlq-replay`` (committing
offsets without joining it: two replays at once would both publish the same jobs). The channel workers' send
ledger keeps a replayed job whose delivery did reach its platform from reaching it twice.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import heapq
import json
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import click

from adapters.kafka.consumer import Received
from adapters.kafka.publisher import KafkaPublisher
from adapters.kafka.reader import TopicReader, read_to_end
from application import topics
from application.errors import Unavailable
from application.ports import Event
from entrypoints.settings import Settings
from entrypoints.stack.state import read_state, supervisor_alive

REPLAY_GROUP = "chat4all-dlq-replay"
"""The consumer group whose committed offsets say which dead letters were replayed."""

NO_BROKER = "no broker: set CHAT4ALL_KAFKA_BOOTSTRAP or run chat4all up"


class NoBroker(Exception):
    """Neither CHAT4ALL_KAFKA_BOOTSTRAP nor a running stack names a broker."""


def broker(settings: Settings) -> str:
    """CHAT4ALL_KAFKA_BOOTSTRAP, else the broker of the stack running on the data dir.

    Raises:
        NoBroker: neither is there.
    """
    if settings.kafka_bootstrap:
        return settings.kafka_bootstrap
    state = read_state(settings.data_dir.expanduser().resolve())
    kafka = state.get("kafka") if state and supervisor_alive(state) else None
    if isinstance(kafka, dict) and kafka.get("bootstrap"):
        return str(kafka["bootstrap"])
    raise NoBroker(NO_BROKER)


@attrs.frozen
class DeadLetter:
    """One record of the dead-letter topic."""

    record: Received

    @property
    def payload(self) -> dict[str, Any]:
        return self.record.payload

    @property
    def job(self) -> Mapping[str, Any]:
        job = self.payload.get("job")
        return job if isinstance(job, dict) else {}

    @property
    def topic(self) -> str | None:
        topic = self.payload.get("topic")
        return topic if isinstance(topic, str) else None

    def replayable(self) -> str | None:
        """Why this record cannot be replayed, or None when it can."""
        if self.payload.get("type") != "delivery.dead":
            return f"not a dead letter (type {self.payload.get('type')!r})"
        if self.topic is None or not self.topic.startswith(topics.OUTBOUND_PREFIX):
            return f"not from an outbound topic ({self.payload.get('topic')!r})"
        if not self.job:
            return "no job"
        return None

    def event(self) -> Event:
        """The job, back to the topic it came from, keyed as it was (by conversation id), marked as replayed.

        The mark lets the channel worker send it although its delivery FAILED when it died.
        """
        assert self.topic is not None
        key = self.record.key or str(self.job.get("conversation_id", ""))
        return Event(self.topic, key, {**self.job, "replayed": True})

    @property
    def died_at(self) -> dt.datetime:
        """When the job was given up: the dead letter's ``at``, else the time of its record."""
        try:
            at = dt.datetime.fromisoformat(str(self.payload["at"]))
        except (KeyError, ValueError):
            return self.record.timestamp
        return at if at.tzinfo is not None else at.replace(tzinfo=dt.UTC)

    def where(self) -> str:
        return f"{self.record.topic}[{self.record.partition}]@{self.record.offset}"

    def line(self) -> str:
        """time, channel, topic, message id, recipient, attempts, error."""
        p, job = self.payload, self.job
        at = p.get("at") or self.record.timestamp.isoformat()
        channel = job.get("channel") or (self.topic or "").removeprefix(topics.OUTBOUND_PREFIX) or "?"
        return "  ".join(
            [
                str(at),
                str(channel),
                str(self.topic or "?"),
                f"message {job.get('message_id', '?')}",
                f"to {job.get('recipient', '?')}",
                f"{p.get('attempts', '?')} attempts",
                str(p.get("error") or "-"),
            ]
        )

    def as_json(self) -> str:
        r = self.record
        return json.dumps({"partition": r.partition, "offset": r.offset, "key": r.key, **self.payload})


def oldest_first(records: Sequence[Received]) -> list[DeadLetter]:
    """Each partition in offset order, the partitions merged by the time the jobs died."""
    partitions: dict[int, list[DeadLetter]] = {}
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        partitions.setdefault(r.partition, []).append(DeadLetter(r))
    return list(heapq.merge(*partitions.values(), key=lambda dl: (dl.died_at, dl.record.partition)))


async def read_dead_letters(bootstrap: str) -> list[DeadLetter]:
    """Every dead letter up to the topic's end now, without a consumer group; oldest first."""
    return oldest_first(await read_to_end(bootstrap, topics.DEAD_LETTERS, client_id="chat4all-dlq-list"))


@attrs.frozen
class Replayed:
    replayed: list[DeadLetter]
    skipped: list[tuple[DeadLetter, str]]


async def replay_dead_letters(bootstrap: str, *, dry_run: bool = False) -> Replayed:
    """Publish every dead letter the replay group has not replayed yet back to its topic, then commit.

    Each batch is committed after it was published: a replay that dies in between publishes the batch again
    next time, and the channel workers' ledger absorbs the duplicates. A dry run publishes and commits nothing.
    """
    replayed: list[DeadLetter] = []
    skipped: list[tuple[DeadLetter, str]] = []
    publisher = KafkaPublisher(bootstrap, client_id="chat4all-dlq-replay")
    reader = TopicReader(bootstrap, topics.DEAD_LETTERS, group_id=REPLAY_GROUP, client_id="chat4all-dlq-replay")
    async with reader:
        try:
            async for batch in reader.batches():
                letters: list[DeadLetter] = []
                for r in sorted(batch, key=lambda r: (r.partition, r.offset)):
                    dl = DeadLetter(r)
                    reason = dl.replayable()
                    if reason is None:
                        letters.append(dl)
                    else:
                        skipped.append((dl, reason))
                if not dry_run:
                    await publisher.publish([dl.event() for dl in letters])
                    await reader.commit()
                replayed.extend(letters)
        finally:
            await publisher.stop()
    return Replayed(replayed, skipped)


def _count(letters: Sequence[object]) -> str:
    return f"{len(letters)} dead letter{'' if len(letters) == 1 else 's'}"


def _err(message: str) -> None:
    click.echo(message, err=True)


def _bootstrap(settings: Settings) -> str | None:
    try:
        return broker(settings)
    except NoBroker as exc:
        _err(str(exc))
        return None


def list_dead_letters(settings: Settings, *, as_json: bool = False, limit: int | None = None) -> int:
    """`chat4all dlq list`: print the dead letters (the ``limit`` most recent), oldest first; the exit code."""
    bootstrap = _bootstrap(settings)
    if bootstrap is None:
        return 1
    try:
        letters = asyncio.run(read_dead_letters(bootstrap))
    except Unavailable as exc:
        _err(str(exc))
        return 1
    if not letters:
        click.echo("no dead letters", err=as_json)
        return 0
    shown = letters if limit is None else letters[-limit:] if limit > 0 else []
    for dl in shown:
        click.echo(dl.as_json() if as_json else dl.line())
    if len(shown) < len(letters):
        _err(f"the {len(shown)} most recent of {_count(letters)}")
    return 0


def replay(settings: Settings, *, dry_run: bool = False) -> int:
    """`chat4all dlq replay`: publish each dead letter not replayed yet back to its topic; the exit code."""
    bootstrap = _bootstrap(settings)
    if bootstrap is None:
        return 1
    try:
        done = asyncio.run(replay_dead_letters(bootstrap, dry_run=dry_run))
    except Unavailable as exc:
        _err(f"{exc}; what was replayed before is committed, the rest is replayed next time")
        return 1
    for dl, reason in done.skipped:
        _err(f"skipped {dl.where()}: {reason}")
    if dry_run:
        for dl in oldest_first([dl.record for dl in done.replayed]):
            click.echo(dl.line())
        click.echo(f"would replay {_count(done.replayed)} (dry run: nothing published)")
    else:
        click.echo(f"replayed {_count(done.replayed)}")
    return 0
