"""`chat4all drill ...` against a real `chat4all up` with the channel sandbox, through the CLI as a person runs it.

Short runs (tens of seconds, tens of messages a second) of what docs/drills.md runs for minutes: every load
drill must pass (exit 0: nothing lost, duplicated or reordered on the platform) and say what it measured.
The demo's three scenarios pass (real time, the WhatsApp-Instagram bridge, an upload killed and resumed), the
resume sends only what the server says is missing, the checksums match, and the sandbox is left as it was
found. Without a stack on the data dir, a drill says so and exits 1.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from entrypoints.drill.demo_upload import parse_size

# The first test waits for the stack (up to 120 s on a busy machine) and for the demo (up to 240 s).
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

CHUNKS = 24  # --size 24M in chunks of --chunk-size 1M (10^6 bytes each)


@pytest.fixture(scope="module")
def sandbox_stack(launch_stack: Any) -> Iterator[Any]:
    stack = launch_stack(extra_env={"CHAT4ALL_SANDBOX": "true"})
    stack.sandbox_url = f"http://127.0.0.1:{stack.env['CHAT4ALL_SANDBOX_PORT']}"
    stack.wait_until(lambda: httpx.get(f"{stack.sandbox_url}/health").status_code == 200, 30, "the sandbox is up")
    yield stack
    stack.stop()  # not left running (and eating CPU) under the rest of the session's tests


@pytest.fixture(scope="module")
def demo(sandbox_stack: Any) -> dict[str, Any]:
    """One run of the whole demo (it takes a while), shared by the tests that read its output."""
    settings_before = httpx.get(f"{sandbox_stack.sandbox_url}/sandbox/settings").json()
    done = sandbox_stack.cli("drill", "demo", "--size", "24M", "--chunk-size", "1M", timeout=240)
    settings_after = httpx.get(f"{sandbox_stack.sandbox_url}/sandbox/settings").json()
    return {"done": done, "out": done.stdout, "settings": (settings_before, settings_after)}


def test_every_scenario_passes_and_the_demo_exits_0(demo: dict[str, Any]) -> None:
    done, out = demo["done"], demo["out"]
    assert done.returncode == 0, f"{out}\n{done.stderr}"
    for scenario in ("internal", "bridge", "upload"):
        assert re.search(rf"^\S+  == {scenario}: ", out, re.MULTILINE), scenario
    summary = out[out.index("\nsummary\n") :]
    rows = [line.split() for line in summary.splitlines()[4:] if line.startswith("  ")]
    assert {row[0] for row in rows} == {"demo", "internal", "bridge", "upload"}
    assert "FAIL" not in out
    assert re.search(r"^demo passed: \d+ checks in 3 scenario\(s\)$", out, re.MULTILINE)


def test_the_narrative_shows_each_hop_with_its_latency(demo: dict[str, Any]) -> None:
    out = demo["out"]
    for check in (
        "B's socket gets message.created",
        "A's socket gets DELIVERED for B (internal)",
        "A's socket gets READ",
        "the WhatsApp message reaches the Instagram person",
        "the Instagram answer reaches the WhatsApp person",
    ):
        assert re.search(rf"PASS  {re.escape(check)} \(\d[\d,]* ms after ", out), check
    assert "Instagram delivery: SENT, then READ from messaging_seen (SENT -> DELIVERED -> READ;" in out
    assert "WhatsApp delivery: SENT, DELIVERED, READ from the callbacks (SENT -> DELIVERED -> READ;" in out
    assert re.search(
        r"WhatsApp's receipt webhooks .*: sent at \+.*: 200, delivered at \+.*: 200, read at \+.*: 200", out
    )


def _numbers(pattern: str, out: str) -> list[int]:
    found = re.search(pattern, out)
    assert found, f"no line matches {pattern!r} in:\n{out}"
    return [int(n) for n in found.groups()]


def test_the_resume_sends_only_the_missing_chunks(demo: dict[str, Any]) -> None:
    out = demo["out"]
    acked, in_flight = _numbers(r"SIGKILLed the client .*?: (\d+) chunks? acknowledged .*?(\d+) chunks? in flight", out)
    received, missing = _numbers(r"a fresh client asks .*?(\d+) chunks? received, (\d+) missing", out)
    assert 0 < acked < CHUNKS
    assert acked <= received <= acked + in_flight  # nothing acknowledged was lost; only chunks in flight may be
    assert received + missing == CHUNKS
    assert re.search(rf"sent the {missing} missing chunks? ", out)
    assert "PASS  the resume re-sent only missing chunks" in out
    assert "PASS  the server kept every chunk it acknowledged" in out


def test_the_downloaded_file_has_the_uploaded_checksum(demo: dict[str, Any]) -> None:
    out = demo["out"]
    written = re.search(r"wrote (\S+) \(24,000,000 bytes .*SHA-256 ([0-9a-f]{64})$", out, re.MULTILINE)
    downloaded = re.search(r"downloaded 24,000,000 bytes .*SHA-256 ([0-9a-f]{64})$", out, re.MULTILINE)
    assert written and downloaded
    assert written[2] == downloaded[1]
    assert "PASS  the download's SHA-256 matches" in out
    assert not Path(written[1]).parent.exists()  # the temporary directory is gone


def test_the_sandbox_is_left_as_it_was(demo: dict[str, Any]) -> None:
    before, after = demo["settings"]
    assert before == after


def test_without_a_stack_the_demo_says_so_and_exits_1(launch_stack: Any, tmp_path: Path) -> None:
    done = launch_stack.cli(launch_stack.env(tmp_path / "data"), "drill", "demo", "--only", "internal")
    assert done.returncode == 1
    assert "no chat4all stack is running on" in done.stderr
    assert "chat4all up" in done.stderr
    assert done.stdout == ""


@pytest.mark.parametrize(
    ("text", "size"),
    [("1.8G", 1_800_000_000), ("20M", 20_000_000), ("512K", 512_000), ("2GiB", 2 * 1024**3), ("1048576", 1048576)],
)
def test_sizes_take_decimal_and_binary_units(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "G", "1.8X", "-3M"])
def test_a_size_that_is_not_one_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_size(text)


def drill(stack: Any, *args: str, timeout: float = 300.0) -> tuple[int, dict[str, Any], str]:
    done: subprocess.CompletedProcess[str] = stack.cli("drill", *args, "--json", timeout=timeout)
    try:
        report = json.loads(done.stdout)
    except ValueError:
        pytest.fail(f"drill {args[0]} printed no JSON report (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.returncode, report, done.stderr


def assert_held(report: dict[str, Any], code: int, stderr: str) -> None:
    assert report["failures"] == [], f"{report['failures']}\n{stderr[-3000:]}"
    assert code == 0
    assert report["lost"] == 0
    assert report["duplicated"] == 0
    assert report["out_of_order"] == 0
    assert report["accepted"] == report["sent"] == report["delivered"] == report["platform_received"]
    assert report["delivered_latency"]["count"] == report["delivered"]


def test_failover_kills_four_runtimes_and_loses_and_duplicates_nothing(sandbox_stack: Any) -> None:
    code, report, stderr = drill(sandbox_stack, "failover", "--rate", "40", "--seconds", "14", "--every", "3")
    assert_held(report, code, stderr)
    kills = report["disruptions"]
    assert [d["what"] for d in kills] == ["kill -9 router", "kill -9 channels", "kill -9 relay", "kill -9 http"]
    assert all(d["restarted_s"] > 0 and d["recovered_s"] is not None for d in kills), kills
    assert kills[-1]["runtime"] in {"http", "http-2"}


def test_a_broker_that_comes_back_empty_still_delivers_everything(sandbox_stack: Any) -> None:
    code, report, stderr = drill(sandbox_stack, "broker-loss", "--rate", "40", "--seconds", "12", "--at", "4")
    assert_held(report, code, stderr)
    (loss,) = report["disruptions"]
    assert loss["what"] == "kill -9 kafka" and loss["recovered_s"] is not None
    assert "the broker lost its log" in sandbox_stack.log()  # the relay noticed and published the outbox again


def test_a_database_restart_gives_clients_503_with_retry_after_and_loses_nothing(sandbox_stack: Any) -> None:
    code, report, stderr = drill(sandbox_stack, "database-restart", "--rate", "40", "--seconds", "12", "--at", "3")
    assert_held(report, code, stderr)
    assert report["retried"] > 0, "sends during the outage should have been refused and retried"
    refusals = [p for p in report["problems"] if p["status"] == 503]
    assert refusals, report["answers"]
    assert all(p["content_type"].startswith("application/problem+json") and p["retry_after"] for p in refusals)


def test_workers_added_at_run_time_take_partitions_and_the_backlog_drains(sandbox_stack: Any) -> None:
    code, report, stderr = drill(
        sandbox_stack, "scale-out", "--rate", "60", "--seconds", "30", "--platform-latency-ms", "300"
    )
    assert_held(report, code, stderr)
    assert [p["workers"] for p in report["phases"]] == [1, 2, 3]
    assert [d["workers"] for d in report["disruptions"]] == [2, 3]
    names = {rt["name"] for rt in sandbox_stack.state()["runtimes"]}
    assert {"relay", "router", "channels", "status"} <= names
    assert not {n for n in names if n.split("-")[0] in {"relay", "router", "channels", "status"} and "-" in n}, names


def test_stress_reports_both_latencies(sandbox_stack: Any) -> None:
    code, report, stderr = drill(sandbox_stack, "stress", "--rate", "50", "--seconds", "8")
    assert_held(report, code, stderr)
    assert report["sent"] == 400
    assert report["ack_latency"]["p50_ms"] > 0 and report["delivered_latency"]["p99_ms"] > 0


def test_a_drill_without_a_stack_says_so(launch_stack: Any, tmp_path: Any) -> None:
    env = launch_stack.env(tmp_path / "nothing-here")
    done = launch_stack.cli(env, "drill", "failover", timeout=60)
    assert done.returncode == 1
    assert "no chat4all stack is running on" in done.stderr
