"""No leaks: many no-op tasks through real workers leave no keys behind and the workers' memory settles."""

from __future__ import annotations

import time

import pytest
import redis

from taskutils import Task, TaskHandler

from . import fleet_tasks
from .conftest import wait_for
from .fleet import WorkerProcess


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def task_keys(client: redis.Redis) -> int:
    """Keys in the database but the per-minute history (one hash an hour per queue, kept a day)."""
    return sum(1 for key in client.scan_iter(count=1000) if b":hist:" not in key)


def run_many_noops(redis_url: str, tasks: int) -> dict[str, float]:
    client = redis.Redis.from_url(redis_url)
    args = ("--import", "tests.fleet_tasks", "--queue", "leaks", "--threads", "8", "--result-ttl", "1")
    workers = [WorkerProcess(redis_url, *args) for _ in range(2)]
    try:
        with TaskHandler(redis_url, max_num_threads=0, queue="leaks") as producer:
            producer.enqueue_tasks([Task(fleet_tasks.noop)] * 200)  # warm up
            assert producer.join(timeout=60)
            time.sleep(1.2)
            baseline_keys, baseline_memory = task_keys(client), client.info("memory")["used_memory"]
            rss_start = [rss_kib(worker.pid) for worker in workers]
            for start in range(0, tasks, 10_000):
                producer.enqueue_tasks([Task(fleet_tasks.noop)] * min(10_000, tasks - start))
            assert producer.join(timeout=600)
            rss_end = [rss_kib(worker.pid) for worker in workers]
            # expired keys are listed until Redis reclaims them (lazily, or by sampling 10 times a second)
            wait_for(lambda: task_keys(client) <= baseline_keys, timeout=60, what="results to expire and be reclaimed")
            # then Redis shrinks its key table on its own cron: give that a few seconds
            memory = lambda: client.info("memory")["used_memory"]  # noqa: E731
            wait_for(lambda: memory() - baseline_memory <= 20 * tasks, timeout=10, what="memory back to baseline", fail=False)
            keys, memory = task_keys(client), memory()
    finally:
        for worker in workers:
            worker.kill()
        client.close()
    return {
        "tasks": tasks,
        "keys_before": baseline_keys,
        "keys_after": keys,
        "bytes_left_per_task": round((memory - baseline_memory) / tasks, 2),
        "worker_rss_kib_start": max(rss_start),
        "worker_rss_kib_end": max(rss_end),
    }


def check(report: dict[str, float]) -> None:
    print("\n" + "\n".join(f"{name}: {value}" for name, value in report.items()))
    assert report["bytes_left_per_task"] <= 20


def test_no_leaks_short(redis_url):
    check(run_many_noops(redis_url, 5_000))


@pytest.mark.slow
def test_no_leaks_100k(redis_url):
    report = run_many_noops(redis_url, 100_000)
    check(report)
    assert report["worker_rss_kib_end"] - report["worker_rss_kib_start"] < 20_000, "worker memory keeps growing"
