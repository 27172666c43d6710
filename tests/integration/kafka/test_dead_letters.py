"""`chat4all dlq list|replay` against a real broker (Tansu, in memory)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from adapters.kafka import KafkaPublisher, Received, read_to_end
from application import topics
from application.pipeline import DeliveryJob
from application.ports import Event
from domain.channels import Channel, ChannelAddress
from domain.ids import ConversationId, MessageId
from entrypoints import cli
from entrypoints.settings import Settings
from entrypoints.stack import dlq
from entrypoints.stack.postgres import free_port
from entrypoints.stack.state import create_time, write_state

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

ADDRESSES = {
    Channel.TELEGRAM: ChannelAddress.of(Channel.TELEGRAM, "123456789"),
    Channel.WHATSAPP: ChannelAddress.of(Channel.WHATSAPP, "+5511912345678"),
}


def dead_letter(channel: Channel, conversation: ConversationId, seq: int) -> Event:
    """What a channel worker publishes for a job that exhausted its attempts (``application.pipeline``)."""
    job = DeliveryJob(
        message_id=MessageId(uuid.uuid4()),
        conversation_id=conversation,
        seq=seq,
        recipient=f"user:{uuid.uuid4()}",
        channel=channel,
        to=ADDRESSES[channel],
        sender=f"user:{uuid.uuid4()}",
        payload={"type": "text", "text": f"m{seq}"},
        created_at=dt.datetime(2026, 5, 1, 12, 0, seq, tzinfo=dt.UTC),
    ).to_event()
    return Event(
        topics.DEAD_LETTERS,
        job.key,
        {
            "type": "delivery.dead",
            "topic": job.topic,
            "job": dict(job.payload),
            "error": f"{channel.value} is down",
            "attempts": 5,
            "at": dt.datetime(2026, 5, 1, 12, 1, seq, tzinfo=dt.UTC).isoformat(),
        },
    )


def publish(bootstrap: str, events: list[Event]) -> None:
    async def go() -> None:
        async with KafkaPublisher(bootstrap) as publisher:
            await publisher.publish(events)

    asyncio.run(go())


def outbound(bootstrap: str) -> list[Received]:
    """Every record of the platforms' outbound topics."""

    async def go() -> list[Received]:
        found: list[Received] = []
        for channel in ADDRESSES:
            found += await read_to_end(bootstrap, topics.outbound(channel))
        return found

    return asyncio.run(go())


def some_dead_letters(count: int = 5) -> list[Event]:
    conversations = [ConversationId(uuid.uuid4()) for _ in range(3)]
    channels = list(ADDRESSES)
    return [dead_letter(channels[i % 2], conversations[i % 3], i + 1) for i in range(count)]


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name in list(os.environ):
        if name.startswith("CHAT4ALL_"):
            monkeypatch.delenv(name)
    return {"CHAT4ALL_DATA_DIR": str(tmp_path / "data")}


