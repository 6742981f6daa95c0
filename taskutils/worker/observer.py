"""What a worker tells about its tasks besides settling them: the per-minute history (tally.py)
and, when enabled, Prometheus metrics (metrics.py). One object the parts call; no broker calls.

Runner threads only append an event to a deque (atomic in CPython, no lock): counting under
locks from many threads at once cost a drain several percent, most of it waiting. `fold` turns
the events into the history's counts and the metrics, in batches, one thread at a time: the
exchanger before it sends a tally (at most once a second a queue), the heartbeat, the /metrics
route before it answers, and the worker as it stops. A failure to count is logged and costs
counts, never a settlement. A supervisor, which reads its children's
figures from their files, sees them a second old while they work, and their running gauges as
of their last heartbeat while they only run long tasks.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from typing import Any

from ..backends.records import Claim
from ..metrics import WorkerMetrics
from .tally import Tally

log = logging.getLogger("taskutils.worker")
FAILURE_LOG_SECONDS = 60.0


class Observer:
    """Counts task ends for the history, and for the metrics when there are metrics."""

    def __init__(self, metrics: WorkerMetrics | None = None, tally: Tally | None = None):
        self.metrics, self.tally = metrics, tally or Tally()
        self._started: dict[str, tuple[str, float]] = {}  # running task id -> its queue, its start (epoch seconds)
        self._events: deque[tuple[Any, ...]] = deque()
        self._folding = threading.Lock()
        self._series: dict[tuple[str, ...], Any] = {}  # labelled series, looked up once each
        self._running_queues: set[str] = set()  # queues whose running gauge is above zero
        self._failure_logged = -FAILURE_LOG_SECONDS

    # -- what the runners tell (no lock) -----------------------------------------------------

    def started(self, claim: Claim, enqueued_at: float | None) -> None:
        """A task starts: its wait since enqueue counts on its first attempt only."""
        now = time.time()
        self._started[claim.task_id] = (claim.queue, now)
        if self.metrics is not None and enqueued_at is not None and claim.failures == 0 and claim.crashes == 0:
            self._events.append((claim.queue, None, "waited", max(now - enqueued_at, 0.0), now))

    def ended(self, claim: Claim, function: str, outcome: str, seconds: float | None) -> None:
        """A task ended with `outcome` after `seconds` of running (None: it never ran)."""
        self._started.pop(claim.task_id, None)
        self._events.append((claim.queue, function, outcome, seconds, time.time()))

    def handed_back(self, claim: Claim) -> None:
        """A claim went back to its queue unstarted (the worker stopped, or the queue paused)."""
        self._events.append((claim.queue, "", "handed_back", None, time.time()))

    def lease_lost(self, count: int = 1) -> None:
        if self.metrics is not None:
            self.metrics.lease_lost.inc(count)

    def broker_error(self) -> None:
        if self.metrics is not None:
            self.metrics.broker_errors.inc()

    # -- what the other parts read -------------------------------------------------------------

    def running_since(self) -> dict[str, float]:
        """Task id -> start time (epoch seconds) of the tasks running here now."""
        return {task_id: started for task_id, (_, started) in self._started.copy().items()}

    def take_tally(self, queue: str, every: bool = False) -> tuple[tuple[int, int, int, int], ...]:
        """The history's counts of `queue` for an exchange (Tally.take), events folded first."""
        if every or self.tally.due(queue):
            self.fold()
        return self.tally.take(queue, every)

    def fold(self) -> None:
        """Turn the events so far into history counts and metrics; set the running gauges. Never
        raises: it runs on the exchanger, the heartbeat and a worker that stops, which must go
        on whatever counting does (a failure is logged at most once a minute)."""
        try:
            self._fold()
        except Exception:
            now = time.monotonic()
            if now - self._failure_logged >= FAILURE_LOG_SECONDS:
                self._failure_logged = now
                log.exception("counting task ends for the history and metrics failed; going on")

    def _fold(self) -> None:
        with self._folding:
            counted: Counter[tuple[str, str, str]] = Counter()
            for _ in range(len(self._events)):
                queue, function, outcome, seconds, at = self._events.popleft()
                if outcome == "waited":
                    self._queue_series(queue)[1].observe(seconds)
                    continue
                self.tally.count(queue, "failed" if outcome == "quarantined" else outcome, at)
                if self.metrics is not None:
                    counted[queue, function, outcome] += 1
                    if seconds is not None:
                        self._duration(queue, function).observe(seconds)
            for (queue, function, outcome), count in counted.items():
                self._counter(queue, function, outcome).inc(count)
            if self.metrics is not None:
                self._count_running()

    def _count_running(self) -> None:
        running = Counter(queue for queue, _ in self._started.copy().values())
        for queue in running.keys() | self._running_queues:
            self._queue_series(queue)[0].set(running[queue])
        self._running_queues = set(running)

    # -- the labelled series: labels() costs more than a count ---------------------------------

    def _counter(self, queue: str, function: str, outcome: str) -> Any:
        key = (queue, function, outcome)
        if key not in self._series:
            assert self.metrics is not None
            self._series[key] = self.metrics.tasks.labels(queue, function, outcome)
        return self._series[key]

    def _duration(self, queue: str, function: str) -> Any:
        key = (queue, function)
        if key not in self._series:
            assert self.metrics is not None
            self._series[key] = self.metrics.duration.labels(queue, function)
        return self._series[key]

    def _queue_series(self, queue: str) -> tuple[Any, Any]:
        """The running gauge and the queue wait histogram of `queue`."""
        key = (queue,)
        if key not in self._series:
            assert self.metrics is not None
            self._series[key] = (self.metrics.running.labels(queue), self.metrics.wait.labels(queue))
        return self._series[key]
