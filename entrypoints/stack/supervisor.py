"""A small process supervisor: every runtime is its own OS process group, restarted with backoff when it dies.

Single-threaded by design: the owner calls :meth:`Supervisor.poll` every ~0.5 s (or :meth:`Supervisor.run`),
so signal handling stays in the owner's hands and no thread races a ``fork``.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import psutil

log = logging.getLogger("chat4all.supervisor")

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class RuntimeSpec:
    """How to run one runtime: ``env`` is its whole environment (``None``: inherit ours)."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str] | None = None
    url: str | None = None
    health_url: str | None = None


@dataclass(frozen=True)
class Backoff:
    """Restart delays: ``initial``, ``initial * factor``, ... capped at ``cap``.

    A runtime that ran at least ``reset_after`` seconds before dying starts again from ``initial``.
    """

    initial: float = 1.0
    factor: float = 2.0
    cap: float = 30.0
    reset_after: float = 60.0

    def delay(self, failures: int) -> float:
        """The wait before restarting after the ``failures``-th consecutive failure (1-based)."""
        exponent = min(max(failures - 1, 0), 64)
        return float(min(self.cap, self.initial * self.factor**exponent))


@dataclass
class Runtime:
    """The live state of one supervised runtime."""

    spec: RuntimeSpec
    process: subprocess.Popen[bytes] | None = None
    pid: int | None = None  # the current or, while it is down, the last pid
    restarts: int = 0
    failures: int = 0  # consecutive short-lived runs; drives the backoff
    started_at: float | None = None  # clock() of the current run
    restart_at: float | None = None  # clock() at which a dead runtime is started again
    last_exit: int | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"code {returncode}"


def http_ok(url: str, timeout: float = 1.0) -> bool:
    """True when ``url`` answers 2xx (proxies from the environment are ignored: this is local)."""
    try:
        with _NO_PROXY.open(url, timeout=timeout) as response:
            return 200 <= int(response.status) < 300
    except urllib.error.HTTPError as exc:
        exc.close()
        return False
    except (OSError, ValueError):
        return False


