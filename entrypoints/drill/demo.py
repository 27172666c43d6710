"""`chat4all drill demo`: the brief's three scenarios, scripted against a running `chat4all up`.

## `chat4all drill demo`

Runs the brief's three scenarios against the stack `chat4all up` runs on `CHAT4ALL_DATA_DIR` (found through its
`stack.json`), the way a client would: the REST API and the WebSocket, plus the channel sandbox's control API for
the people on WhatsApp and Instagram, and one read of PostgreSQL (see "bridge"). Each step is printed as it
happens, with the time and what it measured; a summary table of every check ends the run. The exit status is 0
when every check passed, else 1, and the last line names the failed checks.

```bash
chat4all up                                   # terminal 1; the default config runs the channel sandbox
chat4all drill demo                           # terminal 2, same CHAT4ALL_DATA_DIR: all three, a 1.8 GB upload
chat4all drill demo --only bridge             # one scenario: internal, bridge or upload
chat4all drill demo --only upload --size 20M  # a smaller file
```

| option | default | meaning |
| --- | --- | --- |
| `--only NAME` | all three, in order | run one scenario: `internal`, `bridge` or `upload` |
| `--size` | `1.8G` (1,800,000,000 bytes) | the file: `1.8G`, `20M`, `512K` (powers of 10), `2GiB` (of 2), bytes |
| `--chunk-size` | the server's (8 MiB) | bytes per chunk (256 KiB to 64 MiB) |
| `--interrupt-at` | `0.5` | share of the chunks acknowledged when the first client is killed |
| `--concurrency` | `4` | chunks in flight |
| `--seed` | `2026` | seeds the file's bytes |
| `--work-dir` | the system's temporary directory | where the file goes (`--size` must be free); deleted at the end |
| `--timeout` | `30` | the longest wait, in seconds, for any one step |

Without a running stack on the data dir it says `demo: no chat4all stack is running on <dir>: start one with
`chat4all up` (with the same CHAT4ALL_DATA_DIR) and run the drill beside it` on stderr and exits 1.

### What it shows

1. **internal**: two fresh users (`demo-a-…`, `demo-b-…`) open a WebSocket each (`/v1/ws?token=`); A creates a
   private conversation and sends a text. Shown with latencies: B's `message.created` (from A's POST), A's
   `message.status` DELIVERED for B on the `internal` channel, B's `read` frame answered `read.ok`, A's READ (from
   B's frame), and `GET /v1/messages/{id}/status` ending READ.
2. **bridge** (WhatsApp -> Instagram and back): a user, "the agent", creates a group with `whatsapp:+55119…` and
   `instagram:17841…` (fresh each run): an address no user has linked is a contact reached on its own channel, and
   the caller is always a member, hence a group of three. An inbound message goes to the conversation of the message
   it replies to, else to the one its address is bound to (the last that sent to it), else to the inbox owner's,
   else nowhere (`unrouted`). `up` sets no `CHAT4ALL_INBOX_OWNER` and creating a conversation binds nobody, so the
   agent first sends a welcome; once both platforms have it, both addresses are bound to the group: **no inbox owner
   is needed**. Then the WhatsApp person writes (`POST /sandbox/inbound`): the signed webhook and Chat4All's answer,
   the message in the group (the agent's socket), its copy on Instagram (`GET /sandbox/messages`), and that
   delivery's history to READ with Instagram's `messaging_seen` webhook. The Instagram person answers with a reply
   to it (`reply_to`, the other routing path): it reaches WhatsApp, and the `sent`, `delivered` and `read` callbacks
   are shown with Chat4All's answers and the delivery's history. Last, the group's history as the agent sees it.
   - The sandbox sends read receipts only with `auto_read`: the demo turns it on and puts the sandbox's settings
     back as they were at the end (a check), even when it fails. The web app's phones view shares those settings
     for that second or so.
   - The platform deliveries of a message a *contact* wrote are visible to nobody through the API (the status API
     shows the sender every delivery and a recipient its own; the sender has no account), so the demo reads them
     from PostgreSQL (`delivery_events`), the database `stack.json` names.
3. **upload**: a file of `--size` pseudo-random bytes (SHAKE-128 of the seed and block number) is written to a
   temporary directory and hashed. A client *process* initiates the upload and PUTs the chunks (`--concurrency` at
   a time, each streamed from the disk) and reports each chunk it starts and each the API acknowledges; at
   `--interrupt-at` of them the demo SIGKILLs it, mid-body. A fresh client asks `GET /v1/files/{id}` what is missing,
   sends only that and completes with `sha256:`. Checks: no acknowledged chunk is missing, the chunks sent twice are
   only some of those in flight at the kill, the completion matches the SHA-256, the other user's socket announces
   the file message, its download link (`GET /v1/files/{id}/download`, 1 h) serves the same SHA-256, and the memory
   of both clients stays flat whatever the size. Figures: chunks before and after the kill, bytes re-sent, MB/s
   (10^6 bytes) of each phase, the completion's time, the download's MB/s.

### What it leaves behind

Users, conversations and messages named `demo-…` (fresh every run), and the uploaded file in the stack's store:
the API cannot delete a completed file. The content depends only on `--seed` and `--size`, and the store keeps one
copy of identical content, so running it again with the same options takes no more room. The temporary file is
deleted.

### Sample output (abridged)

On a 2-core VM shared with other work (load average 10 to 19): internal and bridge from one run, the upload from
the default 1.8 GB run. Long platform ids are cut with `...` by the demo itself.

```
01:35:54.984  == internal: two Chat4All users in real time (REST + WebSocket) ==
01:35:55.194  [internal] A POST /v1/messages 'Olá B! This is A, over Chat4All.': 202 in 49 ms, message cd4a…, seq 1
01:35:55.213  [internal] PASS  B's socket gets message.created (67 ms after the POST)
01:35:55.298  [internal] PASS  A's socket gets DELIVERED for B (internal) (153 ms after the POST)
01:35:55.348  [internal] PASS  A's socket gets READ (49 ms after B's read frame)
01:35:55.366  [internal] PASS  the status API says READ (SENT -> DELIVERED -> READ)

01:35:55.375  == bridge: a WhatsApp person and an Instagram person in one conversation (channel sandbox) ==
01:35:55.464  [bridge] agent demo-agent-2bea96bc created group 0e44… with the contacts whatsapp:+5511986800308 (a
              WhatsApp person) and instagram:1784110527538913 (an Instagram person)
01:35:55.750  [bridge] PASS  the welcome reaches both people (binds their addresses) (WhatsApp 208 ms, Instagram 217 ms)
01:35:55.886  [bridge] the WhatsApp person +5511986800308 writes 'Oi! Maria here, writing on WhatsApp. Can you read …'
01:35:55.887  [bridge]   the sandbox POSTs /webhooks/whatsapp signed with X-Hub-Signature-256
              (wamid.HBgMmsuzNOpJUBnqcP...); Chat4All answered 200
01:35:55.917  [bridge] PASS  stored in the group, from the WhatsApp contact (166 ms after they wrote)
01:35:55.988  [bridge] PASS  the WhatsApp message reaches the Instagram person (237 ms after Maria wrote)
01:35:56.118  [bridge]   the Instagram delivery's history (PostgreSQL), after Chat4All accepted the message:
01:35:56.118  [bridge]     SENT      +0 ms
01:35:56.118  [bridge]     SENT      +168 ms  instagram accepted it as aWdfaXRlbToxOklHTWVzc2Fn...
01:35:56.118  [bridge]     DELIVERED +203 ms  implied by read
01:35:56.118  [bridge]     READ      +203 ms
01:35:56.133  [bridge]   Instagram's receipt webhooks for aWdfaXRlbToxOklHTWVzc2Fn..., and Chat4All's answers: read at
              +204 ms: 200
01:35:56.227  [bridge] PASS  stored in the group, from the Instagram contact (95 ms after they wrote)
01:35:56.288  [bridge] PASS  the Instagram answer reaches the WhatsApp person (155 ms after João wrote)
01:35:56.528  [bridge]   WhatsApp's receipt webhooks for wamid.HBgMgABF1dHitF8c28..., and Chat4All's answers: sent at
              +178 ms: 200, delivered at +239 ms: 200, read at +301 ms: 200
01:35:56.528  [bridge] PASS  WhatsApp delivery: SENT, DELIVERED, READ from the callbacks (SENT -> DELIVERED -> READ;
              READ seen 391 ms after João wrote)
01:35:56.597  [bridge] PASS  the sandbox's settings are restored (auto_deliver=true, auto_read=false, delay_ms=50)

01:30:24.427  == upload: a 1,800.0 MB resumable upload, killed and resumed, shared and downloaded ==
01:31:39.150  [upload] wrote /tmp/chat4all-demo-hhlmxyg6/demo-1800000000-2026.bin (1,800,000,000 bytes = 1,800.0 MB)
              in 74.3 s, SHA-256 1d2ed4cfd78ae26da70d11dbdf58b63b618dd76f30982e49882eea9d142cc45b
01:31:58.125  [upload]   initiated 7b772026-65be-4316-addb-2535a00734b7: 215 chunks of 8,388,608 bytes
01:31:58.125  [upload]   SIGKILLed the client 12.78 s after its initiate: 108 chunks acknowledged (906.0 MB,
              70.9 MB/s), 3 chunks in flight [108, 109, 110], 104 never started
01:31:58.410  [upload] phase 2: a fresh client asks GET /v1/files/{id} (48 ms): status uploading, 109 chunks
              received, 106 missing
01:31:58.410  [upload] PASS  the server kept every chunk it acknowledged (none lost)
01:32:16.712  [upload]   sent the 106 missing chunks (885.6 MB) in 18.30 s = 48.4 MB/s; 2 chunks of them had been
              sent before, in flight at the kill: [109, 110]
01:32:16.712  [upload] PASS  the resume re-sent only missing chunks (re-sent 2 chunks = 16.8 MB, at most the 3 in
              flight = 25.2 MB)
01:32:37.371  [upload]   POST /v1/files/{id}/complete with sha256:1d2ed4cfd78ae26d...: completed in 20.66 s
01:32:37.371  [upload]   chunks sent: 108 acknowledged (+3 in flight) before the kill, 106 after; phase 1 70.9 MB/s,
              resume 48.3 MB/s, 52.10 s from initiate to completed = 34.6 MB/s overall
01:32:37.867  [upload] PASS  the receiver is told of the file (285 ms after the POST)
01:32:37.904  [upload] the receiver's download link expires at 2026-11-23T02:32:37.888233Z (in 60 min)
01:33:43.651  [upload] downloaded 1,800,000,000 bytes in 65.74 s = 27.4 MB/s, SHA-256 1d2ed4cfd78ae26da70d1…
01:33:43.651  [upload] PASS  the download's SHA-256 matches (27.4 MB/s)
01:33:43.651  [upload] PASS  the clients' memory stays flat (killed client 85.3 MB peak, resuming client +0.0 MB,
              for a 1,800.0 MB file)

summary
  scenario  check                                                        result  figure
  --------  -----------------------------------------------------------  ------  ------
  demo      the API is ready                                             pass    GET /health/ready: 200
  internal  B's socket gets message.created                              pass    67 ms after the POST
  …
  upload    the resume re-sent only missing chunks                       pass    re-sent 2 chunks = 16.8 MB, at …
  upload    the download's SHA-256 matches                               pass    27.4 MB/s
demo passed: 23 checks in 3 scenario(s)
```
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from entrypoints.drill import demo_bridge, demo_internal, demo_upload
from entrypoints.drill.demo_client import Api, DemoFailure, Sandbox
from entrypoints.drill.demo_report import Narrator
from entrypoints.drill.target import DrillError, Target
from entrypoints.settings import Settings

SCENARIOS = ("internal", "bridge", "upload")


class Size(click.ParamType[int]):
    """A byte count with an optional unit: ``1.8G`` (10^9), ``20M``, ``2GiB`` (2^30)."""

    name = "size"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            size = demo_upload.parse_size(str(value))
        except ValueError as e:
            self.fail(str(e), param, ctx)
        if size < 1:
            self.fail("the size must be at least one byte", param, ctx)
        return size


@click.command("demo")
@click.option("--only", type=click.Choice(SCENARIOS), help="Run one scenario instead of all three, in order.")
@click.option("--size", type=Size(), default="1.8G", show_default=True, help="upload: the file's size.")
@click.option("--chunk-size", type=Size(), default=None, help="upload: bytes per chunk (default: the server's, 8 MiB).")
@click.option(
    "--interrupt-at",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=0.5,
    show_default=True,
    help="upload: the share of chunks acknowledged when the first client is killed.",
)
@click.option(
    "--concurrency", type=click.IntRange(1, 32), default=4, show_default=True, help="upload: chunks in flight."
)
@click.option("--seed", type=int, default=2026, show_default=True, help="upload: seeds the file's bytes.")
@click.option(
    "--work-dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="upload: where the temporary file goes (default: the system's temporary directory).",
)
@click.option(
    "--timeout",
    "wait_s",
    type=click.FloatRange(min=1),
    default=30.0,
    show_default=True,
    help="Longest wait in seconds for any one step.",
)
def command(
    only: str | None,
    size: int,
    chunk_size: int | None,
    interrupt_at: float,
    concurrency: int,
    seed: int,
    work_dir: Path | None,
    wait_s: float,
) -> None:
    """The brief's scenarios against the running stack: internal chat, the WhatsApp-Instagram bridge, a large upload.

    Prints each step with the time and what it measured, then a summary; exits 1 if any check failed.
    """
    try:
        settings = Settings()
    except ValidationError as exc:
        raise click.ClickException(f"invalid CHAT4ALL_* settings:\n{exc}") from exc
    try:
        target = Target.discover(settings)
    except DrillError as e:
        click.echo(f"demo: {e}", err=True)
        sys.exit(1)
    plan = demo_upload.Plan(size, chunk_size, interrupt_at, concurrency, seed, work_dir)
    n = Narrator(out=click.echo)
    n.say(f"the stack on {target.data_dir}: API {target.http_url}, channel sandbox {target.sandbox_url or 'none'}")
    asyncio.run(_run(target, n, (only,) if only else SCENARIOS, plan, wait_s))
    n.summary()
    sys.exit(0 if n.checks and not n.failed else 1)


async def _run(target: Target, n: Narrator, scenarios: tuple[str, ...], plan: demo_upload.Plan, wait_s: float) -> None:
    api = Api(target.http_url, wait_s)
    try:
        ready = await api.http.get("/health/ready")
    except Exception as e:
        n.check("the API answers", False, f"{target.http_url}: {type(e).__name__}: {e}")
        await api.close()
        return
    if not n.check("the API is ready", ready.status_code == 200, f"GET /health/ready: {ready.status_code}"):
        await api.close()
        return
    titles = {
        "internal": "two Chat4All users in real time (REST + WebSocket)",
        "bridge": "a WhatsApp person and an Instagram person in one conversation (channel sandbox)",
        "upload": f"a {demo_upload.megabytes(plan.size)} resumable upload, killed and resumed, shared and downloaded",
    }
    bodies: dict[str, Callable[[], Awaitable[None]]] = {
        "internal": lambda: demo_internal.run(api, n, wait_s),
        "bridge": lambda: _bridge(api, target, n, wait_s),
        "upload": lambda: demo_upload.run(api, n, wait_s, plan),
    }
    try:
        for name in scenarios:
            await _scenario(n, name, titles[name], bodies[name])
    finally:
        await api.close()


async def _bridge(api: Api, target: Target, n: Narrator, wait_s: float) -> None:
    if target.sandbox_url is None:
        raise DemoFailure(
            "the stack runs the channel sandbox",
            "it does not (platform credentials are set, or CHAT4ALL_SANDBOX=false); the bridge needs it",
        )
    sandbox = Sandbox(target.sandbox_url, wait_s)
    try:
        await demo_bridge.run(api, sandbox, target.database_url, n, wait_s)
    finally:
        await sandbox.close()


async def _scenario(n: Narrator, name: str, title: str, body: Callable[[], Awaitable[None]]) -> None:
    """Run one scenario; a failure becomes a failed check, and the next scenario still runs."""
    n.begin(name, title)
    t0 = time.monotonic()
    try:
        await body()
    except DemoFailure as e:
        n.check(e.check, False, e.detail)
    except DrillError as e:
        n.check("the stack keeps running", False, str(e))
    except Exception as e:  # a surprise in one scenario must not hide the others' results
        n.check("the scenario runs to its end", False, f"{type(e).__name__}: {e}")
    n.say(f"done in {time.monotonic() - t0:.1f} s")
