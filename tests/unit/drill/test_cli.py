"""`chat4all drill` lists every drill and loads each one only when asked."""

from __future__ import annotations

import subprocess
import sys

import click
from click.testing import CliRunner

from entrypoints.cli import main
from entrypoints.drill.cli import DRILLS, drill


def test_every_drill_is_a_command_named_as_listed() -> None:
    ctx = click.Context(drill)
    for name in DRILLS:
        command = drill.get_command(ctx, name)
        assert command is not None and command.name == name
    assert drill.get_command(ctx, "no-such-drill") is None


def test_help_lists_the_drills_and_an_unknown_one_is_a_usage_error() -> None:
    runner = CliRunner()
    listed = runner.invoke(main, ["drill", "--help"])
    assert listed.exit_code == 0
    for name in DRILLS:
        assert name in listed.output
    unknown = runner.invoke(main, ["drill", "meltdown"])
    assert unknown.exit_code == 2
    assert "No such command 'meltdown'" in unknown.output


def test_the_drills_are_not_imported_with_the_cli() -> None:
    """`chat4all up` and the other commands do not pay for the drills' imports."""
    probe = "import sys, entrypoints.cli; print(sorted(m for m in sys.modules if m.startswith('entrypoints.drill')))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    assert done.stdout.strip() == "['entrypoints.drill', 'entrypoints.drill.cli']"