def _signal_group(pgid: int, sig: signal.Signals) -> bool:
    """Signal a whole process group; False when the group is gone."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def group_alive(pgid: int) -> bool:
    """Does process group ``pgid`` still have a member that is not a zombie?

    Zombies count as gone: an orphan's zombie waits for an init that, in some containers, never reaps it.
    """
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    for process in psutil.process_iter(["status"]):
        try:
            if process.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(process.pid) == pgid:
                return True
        except (OSError, psutil.Error):
            continue
    return False


class Supervisor:
    """Starts every runtime in its own session, restarts the ones that die and stops them all."""

    def __init__(
        self,
        specs: Sequence[RuntimeSpec],
        *,
        backoff: Backoff | None = None,
        stop_timeout: float = 10.0,
        on_change: Callable[[Supervisor], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"runtime names must be unique: {names}")
        self.runtimes = [Runtime(spec) for spec in specs]
        self.backoff = backoff or Backoff()
        self.stop_timeout = stop_timeout
        self.on_change = on_change
        self.clock = clock
        self.stopped = False

    def __getitem__(self, name: str) -> Runtime:
        for rt in self.runtimes:
            if rt.name == name:
                return rt
        raise KeyError(name)

    def _changed(self) -> None:
        if self.on_change is not None:
            try:
                self.on_change(self)
            except Exception:
                log.exception("on_change callback failed")

    def _spawn(self, rt: Runtime) -> bool:
        now = self.clock()
        try:
            rt.process = subprocess.Popen(  # noqa: S603 - argv comes from our own runtime table
                list(rt.spec.argv),
                env=dict(rt.spec.env) if rt.spec.env is not None else None,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as exc:
            rt.process = None
            rt.failures += 1
            delay = self.backoff.delay(rt.failures)
            rt.restart_at = now + delay
            log.error("runtime %s could not be started (%s); retrying in %.1fs", rt.name, exc, delay)
            return False
        rt.pid = rt.process.pid
        rt.started_at = now
        rt.restart_at = None
        return True

    def start(self) -> None:
        """Start every runtime (each in a new session, so it is its own process group)."""
        self.stopped = False
        for rt in self.runtimes:
            if self._spawn(rt):
                log.info("runtime %s started (pid %d)", rt.name, rt.pid)
        self._changed()

    def poll(self) -> bool:
        """Reap runtimes that exited, schedule their restart, restart those due. True if anything changed."""
        if self.stopped:
            return False
        changed = False
        for rt in self.runtimes:
            process = rt.process
            if process is not None and process.poll() is not None:
                now = self.clock()
                ran = now - (rt.started_at if rt.started_at is not None else now)
                # the leader died: whatever it left in its group (workers holding the port) goes too
                _signal_group(process.pid, signal.SIGKILL)
                rt.process = None
                rt.last_exit = process.returncode
                if ran >= self.backoff.reset_after:
                    rt.failures = 0
                rt.failures += 1
                delay = self.backoff.delay(rt.failures)
                rt.restart_at = now + delay
                log.warning(
                    "runtime %s (pid %d) exited with %s after %.1fs; restarting in %.1fs",
                    rt.name,
                    process.pid,
                    describe_exit(process.returncode),
                    ran,
                    delay,
                )
                changed = True
            if rt.process is None and rt.restart_at is not None and self.clock() >= rt.restart_at:
                rt.restarts += 1
                if self._spawn(rt):
                    log.warning("runtime %s restarted (pid %d, restart #%d)", rt.name, rt.pid, rt.restarts)
                changed = True
        if changed:
            self._changed()
        return changed

    def run(self, should_stop: Callable[[], bool], interval: float = 0.5) -> None:
        """Poll until ``should_stop()``; the caller then calls :meth:`stop`."""
        while not should_stop():
            self.poll()
            deadline = self.clock() + interval
            while not should_stop() and self.clock() < deadline:
                time.sleep(min(0.05, interval))

    def wait_ready(self, timeout: float, should_stop: Callable[[], bool] = lambda: False) -> dict[str, bool]:
        """Poll (and supervise) until each runtime's health URL answers 2xx, or ``timeout`` passes."""
        ready = {rt.name: rt.spec.health_url is None for rt in self.runtimes}
        deadline = self.clock() + timeout
        while not all(ready.values()) and not should_stop() and self.clock() < deadline:
            self.poll()
            for rt in self.runtimes:
                if not ready[rt.name] and rt.running and rt.spec.health_url is not None:
                    ready[rt.name] = http_ok(rt.spec.health_url, timeout=1.0)
            if not all(ready.values()):
                time.sleep(0.2)
        return ready

    def add(self, spec: RuntimeSpec) -> Runtime:
        """Start one more runtime and supervise it like the others (``chat4all scale`` adds workers at run time)."""
        if self.stopped:
            raise RuntimeError(f"cannot add runtime {spec.name}: the supervisor is stopped")
        if any(rt.name == spec.name for rt in self.runtimes):
            raise ValueError(f"runtime names must be unique: {spec.name} is supervised already")
        rt = Runtime(spec)
        self.runtimes.append(rt)
        if self._spawn(rt):
            log.info("runtime %s added (pid %d)", rt.name, rt.pid)
        self._changed()
        return rt

    def remove(self, *names: str) -> None:
        """Stop these runtimes for good, like :meth:`stop` does (SIGTERM, ``stop_timeout``, SIGKILL), and forget them.

        They leave :attr:`runtimes` before they are signalled, so no :meth:`poll` restarts them. Several names are
        stopped together: scaling down from four to one waits ``stop_timeout`` at most once, not three times.
        """
        unknown = [name for name in names if all(rt.name != name for rt in self.runtimes)]
        if unknown:
            raise KeyError(", ".join(unknown))
        leaving = [rt for rt in self.runtimes if rt.name in names]
        self.runtimes = [rt for rt in self.runtimes if rt.name not in names]
        self._terminate(leaving)
        for rt in leaving:
            log.info(
                "runtime %s removed (pid %s, %s)",
                rt.name,
                rt.pid,
                "never started" if rt.last_exit is None else describe_exit(rt.last_exit),
            )
        self._changed()

    def stop(self) -> None:
        """SIGTERM every runtime's process group, wait ``stop_timeout``, SIGKILL what is left."""
        self.stopped = True
        self._terminate(self.runtimes)
        self._changed()

    def _terminate(self, runtimes: Sequence[Runtime]) -> None:
        """SIGTERM the process groups of ``runtimes`` at once, wait ``stop_timeout`` for them all, SIGKILL the rest."""
        groups: dict[int, Runtime] = {}
        for rt in runtimes:
            rt.restart_at = None
            if rt.process is not None:
                groups[rt.process.pid] = rt
                _signal_group(rt.process.pid, signal.SIGTERM)
                log.info("stopping runtime %s (pid %d)", rt.name, rt.process.pid)
        deadline = self.clock() + self.stop_timeout
        alive = set(groups)
        while alive and self.clock() < deadline:
            for pgid in list(alive):
                process = groups[pgid].process
                if process is not None:
                    process.poll()  # reap the leader, or its zombie keeps the group alive
                if not group_alive(pgid):
                    alive.discard(pgid)
            if alive:
                time.sleep(0.05)
        for pgid in alive:
            log.warning(
                "runtime %s (pid %d) ignored SIGTERM for %.0fs; killing it", groups[pgid].name, pgid, self.stop_timeout
            )
            _signal_group(pgid, signal.SIGKILL)
        for pgid, rt in groups.items():
            process = rt.process
            if process is not None:
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL is not ignorable
                    log.error("runtime %s (pid %d) survived SIGKILL", rt.name, pgid)
                rt.last_exit = process.returncode
            rt.process = None
