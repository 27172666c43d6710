"""`chat4all up` as an operator sees it: ps, restarts, one stack per data dir, clean stops, data kept."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import time
from typing import Any

import psutil
import psycopg
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from application.topics import all_topics

pytestmark = pytest.mark.e2e


def kafka_topics(bootstrap: str) -> set[str]:
    async def names() -> set[str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        await admin.start()
        try:
            return set(await admin.list_topics())
        finally:
            await admin.close()

    return asyncio.run(names())


def test_ps_lists_the_http_runtime_with_a_live_pid(stack: Any) -> None:
    pid = stack.runtime("http")["pid"]
    assert psutil.pid_exists(pid)

    table = stack.cli("ps")
    assert table.returncode == 0, table.stderr
    http = next(line for line in table.stdout.splitlines() if " http " in line)
    assert str(pid) in http
    assert "running" in http
    assert stack.base_url in http

    rows = {row["name"]: row for row in json.loads(stack.cli("ps", "--json").stdout)["processes"]}
    assert rows["http"]["pid"] == pid
    assert rows["http"]["state"] == "running"
    assert rows["postgres"]["state"] == "running"
    assert rows["postgres"]["url"] == stack.database_url
    kafka = stack.state()["kafka"]
    assert rows["kafka"] == {"name": "kafka", "pid": kafka["pid"], "state": "running", "url": kafka["bootstrap"]}
    assert kafka["bootstrap"] in table.stdout
    assert psutil.Process(pid).environ()["CHAT4ALL_KAFKA_BOOTSTRAP"] == kafka["bootstrap"]
    assert set(all_topics()) <= kafka_topics(kafka["bootstrap"])


def test_a_killed_broker_is_restarted_with_its_topics(stack: Any) -> None:
    before = stack.state()["kafka"]
    os.kill(before["pid"], signal.SIGKILL)
    stack.wait_until(
        lambda: stack.state()["kafka"]["pid"] != before["pid"], 15, "the kafka broker restarted under a new pid"
    )
    after = stack.state()["kafka"]
    assert after["bootstrap"] == before["bootstrap"]  # same port: the runtimes' setting stays true
    assert psutil.pid_exists(after["pid"])
    assert set(all_topics()) <= kafka_topics(after["bootstrap"])  # re-created on the empty broker
    assert "kafka restarted" in stack.log()


def test_a_killed_runtime_is_restarted(stack: Any) -> None:
    before = stack.runtime("http")
    os.kill(before["pid"], signal.SIGKILL)
    started = time.monotonic()
    stack.wait_until(
        lambda: stack.runtime("http")["pid"] != before["pid"] and stack.ok("/health/live"),
        15,
        "the http runtime restarted and answering /health/live",
    )
    after = stack.runtime("http")
    assert after["restarts"] == before["restarts"] + 1
    assert psutil.pid_exists(after["pid"])
    assert time.monotonic() - started < 15
    assert "runtime http" in stack.log()
    assert "restarting in" in stack.log()
    stack.wait_until(lambda: stack.ok("/health/ready"), 15, "ready again")


def test_a_second_up_on_the_same_data_dir_refuses(stack: Any) -> None:
    before = stack.state()
    second = stack.cli("up", timeout=30)
    assert second.returncode == 1
    assert "already running" in second.stderr
    assert str(before["supervisor_pid"]) in second.stderr
    assert stack.process.poll() is None
    assert stack.state()["supervisor_pid"] == before["supervisor_pid"]


def test_migrate_uses_the_running_stacks_database(stack: Any) -> None:
    result = stack.cli("migrate")
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stdout
    with psycopg.connect(stack.database_url) as conn:
        assert conn.execute("select count(*) from schema_migrations").fetchone() != (0,)


def test_dlq_uses_the_running_stacks_broker(stack: Any) -> None:
    listed = stack.cli("dlq", "list")
    assert listed.returncode == 0, listed.stderr
    replay = stack.cli("dlq", "replay", "--dry-run")
    assert replay.returncode == 0, replay.stderr
    assert "would replay" in replay.stdout


def test_migrate_on_an_idle_data_dir(launch_stack: Any) -> None:
    data_dir = launch_stack.data_dir()
    env = launch_stack.env(data_dir)
    first = launch_stack.cli(env, "migrate")
    assert first.returncode == 0, first.stderr
    assert "applied 0001_initial" in first.stdout
    again = launch_stack.cli(env, "migrate")
    assert again.returncode == 0, again.stderr
    assert "up to date" in again.stdout
    assert not launch_stack.survivors(data_dir)


def test_a_stopped_stack_leaves_nothing_running_and_keeps_its_data(
    launch_stack: Any,
) -> None:
    first = launch_stack()
    data_dir = first.data_dir
    postgres_pid = first.state()["postgres"]["pid"]
    kafka_pid = first.state()["kafka"]["pid"]
    with psycopg.connect(first.database_url) as conn:
        conn.execute("create table e2e_survivor (note text)")
        conn.execute("insert into e2e_survivor values ('still here')")
    secret_file = data_dir / "secrets" / "jwt_secret"
    secret = secret_file.read_text()
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert secret.strip() not in first.log()

    first.stop()  # exit 0, no survivors, stack.json gone
    assert not psutil.pid_exists(postgres_pid) or psutil.Process(postgres_pid).status() == psutil.STATUS_ZOMBIE
    assert not psutil.pid_exists(kafka_pid) or psutil.Process(kafka_pid).status() == psutil.STATUS_ZOMBIE

    second = launch_stack(data_dir)
    with psycopg.connect(second.database_url) as conn:
        assert conn.execute("select note from e2e_survivor").fetchall() == [("still here",)]
        first_migration = conn.execute("select name from schema_migrations order by name").fetchone()
        assert first_migration is not None
        assert first_migration[0].startswith("0001_initial")
    assert secret_file.read_text() == secret
    assert "migrations: schema is up to date" in second.log()
    second.stop()
