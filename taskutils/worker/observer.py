"""What a worker tells about its tasks besides settling them: the per-minute history (tally.py)
and, when enabled, Prometheus metrics (metrics.py). One object the parts call; no broker calls."""

from __future__ import annotations

import time

from ..backends.records import Claim
from ..metrics import WorkerMetrics
from .tally import Tally


class Observer:
    """Counts task ends for the history, and for the metrics when there are metrics."""

    def __init__(self, metrics: WorkerMetrics | None = None, tally: Tally | None = None):
        self.metrics, self.tally = metrics, tally or Tally()
        self._started: dict[str, float] = {}  # running task id -> when it started (epoch seconds)

    def running_since(self) -> dict[str, float]:
        """Task id -> start time (epoch seconds) of the tasks running here now."""
        return self._started.copy()

    def started(self, claim: Claim, enqueued_at: float | None) -> None:
        """A task starts: its wait since enqueue counts on its first attempt only."""
        self._started[claim.task_id] = time.time()
        if self.metrics is None:
            return
        self.metrics.running.labels(claim.queue).inc()
        if enqueued_at is not None and claim.failures == 0 and claim.crashes == 0:
            self.metrics.wait.labels(claim.queue).observe(max(time.time() - enqueued_at, 0.0))

    def ended(self, claim: Claim, function: str, outcome: str, seconds: float | None) -> None:
        """A task ended with `outcome` after `seconds` of running (None: it never ran)."""
        self._started.pop(claim.task_id, None)
        self.tally.count(claim.queue, "failed" if outcome == "quarantined" else outcome)
        if self.metrics is None:
            return
        self.metrics.tasks.labels(claim.queue, function, outcome).inc()
        if seconds is not None:
            self.metrics.running.labels(claim.queue).dec()
            self.metrics.duration.labels(claim.queue, function).observe(seconds)

    def handed_back(self, claim: Claim) -> None:
        """A claim went back to its queue unstarted (the worker stopped, or the queue paused)."""
        if self.metrics is not None:
            self.metrics.tasks.labels(claim.queue, "", "handed_back").inc()

    def lease_lost(self, count: int = 1) -> None:
        if self.metrics is not None:
            self.metrics.lease_lost.inc(count)

    def broker_error(self) -> None:
        if self.metrics is not None:
            self.metrics.broker_errors.inc()
