"""Pausing a queue across the fleet, with real taskutils-worker processes on a real redis-server."""

from __future__ import annotations

import time

from taskutils import Task

from . import fleet_tasks
from .conftest import wait_for
from .test_admin_cli import taskutils
from .test_keyed_fleet import server_time


def test_a_paused_queue_stops_every_worker_within_a_second_and_loses_nothing(redis_url, producer, workers, client):
    """Two workers prefetching short tasks: once `taskutils pause` returns, no task starts later
    than a second after it; enqueues go on, `status` shows the pause; resumed, every task runs
    once (the claims held and not started went back, and were not run then)."""
    workers("--threads", "4", count=2)
    producer.enqueue_tasks([Task(fleet_tasks.paced, ("pause", 0.01)) for _ in range(3000)])
    wait_for(lambda: client.llen("pause:starts") >= 200, what="both workers busy")
    paused = taskutils(redis_url, "pause", "default")
    paused_at = server_time(client)
    assert paused.returncode == 0 and paused.stdout.strip() == "default: paused"
    time.sleep(1.2)
    started = client.llen("pause:starts")
    assert max(float(stamp) for stamp in client.lrange("pause:starts", -20, -1)) < paused_at + 1.0
    assert started < 3000, "the queue ran dry before the pause: nothing was tested"
    late = producer.enqueue_task(Task(fleet_tasks.paced, ("pause", 0.01)))
    status = taskutils(redis_url, "status")
    (row,) = [line.split() for line in status.stdout.splitlines() if line.startswith("default ")]
    assert row[-1] == "paused" and int(row[2]) == 3001 - started and row[3] == "0", status.stdout
    time.sleep(0.5)
    assert client.llen("pause:starts") == started  # still nothing started
    assert taskutils(redis_url, "resume", "default").stdout.strip() == "default: resumed"
    assert late.result(timeout=60) is None and producer.join(timeout=60)
    assert client.llen("pause:starts") == 3001  # each once
    assert producer.backend.counts("default").failed == 0
