"""What a worker tells about its tasks besides settling them: the per-minute history (tally.py)
and, when enabled, Prometheus metrics (metrics.py). One object the parts call; no broker calls."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from ..backends.records import Claim
from ..metrics import WorkerMetrics
from .tally import Tally


class Observer:
    """Counts task ends for the history, and for the metrics when there are metrics."""

    def __init__(self, metrics: WorkerMetrics | None = None, tally: Tally | None = None):
        self.metrics, self.tally = metrics, tally or Tally()
        self._started: dict[str, tuple[str, float]] = {}  # running task id -> its queue, its start (epoch seconds)
        # the labelled series, looked up once each: labels() costs more than the count itself
        self._series: dict[tuple[str, ...], Any] = {}
        self._running_queues: set[str] = set()  # queues whose running gauge is above zero

    def running_since(self) -> dict[str, float]:
        """Task id -> start time (epoch seconds) of the tasks running here now."""
        return {task_id: started for task_id, (_, started) in self._started.copy().items()}

    def count_running(self) -> None:
        """Set the running gauges from the tasks running now: the exchanger calls this once per
        exchange, which costs less than counting at every start and end."""
        if self.metrics is None:
            return
        running = Counter(queue for queue, _ in self._started.copy().values())
        for queue in running.keys() | self._running_queues:
            self._queue_series(queue)[0].set(running[queue])
        self._running_queues = set(running)

    def started(self, claim: Claim, enqueued_at: float | None) -> None:
        """A task starts: its wait since enqueue counts on its first attempt only."""
        now = time.time()
        self._started[claim.task_id] = (claim.queue, now)
        if self.metrics is not None and enqueued_at is not None and claim.failures == 0 and claim.crashes == 0:
            self._queue_series(claim.queue)[1].observe(max(now - enqueued_at, 0.0))

    def ended(self, claim: Claim, function: str, outcome: str, seconds: float | None) -> None:
        """A task ended with `outcome` after `seconds` of running (None: it never ran)."""
        self._started.pop(claim.task_id, None)
        self.tally.count(claim.queue, "failed" if outcome == "quarantined" else outcome)
        if self.metrics is None:
            return
        self._count(claim.queue, function, outcome)
        if seconds is not None:
            key = (claim.queue, function)
            duration = self._series.get(key)
            if duration is None:
                duration = self._series[key] = self.metrics.duration.labels(claim.queue, function)
            duration.observe(seconds)

    def handed_back(self, claim: Claim) -> None:
        """A claim went back to its queue unstarted (the worker stopped, or the queue paused)."""
        if self.metrics is not None:
            self._count(claim.queue, "", "handed_back")

    def lease_lost(self, count: int = 1) -> None:
        if self.metrics is not None:
            self.metrics.lease_lost.inc(count)

    def broker_error(self) -> None:
        if self.metrics is not None:
            self.metrics.broker_errors.inc()

    def _count(self, queue: str, function: str, outcome: str) -> None:
        key = (queue, function, outcome)
        counter = self._series.get(key)
        if counter is None:
            assert self.metrics is not None
            counter = self._series[key] = self.metrics.tasks.labels(queue, function, outcome)
        counter.inc()

    def _queue_series(self, queue: str) -> tuple[Any, Any]:
        """The running gauge and the queue wait histogram of `queue`."""
        key = (queue,)
        series = self._series.get(key)
        if series is None:
            assert self.metrics is not None
            series = self._series[key] = (self.metrics.running.labels(queue), self.metrics.wait.labels(queue))
        return series
