"""Queue-wide Prometheus gauges, read from the broker once per scrape by one exporter (`taskutils
exporter`), not by every worker: tasks per state, live workers, the oldest queued task's wait,
and for keyed queues the keys with the most backlog (at most TOP_KEYS a queue, so that label
values stay bounded)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

from .admin import fleet_status
from .backends.base import Backend
from .browse import key_backlog, oldest_queued

TOP_KEYS = 10


class QueueCollector:
    """A prometheus_client collector over a backend: register it, and each scrape reads Redis."""

    def __init__(self, backend: Backend):
        self.backend = backend

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        status = fleet_status(self.backend)
        tasks = GaugeMetricFamily("taskutils_queue_tasks", "Tasks of a queue by state", labels=["queue", "state"])
        workers = GaugeMetricFamily("taskutils_workers", "Live workers consuming a queue", labels=["queue"])
        paused = GaugeMetricFamily("taskutils_queue_paused", "1 if the queue is paused across the fleet", labels=["queue"])
        oldest = GaugeMetricFamily("taskutils_oldest_queued_seconds", "How long the oldest queued task has waited since "
                                   "its enqueue (among the first 100 in dispatch order)", labels=["queue"])
        keys = GaugeMetricFamily("taskutils_key_backlog", f"Ready tasks of the {TOP_KEYS} keys with the most, per keyed queue",
                                 labels=["queue", "key"])
        consumers = Counter(queue for worker in status.workers for queue in worker.get("queues", "").split(",") if queue)
        for queue, counts in status.queues.items():
            for state in ("scheduled", "queued", "running", "failed"):
                tasks.add_metric([queue, state], getattr(counts, state))
            workers.add_metric([queue], consumers[queue])
            paused.add_metric([queue], 1 if queue in status.paused else 0)
            waited = oldest_queued(self.backend, queue) if counts.queued else 0.0
            if waited is not None:
                oldest.add_metric([queue], waited)
            for key, backlog in key_backlog(self.backend, queue, TOP_KEYS):
                keys.add_metric([queue, key], backlog)
        yield from (tasks, workers, paused, oldest, keys)
