"""The supervisor of `taskutils-worker --processes N`: N worker processes, kept alive.

Python runs one thread at a time per process, so a machine's cores are used by processes: one
worker process per free core. The supervisor starts each child as `python -m taskutils.cli` with
the same arguments, in a process group of its own (a terminal's Ctrl-C reaches the supervisor
only, which passes it on once). It forwards SIGTERM and SIGINT: the first drains (each child
finishes its running tasks within its grace period and exits 0), a second stops them at once.
A child that dies is started again after a delay that doubles from RESTART_FIRST_DELAY up to
RESTART_MAX_DELAY (back to the first once a child stayed up STABLE_SECONDS). The supervisor
exits non-zero only when it cannot keep them alive: a child exits with code 2 (its settings are
wrong, and every restart would fail the same way), or one dies within STABLE_SECONDS of its
start GIVE_UP_AFTER times in a row. A child whose supervisor is gone drains and exits by itself.
With --http, the supervisor serves /metrics (every child's figures, through a private folder of
prometheus_client's multiprocess files, made at start and removed at exit), /livez and /readyz;
the children serve nothing.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Sequence

from ..backends.redis import RedisBackend
from ..config import DEFAULT_REDIS_URL, Settings
from ..http_endpoints import serve
from .probes import supervisor_routes

log = logging.getLogger("taskutils.supervisor")
RESTART_FIRST_DELAY, RESTART_MAX_DELAY = 1.0, 30.0
STABLE_SECONDS = 10.0
GIVE_UP_AFTER = 5
LOOP_STALL_SECONDS = 10.0  # the supervisor's loop turns every 0.2 s: silent this long, it is stuck
BAD_SETTINGS = 2  # a child's exit code for settings or imports that cannot work
SUPERVISOR_ENV = "TASKUTILS_SUPERVISOR_PID"  # set in each child: the pid it checks is still its parent


@dataclass
class Child:
    """One slot of the supervisor: its current process, when it started, how it has fared."""

    slot: int
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    quick_deaths: int = 0  # deaths within STABLE_SECONDS of the start, in a row
    delay: float = RESTART_FIRST_DELAY
    restart_at: float | None = None


class Supervisor:
    """Runs `count` children `command` and keeps them alive until told to stop."""

    def __init__(self, arguments: Sequence[str], count: int, settings: Settings | None = None):
        self._command = [sys.executable, "-m", "taskutils.cli", *arguments, "--processes", "1"]
        self._environment = dict(os.environ, TASKUTILS_PROCESSES="1", **{SUPERVISOR_ENV: str(os.getpid())})
        self._children = [Child(slot) for slot in range(count)]
        self._signals: list[int] = []
        self._forwarded = 0  # how many of them were passed on to the children
        self._signalled = threading.Event()
        self._settings = settings or Settings()
        self._metrics_folder: str | None = None  # the children's metrics (--http), removed at exit
        self._turned_at = time.monotonic()

    def run(self) -> int:
        """Until stopped: returns 0 if every child drained and exited 0, else non-zero."""
        backend = None
        try:
            if self._settings.http:
                self._metrics_folder = tempfile.mkdtemp(prefix="taskutils-metrics-")
                self._environment["PROMETHEUS_MULTIPROC_DIR"] = self._metrics_folder
                backend = RedisBackend.from_url(self._settings.redis_url or DEFAULT_REDIS_URL, self._settings.broker_timeout)
                try:
                    serve(self._settings.http, supervisor_routes(backend, self._metrics_folder, self._stalled, self._unready))
                except OSError as exc:
                    log.error("--http %s: cannot listen there: %s", self._settings.http, exc)
                    return 1
            return self._supervise()
        finally:
            if self._metrics_folder:
                shutil.rmtree(self._metrics_folder, ignore_errors=True)
            if backend is not None:
                backend.close()

    def _stalled(self) -> str | None:
        silent = time.monotonic() - self._turned_at
        return f"the supervisor's loop has not turned for {silent:.0f}s" if silent > LOOP_STALL_SECONDS else None

    def _unready(self) -> str | None:
        if self._signals:
            return "draining: stopping"
        down = [child.slot for child in self._children if child.process is None or child.process.poll() is not None]
        return f"worker process(es) {', '.join(map(str, down))} not running" if down else None

    def _supervise(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        log.info("supervisor %d: starting %d worker processes", os.getpid(), len(self._children))
        for child in self._children:
            self._start(child)
        final = 0
        while any(child.process is not None or child.restart_at is not None for child in self._children):
            self._turned_at = time.monotonic()
            self._signalled.wait(0.2)
            self._signalled.clear()
            self._forward_signals()
            for child in self._children:
                code = self._reap(child)
                if code is None:
                    continue
                if self._signals:  # a child that SIGTERM ended before it could drain had nothing to drain
                    final = final or (0 if code in (0, -signal.SIGTERM) else max(code, 1))
                elif code == BAD_SETTINGS or child.quick_deaths >= GIVE_UP_AFTER:
                    return self._give_up(child, code)
        return final

    def _start(self, child: Child) -> None:
        child.process = subprocess.Popen(self._command, env=self._environment, start_new_session=True)
        child.started_at, child.restart_at = time.monotonic(), None
        log.info("worker process %d started (slot %d)", child.process.pid, child.slot)

    def _reap(self, child: Child) -> int | None:
        """Notice a child that exited (returns its code), or start one again when its delay is over."""
        now = time.monotonic()
        if child.process is None:
            if child.restart_at is not None and now >= child.restart_at and not self._signals:
                self._start(child)
            return None
        code = child.process.poll()
        if code is None:
            return None
        pid, child.process = child.process.pid, None
        if self._metrics_folder:  # its gauges stop counting; its counters stay in the sums
            mark_process_dead(pid, self._metrics_folder)
        if self._signals:  # stopping: it drained (0) or was stopped at once
            log.info("worker process %d exited with code %d", pid, code)
            return code
        lived = now - child.started_at
        child.quick_deaths = child.quick_deaths + 1 if lived < STABLE_SECONDS else 0
        child.delay = RESTART_FIRST_DELAY if lived >= STABLE_SECONDS else min(child.delay * 2, RESTART_MAX_DELAY)
        child.restart_at = now + child.delay
        log.warning("worker process %d exited with %s after %.1fs; starting another in %.0fs",
                    pid, _exit_text(code), lived, child.delay)
        return code

    def _on_signal(self, signum: int, frame: object) -> None:
        self._signals.append(signum)
        self._signalled.set()

    def _forward_signals(self) -> None:
        while len(self._signals) > self._forwarded:
            first = self._forwarded == 0
            name = signal.Signals(self._signals[self._forwarded]).name
            log.info("%s: %s", name, "draining the worker processes" if first else "stopping them at once")
            for child in self._children:
                child.restart_at = None
                if child.process is not None and child.process.poll() is None:
                    child.process.send_signal(signal.SIGTERM if first else signal.SIGINT)
            self._forwarded += 1

    def _give_up(self, child: Child, code: int) -> int:
        reason = "its settings cannot work" if code == BAD_SETTINGS else f"it died {child.quick_deaths} times in a row"
        log.error("cannot keep worker process %d alive (%s): stopping the others", child.slot, reason)
        for other in self._children:
            if other.process is not None and other.process.poll() is None:
                other.process.send_signal(signal.SIGTERM)
        for other in self._children:
            if other.process is not None:
                other.process.wait()
        return BAD_SETTINGS if code == BAD_SETTINGS else 1


def _exit_text(code: int) -> str:
    return f"signal {signal.Signals(-code).name}" if code < 0 else f"code {code}"


def mark_process_dead(pid: int, folder: str) -> None:
    """Drop a dead child's live gauges from the metrics `folder` (prometheus_client multiprocess)."""
    try:
        from prometheus_client import multiprocess
    except ImportError:
        return
    multiprocess.mark_process_dead(pid, folder)


def orphaned() -> bool:
    """True in a child of a supervisor that is gone."""
    supervisor = os.environ.get(SUPERVISOR_ENV)
    return supervisor is not None and os.getppid() != int(supervisor)
