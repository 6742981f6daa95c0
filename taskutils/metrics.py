"""Prometheus metrics of one worker process (the optional extra taskutils[metrics]).

Names follow Prometheus conventions; the README's "Operating a fleet" lists them. Counting is a
few in-memory increments per task. Under `--processes N` the supervisor gives its children a
private folder (PROMETHEUS_MULTIPROC_DIR, made by the supervisor, removed at its exit) and
serves all their figures at one /metrics: prometheus_client's multiprocess mode.
"""

from __future__ import annotations

from typing import Any

try:
    import prometheus_client
except ImportError:  # the extra is not installed: --http says so, workers count nothing
    prometheus_client = None  # type: ignore[assignment]

OUTCOMES = ("done", "failed", "retried", "throttled", "cancelled", "handed_back", "quarantined")
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)
MISSING = "Prometheus metrics need prometheus_client: pip install 'taskutils[metrics]'"


def available() -> bool:
    return prometheus_client is not None


class WorkerMetrics:
    """The counters, histograms and gauges of one worker process."""

    def __init__(self, registry: Any = None):
        if prometheus_client is None:
            raise RuntimeError(MISSING)
        p, more = prometheus_client, {"registry": registry} if registry is not None else {}
        self.tasks = p.Counter("taskutils_tasks", "Tasks that ended here, by outcome", ["queue", "function", "outcome"], **more)
        self.duration = p.Histogram("taskutils_task_duration_seconds", "How long tasks ran", ["queue", "function"],
                                    buckets=DURATION_BUCKETS, **more)
        self.wait = p.Histogram("taskutils_queue_wait_seconds", "From enqueue to first start (the producer's clock)",
                                ["queue"], buckets=WAIT_BUCKETS, **more)
        self.running = p.Gauge("taskutils_tasks_running", "Tasks running now", ["queue"], multiprocess_mode="livesum", **more)
        self.threads = p.Gauge("taskutils_worker_threads", "Runner threads", multiprocess_mode="livesum", **more)
        self.lease_lost = p.Counter("taskutils_lease_lost", "Leases lost while their task ran here (a stall past the "
                                    "visibility timeout)", **more)
        self.broker_errors = p.Counter("taskutils_broker_errors", "Broker calls that failed (outages, refusals)", **more)
