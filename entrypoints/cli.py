"""The `chat4all` console command: `up` runs the whole stack, `ps` lists it, `scale` changes its process counts,
`migrate` applies SQL migrations, `dlq list|replay` shows and replays dead letters.
"""

from __future__ import annotations

import logging
import sys

import click
from pydantic import ValidationError

from entrypoints.settings import Settings


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        raise click.ClickException(f"invalid CHAT4ALL_* settings:\n{exc}") from exc


def _configure_logging(level: str, fmt: str = "json", runtime: str | None = None) -> None:
    """Structured logs on stderr (entrypoints/logs.py); stdout stays for the command's own output."""
    from entrypoints.logs import configure_logging

    configure_logging(level, fmt, runtime=runtime)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Chat4All: one API for messages and files across channels.

    Settings come from CHAT4ALL_* environment variables (CHAT4ALL_DATABASE_URL, CHAT4ALL_KAFKA_BOOTSTRAP,
    CHAT4ALL_HTTP_PORT, CHAT4ALL_JWT_SECRET, CHAT4ALL_DATA_DIR, ...).
    """


@main.command()
def up() -> None:
    """Run PostgreSQL and Kafka (unless CHAT4ALL_DATABASE_URL / CHAT4ALL_KAFKA_BOOTSTRAP are set), migrate,
    create the topics, and supervise every runtime until Ctrl-C.
    """
    from entrypoints.stack.commands import up as run_up

    settings = _settings()
    _configure_logging(settings.log_level, settings.log_format, runtime="supervisor")
    sys.exit(run_up(settings))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def ps(as_json: bool) -> None:
    """List the processes of the stack running on CHAT4ALL_DATA_DIR."""
    from entrypoints.stack.commands import ps as run_ps

    settings = _settings()
    _configure_logging(settings.log_level, settings.log_format, runtime="ps")
    sys.exit(run_ps(settings.data_dir, as_json=as_json))


@main.command()
@click.argument("counts", nargs=-1, required=True, metavar="KIND=N...")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    help="Seconds to wait for the stack to run exactly that.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def scale(counts: tuple[str, ...], timeout: float, as_json: bool) -> None:
    """Run N processes of KIND in the stack `up` runs on CHAT4ALL_DATA_DIR, starting or stopping only those.

    KIND is http (1 to 64) or a worker kind: relay, router, channels, status, push, webhooks, sweeper (0 to 16).
    E.g. `chat4all scale router=3 channels=3`. The counts hold until that `up` stops. Waits until the stack runs
    exactly them, then lists its processes as `ps` does.
    """
    from entrypoints.stack.commands import scale as run_scale
    from entrypoints.stack.runtimes import parse_scale

    try:
        wanted = parse_scale(counts)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="KIND=N") from exc
    settings = _settings()
    _configure_logging(settings.log_level, settings.log_format, runtime="scale")
    sys.exit(run_scale(settings.data_dir, wanted, timeout=timeout, as_json=as_json))


@main.command()
def migrate() -> None:
    """Apply pending SQL migrations to CHAT4ALL_DATABASE_URL, or to the data dir's embedded PostgreSQL."""
    from entrypoints.stack.commands import migrate as run_migrate

    settings = _settings()
    _configure_logging(settings.log_level, settings.log_format, runtime="migrate")
    sys.exit(run_migrate(settings))


@main.command()
def topics() -> None:
    """Create the platform's missing Kafka topics on CHAT4ALL_KAFKA_BOOTSTRAP, with CHAT4ALL_KAFKA_PARTITIONS
    partitions and CHAT4ALL_KAFKA_REPLICATION_FACTOR replicas (and CHAT4ALL_KAFKA_MIN_INSYNC_REPLICAS)."""
    from entrypoints.stack.commands import topics as run_topics

    settings = _settings()
    _configure_logging(settings.log_level, settings.log_format, runtime="topics")
    sys.exit(run_topics(settings))


@main.command()
def sandbox() -> None:
    """Run the channel sandbox on CHAT4ALL_HOST:CHAT4ALL_SANDBOX_PORT: WhatsApp, Messenger, Instagram and Telegram
    as the connectors see them, sending their signed webhooks to CHAT4ALL_SANDBOX_CHAT4ALL_URL (docs/sandbox.md).
    """
    from entrypoints.sandbox.__main__ import run as run_sandbox

    settings = _settings()
    _configure_logging(settings.log_level, settings.log_format, runtime="sandbox")
    sys.exit(run_sandbox(settings))


@main.group()
def dlq() -> None:
    """Dead letters: delivery jobs that exhausted their attempts (topic chat.dlq).

    The broker is CHAT4ALL_KAFKA_BOOTSTRAP, else the one of the stack running on CHAT4ALL_DATA_DIR.
    """


def _dlq_settings() -> Settings:
    settings = _settings()
    _configure_logging(settings.log_level, settings.log_format, runtime="dlq")
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    return settings


@dlq.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line (the record's payload and position).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Show only the N most recent.")
def dlq_list(as_json: bool, limit: int | None) -> None:
    """List every dead letter, oldest first: time, channel, topic, message, recipient, attempts, error."""
    from entrypoints.stack.dlq import list_dead_letters

    sys.exit(list_dead_letters(_dlq_settings(), as_json=as_json, limit=limit))


@dlq.command("replay")
@click.option("--dry-run", is_flag=True, help="Show what would be replayed; publish and remember nothing.")
def dlq_replay(dry_run: bool) -> None:
    """Publish each dead letter not replayed before back to its channel's topic (consumer group chat4all-dlq-replay).

    The channel workers deliver the jobs again; their send ledger keeps a delivery from reaching its platform twice.
    """
    from entrypoints.stack.dlq import replay

    sys.exit(replay(_dlq_settings(), dry_run=dry_run))


def _add_drills() -> None:
    from entrypoints.drill.cli import drill

    main.add_command(drill)


_add_drills()

if __name__ == "__main__":
    main()
