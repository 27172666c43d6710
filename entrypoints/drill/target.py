"""The running `chat4all up` a drill works against, found through its ``<data dir>/stack.json``.

A drill is a client of the stack: it talks to the HTTP API and to the channel sandbox like any
application, reads PostgreSQL only to check what it was told, and signals the stack's processes
the way an operator (or the kernel's OOM killer) would.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
from pydantic import ValidationError

from entrypoints.settings import Settings
from entrypoints.stack.state import process_alive, read_state, supervisor_alive


class DrillError(Exception):
    """The drill cannot run (no stack, a runtime it needs is missing) or its stack did not recover in time."""


@attrs.frozen
class Target:
    """One running stack: where its API and sandbox listen, its database, and its processes."""

    data_dir: Path
    http_url: str
    database_url: str
    sandbox_url: str | None

    @classmethod
    def from_environment(cls) -> Target:
        """The stack running on CHAT4ALL_DATA_DIR (the drill reads the same CHAT4ALL_* settings as `up`)."""
        try:
            settings = Settings()
        except ValidationError as exc:
            raise DrillError(f"invalid CHAT4ALL_* settings:\n{exc}") from exc
        return cls.discover(settings)

    @classmethod
    def discover(cls, settings: Settings) -> Target:
        data_dir = settings.data_dir.expanduser().resolve()
        state = read_state(data_dir)
        if state is None or not supervisor_alive(state):
            raise DrillError(
                f"no chat4all stack is running on {data_dir}: start one with `chat4all up` "
                "(with the same CHAT4ALL_DATA_DIR) and run the drill beside it"
            )
        urls = {rt["name"]: rt.get("url") for rt in state.get("runtimes") or [] if isinstance(rt, dict)}
        if not urls.get("http"):
            raise DrillError(f"the stack on {data_dir} runs no HTTP API")
        pg = state.get("postgres")
        database_url = pg.get("url") if isinstance(pg, dict) else settings.database_url
        if not database_url:
            raise DrillError("the stack's database is external: set CHAT4ALL_DATABASE_URL for the drill too")
        return cls(data_dir, str(urls["http"]), str(database_url), urls.get("sandbox"))

    # -- processes -------------------------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        state = read_state(self.data_dir)
        if state is None or not supervisor_alive(state):
            raise DrillError(f"the stack on {self.data_dir} stopped during the drill")
        return state

    def runtime(self, name: str) -> dict[str, Any]:
        for rt in self.state().get("runtimes") or []:
            if isinstance(rt, dict) and rt.get("name") == name:
                return rt
        raise DrillError(f"the stack runs no runtime named {name!r} (see `chat4all ps`)")

    def runtime_names(self) -> list[str]:
        return [str(rt["name"]) for rt in self.state().get("runtimes") or [] if isinstance(rt, dict)]

    def service(self, name: str) -> dict[str, Any]:
        """``postgres``, ``kafka`` or ``redis`` as stack.json lists it; DrillError when the stack does not run it."""
        entry = self.state().get(name)
        if not isinstance(entry, dict) or not entry.get("pid"):
            raise DrillError(f"the stack does not run an embedded {name} (it uses an external one): nothing to restart")
        return entry

    def kill_runtime(self, name: str, sig: signal.Signals = signal.SIGKILL) -> int:
        """Signal runtime ``name``'s process (not its group: a crash takes the leader, the supervisor the rest)."""
        pid = int(self.runtime(name)["pid"])
        os.kill(pid, sig)
        return pid

    def kill_service(self, name: str, sig: signal.Signals = signal.SIGKILL) -> int:
        pid = int(self.service(name)["pid"])
        os.kill(pid, sig)
        return pid

    def wait_replaced(self, name: str, old_pid: int, timeout: float) -> float:
        """Wait until runtime (or service) ``name`` runs again under a new pid; the seconds it took."""

        def replaced() -> bool:
            entry = self._entry(name) or {}
            pid = entry.get("pid")
            return pid not in (None, old_pid) and process_alive(pid, entry.get("create_time"))

        return wait_for(replaced, timeout, f"{name} to be restarted by the supervisor")

    def _entry(self, name: str) -> dict[str, Any] | None:
        state = self.state()
        service = state.get(name)
        if isinstance(service, dict):
            return service
        for rt in state.get("runtimes") or []:
            if isinstance(rt, dict) and rt.get("name") == name:
                return rt
        return None


def wait_for(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> float:
    """Poll ``condition`` until true; the seconds it took. DrillError after ``timeout``."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise DrillError(f"gave up after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
    return time.monotonic() - start
