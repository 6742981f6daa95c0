"""How many of a worker's runner threads take claims at once.

Python runs one thread at a time (the GIL). Once a worker's tasks keep its process's CPU busy,
more runner threads add no throughput, only contention: each hand-over of the interpreter is a
thread switch, and eight threads running a short task that makes one Redis round trip use about
40% more CPU per task than two do (docs/PERFORMANCE.md). So a worker starts with every runner
taking claims; then, once per window, it reads how much CPU its process used. Saturated: one
runner fewer takes claims, down to two. If the window after such a step is no longer saturated
and finished fewer tasks per second than the one before it, by more than TOLERANCE, while claims
wait, the step went past the point where the tasks' own waiting (I/O) needed the runners: it is
undone, and the pacer goes no lower until the worker is next idle. Below the low mark with
claims waiting: one more. The other runners park. A task that has run for STALL_SECONDS no longer
counts against the number, so a long task never holds back the claims queued behind it for more
than about that long. Once the worker is idle, it starts over: the parked runners return and the
count starts again from all of them.

Given a CpuPin (affinity.py; taskutils-worker gives one), the first step on a saturated window,
when the process uses no more than about one core, is to keep every thread on one CPU; the window
after it decides: fewer tasks per second by more than TOLERANCE, with claims waiting, and the
threads go back to every CPU, and stay there until the worker is next idle. An idle worker
unpins, so the next work is measured afresh.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Callable, Protocol

log = logging.getLogger("taskutils.worker")

WINDOW_SECONDS = 0.05  # how often the CPU use and the task rate are read
SATURATED = 0.9  # CPU seconds per second at or above which the interpreter counts as busy all the time
UNDERUSED = 0.75  # below this, with claims waiting, one more runner takes claims
MIN_ACTIVE = 2  # never fewer runners taking claims than this: one can run while the other waits on I/O
TOLERANCE = 0.08  # a step down that costs more than this share of the task rate is undone
STALL_SECONDS = 0.05  # a task running this long stops counting; parked runners look again this often
ONE_CORE = 1.1  # CPU seconds per second above which the process runs threads in parallel: never pinned


def gil_enabled() -> bool:
    """False on a free-threaded Python, where threads do run in parallel."""
    return getattr(sys, "_is_gil_enabled", lambda: True)()


class Pin(Protocol):
    """Keeps the process's threads on one CPU and lets them go (affinity.CpuPin)."""

    def pin(self) -> bool:
        """Keep every thread on one CPU; False if none is free."""

    def unpin(self) -> None:
        """Let every thread run on every CPU again."""


class RunnerPacer:
    """Decides when a runner parks, when a parked one goes back to taking claims, and when the
    process keeps to one CPU.

    Not thread-safe: the worker calls it with its state lock held."""

    def __init__(self, threads: int, cpu_seconds: Callable[[], float] = time.process_time, pin: Pin | None = None):
        self.threads = threads
        self.parked = 0
        self._finished = 0  # tasks finished so far
        self._pin = pin if gil_enabled() else None
        self._watches = gil_enabled() and (threads > MIN_ACTIVE or self._pin is not None)
        self._cpu_seconds = cpu_seconds
        self._started: dict[int, float] = {}  # runner -> when its current task started
        self.pinned = False
        self.start_over()

    def start_over(self) -> None:
        """The worker holds nothing: every runner may take claims, the threads may run on every CPU,
        and the next work is measured afresh."""
        self.target = self.threads  # runners that may take claims at once, stalled ones not counted
        self.floor = min(MIN_ACTIVE, self.threads)  # the target goes no lower (raised where a step down lost tasks)
        self._window: tuple[float, float, int] | None = None  # (wall, cpu, tasks finished) at the window's start
        self._rate_before_step: float | None = None  # tasks per second in the window before a step
        self._pinned_last = False  # that step kept the threads to one CPU (else: one runner fewer)
        self._may_pin = self._pin is not None  # not undone since the worker was last idle
        if self.pinned:
            self._set_pinned(False)

    def _set_pinned(self, pinned: bool) -> bool:
        """Pin or unpin the process; whether it is now as asked. Called on a runner thread, so
        nothing raised here may escape: a pin that fails is not tried again until idle."""
        assert self._pin is not None
        try:
            if pinned:
                self.pinned = self._pin.pin()
            else:
                self._pin.unpin()
                self.pinned = False
        except Exception:
            log.exception("could not %s this process's threads", "pin" if pinned else "unpin")
            self._may_pin = False
            return False
        return self.pinned == pinned

    @property
    def running(self) -> int:
        """Runners running a task now."""
        return len(self._started)

    def started(self, runner: int, now: float) -> None:
        self._started[runner] = now

    def finished(self, runner: int, now: float, backlog: bool) -> tuple[bool, bool]:
        """A runner finished its task (`backlog`: claims wait in the inbox).
        Returns (this runner parks, a parked runner should wake)."""
        del self._started[runner]
        self._finished += 1
        if not self._watches:
            return False, False
        wake = self._adjust(now, backlog) and self.parked > 0
        active = self.threads - self.parked
        park = active > self.target and active - self._stalled(now) > self.target
        if park:
            self.parked += 1
        return park, wake

    def may_resume(self, now: float, backlog: bool) -> bool:
        """Whether a parked runner should take claims again: they wait, and too few runners that
        are not stalled take them."""
        return backlog and self.threads - self.parked - self._stalled(now) < self.target

    def resumed(self) -> None:
        """A parked runner takes claims again."""
        self.parked -= 1

    def _stalled(self, now: float) -> int:
        """Runners whose current task has run for STALL_SECONDS or more."""
        return sum(1 for since in self._started.values() if now - since >= STALL_SECONDS)

    def _adjust(self, now: float, backlog: bool) -> bool:
        """Once a window: if the CPU was saturated, pin to one CPU first, then one runner fewer;
        with claims waiting, undo a step that lost tasks (and no lower, or no pinning, from then
        on), or one runner more if the CPU was underused. True if the target rose."""
        if self._window is not None and now - self._window[0] < WINDOW_SECONDS:
            return False
        cpu = self._cpu_seconds()  # a system call: read once a window, not once a task
        if self._window is None:
            self._window = (now, cpu, self._finished)
            return False
        wall_start, cpu_start, finished_start = self._window
        self._window = (now, cpu, self._finished)
        use = (cpu - cpu_start) / (now - wall_start)
        rate = (self._finished - finished_start) / (now - wall_start)
        rate_before, self._rate_before_step = self._rate_before_step, None
        lost = backlog and rate_before is not None and rate < rate_before * (1 - TOLERANCE)
        if self._pinned_last:
            if not backlog:  # nothing waits to show the rate pinned: judge it in a later window
                self._rate_before_step = rate_before
                return False
            self._pinned_last = False
            if lost:  # the tasks ran side by side on several CPUs after all
                self._may_pin = False
                self._set_pinned(False)
                return False
        if use >= SATURATED:
            if self._may_pin and not self.pinned and use <= ONE_CORE:
                self._may_pin = self._pinned_last = self._set_pinned(True)  # no CPU free: not again until idle
            if not self._pinned_last:
                if self.target <= self.floor:
                    return False
                self.target -= 1
            self._rate_before_step = rate
            return False
        if lost:
            self.target += 1  # a step too far: the runners were needed for the tasks' waits
            self.floor = self.target
            return True
        if backlog and use < UNDERUSED and self.target < self.threads:
            self.target += 1
            return True
        return False
