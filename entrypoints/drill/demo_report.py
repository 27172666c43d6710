"""The demo's narrative and verdict: timestamped lines as things happen, each check once, a summary table at the end.

Checks are recorded as they are made, so the summary (and the exit status) cover everything that ran, and a
scenario cut short by a failure still shows the checks it passed and the one that failed.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import datetime

import attrs


@attrs.frozen
class Check:
    scenario: str
    name: str
    ok: bool
    figure: str


@attrs.define
class Narrator:
    """Prints what happens, prefixed with the local time and the scenario, and keeps every check."""

    out: Callable[[str], None] = attrs.field(default=lambda line: print(line, flush=True))
    scenario: str = "demo"
    checks: list[Check] = attrs.field(factory=list)

    def begin(self, scenario: str, title: str) -> None:
        self.scenario = scenario
        self.out("")
        self._line(f"== {scenario}: {title} ==")

    def say(self, text: str) -> None:
        self._line(f"[{self.scenario}] {text}")

    def check(self, name: str, ok: bool, figure: str = "") -> bool:
        """Record a check and print it; returns ``ok`` so the caller can branch on it."""
        self.checks.append(Check(self.scenario, name, ok, figure))
        self._line(f"[{self.scenario}] {'PASS' if ok else 'FAIL'}  {name}{f' ({figure})' if figure else ''}")
        return ok

    def _line(self, text: str) -> None:
        self.out(f"{datetime.now().astimezone():%H:%M:%S.%f}"[:12] + f"  {text}")

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def summary(self) -> None:
        """The table of every check, then one line with the verdict."""
        rows = [("scenario", "check", "result", "figure")]
        rows += [(c.scenario, c.name, "pass" if c.ok else "FAIL", c.figure) for c in self.checks]
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        self.out("")
        self.out("summary")
        for n, (scenario, name, result, figure) in enumerate(rows):
            cells = (scenario.ljust(widths[0]), name.ljust(widths[1]), result.ljust(widths[2]), figure)
            self.out("  " + "  ".join(cells).rstrip())
            if n == 0:
                self.out("  " + "  ".join("-" * w for w in widths) + "  ------")
        scenarios = len({c.scenario for c in self.checks} - {"demo"})
        if not self.failed:
            self.out(f"demo passed: {len(self.checks)} checks in {scenarios} scenario(s)")
        else:
            named = "; ".join(f"{c.scenario}: {c.name}" + (f" ({c.figure})" if c.figure else "") for c in self.failed)
            self.out(f"demo FAILED: {len(self.failed)} of {len(self.checks)} checks failed: {named}")
        sys.stdout.flush()