def run(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(cli.main, ["dlq", *args], env=env, catch_exceptions=False)


def test_list_shows_every_dead_letter_every_time(kafka_bootstrap: str, env: dict[str, str]) -> None:
    letters = some_dead_letters()
    publish(kafka_bootstrap, letters)
    env = {**env, "CHAT4ALL_KAFKA_BOOTSTRAP": kafka_bootstrap}

    first = run(env, "list")
    assert first.exit_code == 0, first.output
    lines = first.stdout.splitlines()
    assert len(lines) == len(letters)
    assert [line.split()[0] for line in lines] == [e.payload["at"] for e in letters]  # oldest first
    for event in letters:
        p, job = event.payload, event.payload["job"]
        [line] = [line for line in lines if job["message_id"] in line]
        for part in (p["at"], job["channel"], p["topic"], job["recipient"], "5 attempts", p["error"]):
            assert part in line
    assert run(env, "list").stdout == first.stdout  # listing consumes nothing

    as_json = [json.loads(line) for line in run(env, "list", "--json").stdout.splitlines()]
    assert sorted(d["job"]["message_id"] for d in as_json) == sorted(e.payload["job"]["message_id"] for e in letters)
    for d in as_json:
        event = next(e for e in letters if e.payload["job"] == d["job"])
        assert d["key"] == event.key
        assert {k: d[k] for k in event.payload} == event.payload
        assert isinstance(d["partition"], int)
        assert isinstance(d["offset"], int)

    limited = run(env, "list", "--limit", "2")
    assert limited.exit_code == 0
    assert limited.stdout.splitlines() == lines[-2:]
    assert "the 2 most recent of 5 dead letters" in limited.stderr


def test_replay_republishes_each_job_once_to_its_topic(kafka_bootstrap: str, env: dict[str, str]) -> None:
    letters = some_dead_letters()
    not_a_dead_letter = Event(topics.DEAD_LETTERS, "k", {"type": "delivery.dead", "topic": topics.MESSAGES, "job": {}})
    publish(kafka_bootstrap, [*letters, not_a_dead_letter])
    env = {**env, "CHAT4ALL_KAFKA_BOOTSTRAP": kafka_bootstrap}

    dry = run(env, "replay", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "would replay 5 dead letters" in dry.stdout
    assert dry.stdout.splitlines()[:-1] == run(env, "list").stdout.splitlines()[:-1]  # the same lines, but the bad one
    assert outbound(kafka_bootstrap) == []  # a dry run publishes nothing ...
    assert "would replay 5 dead letters" in run(env, "replay", "--dry-run").stdout  # ... and remembers nothing

    replayed = run(env, "replay")
    assert replayed.exit_code == 0, replayed.output
    assert "replayed 5 dead letters" in replayed.stdout
    assert "not from an outbound topic" in replayed.stderr
    jobs = outbound(kafka_bootstrap)
    assert sorted((r.topic, r.key, json.dumps(r.payload, sort_keys=True)) for r in jobs) == sorted(
        (e.payload["topic"], e.key, json.dumps({**e.payload["job"], "replayed": True}, sort_keys=True)) for e in letters
    )
    for job in jobs:  # the channel workers can parse them again
        assert DeliveryJob.from_event(job.payload).to_event().payload == job.payload

    again = run(env, "replay")
    assert again.exit_code == 0
    assert "replayed 0 dead letters" in again.stdout
    assert len(outbound(kafka_bootstrap)) == len(letters)

    later = dead_letter(Channel.TELEGRAM, ConversationId(uuid.uuid4()), 9)
    publish(kafka_bootstrap, [later])
    assert "replayed 1 dead letter\n" in run(env, "replay").stdout
    assert len(outbound(kafka_bootstrap)) == len(letters) + 1
    assert len(run(env, "list").stdout.splitlines()) == len(letters) + 2  # replaying removes nothing from the list


def test_an_empty_dead_letter_topic(kafka_bootstrap: str, env: dict[str, str]) -> None:
    env = {**env, "CHAT4ALL_KAFKA_BOOTSTRAP": kafka_bootstrap}
    listed = run(env, "list")
    assert listed.exit_code == 0
    assert listed.stdout.strip() == "no dead letters"
    assert run(env, "list", "--json").stdout == ""
    replayed = run(env, "replay")
    assert replayed.exit_code == 0
    assert "replayed 0 dead letters" in replayed.stdout


def test_the_running_stacks_broker_is_found_in_stack_json(kafka_bootstrap: str, tmp_path: Path) -> None:
    publish(kafka_bootstrap, some_dead_letters(2))
    settings = Settings(data_dir=tmp_path)
    state: dict[str, Any] = {
        "supervisor_pid": os.getpid(),
        "supervisor_create_time": create_time(os.getpid()),
        "kafka": {"pid": os.getpid(), "bootstrap": kafka_bootstrap},
    }
    write_state(tmp_path, state)
    assert dlq.broker(settings) == kafka_bootstrap
    assert dlq.list_dead_letters(settings) == 0
    assert dlq.broker(Settings(data_dir=tmp_path, kafka_bootstrap="elsewhere:9092")) == "elsewhere:9092"


def test_without_a_broker_it_says_how_to_get_one(env: dict[str, str], tmp_path: Path) -> None:
    for command in (["list"], ["replay"], ["replay", "--dry-run"]):
        result = run(env, *command)
        assert result.exit_code == 1
        assert "no broker: set CHAT4ALL_KAFKA_BOOTSTRAP or run chat4all up" in result.stderr
    # a stack.json whose supervisor is gone names no broker
    data_dir = Path(env["CHAT4ALL_DATA_DIR"])
    data_dir.mkdir(parents=True)
    write_state(data_dir, {"supervisor_pid": 2**22 + 1, "kafka": {"bootstrap": "127.0.0.1:1"}})
    assert run(env, "list").exit_code == 1
    # a broker that does not answer is an error too, not "no dead letters"
    unreachable = dlq.list_dead_letters(Settings(data_dir=data_dir, kafka_bootstrap=f"127.0.0.1:{free_port()}"))
    assert unreachable == 1
