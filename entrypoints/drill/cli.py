"""The `chat4all drill` command group. Each drill's module is imported only when that drill runs (or --help
lists them): `chat4all up` and the other commands do not pay for the drills' imports."""

from __future__ import annotations

import importlib

import click

DRILLS = {
    "failover": "entrypoints.drill.failover:command",
    "broker-loss": "entrypoints.drill.services:broker_loss",
    "database-restart": "entrypoints.drill.services:database_restart",
    "scale-out": "entrypoints.drill.scale_out:command",
    "stress": "entrypoints.drill.stress:command",
    "demo": "entrypoints.drill.demo:command",
}


class LazyDrills(click.Group):
    """A group whose commands live in modules named by :data:`DRILLS` (click's documented lazy-loading pattern)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(DRILLS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = DRILLS.get(cmd_name)
        if target is None:
            return None
        module, attr = target.split(":")
        command = getattr(importlib.import_module(module), attr)
        if not isinstance(command, click.Command):
            raise TypeError(f"{target} is not a click command")
        return command


@click.group(cls=LazyDrills)
def drill() -> None:
    """Failure drills and demos against the stack `chat4all up` runs on CHAT4ALL_DATA_DIR (docs/drills.md).

    Each drill prints what it did and measured, and exits non-zero when a guarantee did not hold.
    """
