"""The `taskutils` command: status of queues and workers, and the failed store."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from taskutils import InvalidRedisURL, Task, TaskHandler

from . import fleet_tasks
from .conftest import wait_for
from .fleet import ROOT, WorkerProcess, worker_command


def taskutils(redis_url: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = shutil.which("taskutils", path=str(Path(sys.executable).parent)) or "taskutils"
    env = dict(os.environ, TASKUTILS_REDIS_URL=redis_url, **(env or {}))
    return subprocess.run([command, *args], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_status_shows_counts_and_live_workers(redis_url):
    """A worker's running tasks are counted when status is read, not at its last heartbeat (the
    task starts right after the worker registered)."""
    worker = WorkerProcess(redis_url, "--import", "tests.fleet_tasks", "--threads", "3", "--queue", "busy")
    try:
        with TaskHandler(redis_url, max_num_threads=0, queue="busy") as producer:
            ref = producer.enqueue_task(Task(fleet_tasks.slow, ("status", 5.0)))
            producer.enqueue_tasks([Task(fleet_tasks.mark, ("later", "1"), delay=60)] * 2)
            wait_for(lambda: ref.status() == "running", what="running")
            done = taskutils(redis_url, "status")
        assert done.returncode == 0, done.stderr
        (row,) = [line.split() for line in done.stdout.splitlines() if line.startswith("busy ")]
        assert row == ["busy", "2", "0", "1", "0"]
        assert f"pid {worker.pid}: 3 threads, queues busy, 1 running" in done.stdout
        assert "1 live worker(s)" in done.stdout
    finally:
        worker.kill()


def test_failed_list_requeue_purge(redis_url):
    with TaskHandler(redis_url, max_num_threads=0) as producer, \
            TaskHandler(redis_url, max_num_threads=0, queue="other") as other:
        first, _ = producer.enqueue_tasks([Task("tests.fleet_tasks:nope"), Task("tests.fleet_tasks:gone")])
        third = other.enqueue_task(Task("tests.fleet_tasks:nope"))
        worker = WorkerProcess(redis_url, "--import", "tests.fleet_tasks", "--queue", "default", "--queue", "other")
        try:
            wait_for(lambda: len(producer.failed_tasks()) == 2 and len(other.failed_tasks()) == 1, what="three failures")
        finally:
            worker.kill()
        listed = taskutils(redis_url, "failed", "list", "--traceback")  # every queue by default
        assert listed.returncode == 0
        assert f"{first.id}  default  tests.fleet_tasks:nope" in listed.stdout and "has no function 'gone'" in listed.stdout
        assert f"{third.id}  other  tests.fleet_tasks:nope" in listed.stdout
        assert third.id not in taskutils(redis_url, "failed", "list", "--queue", "default").stdout
        assert taskutils(redis_url, "failed", "requeue").returncode == 2
        assert taskutils(redis_url, "failed", "requeue", first.id).stdout.strip() == "default: requeued 1 task(s)"
        assert first.status() == "queued"
        purged = taskutils(redis_url, "failed", "purge", "--all", "--queue", "default")
        assert purged.stdout.strip() == "default: purged 1 task(s)" and len(other.failed_tasks()) == 1
        assert producer.failed_tasks() == []


def test_failed_says_what_it_did_not_find(redis_url):
    with TaskHandler(redis_url, max_num_threads=0) as producer:
        producer.enqueue_task(Task(fleet_tasks.mark, ("known", "1")))
        typo = taskutils(redis_url, "failed", "list", "--queue", "defualt")
        assert typo.returncode == 1 and "no queue named 'defualt'" in typo.stderr and "default" in typo.stderr
        missing = taskutils(redis_url, "failed", "requeue", "no-such-id")
        assert missing.returncode == 1 and "no-such-id" in missing.stderr and "requeued" not in missing.stdout


def test_a_malformed_redis_url_is_a_clear_error_everywhere(redis_url):
    for url in ("127.0.0.1:6379", "http://user:hunter2@127.0.0.1:6379/0"):
        for done in (taskutils(url, "status"), worker_run(url)):
            assert done.returncode == 2, done
            output = done.stdout + done.stderr
            assert "is not a Redis URL" in output and "redis://[[user]:password@]host" in output
            assert "Traceback" not in output and "hunter2" not in output
    with pytest.raises(InvalidRedisURL, match="is not a Redis URL"):
        TaskHandler("127.0.0.1:6379")
    out_of_range = worker_run(redis_url.rsplit("/", 1)[0] + "/999")
    assert out_of_range.returncode == 1 and "DB index is out of range" in out_of_range.stderr
    assert "started" not in out_of_range.stderr and "Traceback" not in out_of_range.stderr


def worker_run(redis_url: str) -> subprocess.CompletedProcess[str]:
    """taskutils-worker on `redis_url`, to its end (it cannot start there)."""
    return subprocess.run([worker_command(), "--redis-url", redis_url, "--import", "tests.fleet_tasks"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT, check=False)


def test_unreachable_redis_is_a_clear_error():
    done = taskutils("redis://127.0.0.1:1/0", "status", env={"TASKUTILS_BROKER_TIMEOUT": "0.5"})
    assert done.returncode == 1 and "Redis is unreachable" in done.stderr and "Traceback" not in done.stderr


def test_cancel_ends_waiting_tasks_and_tells_running_ones(redis_url):
    worker = WorkerProcess(redis_url, "--import", "tests.fleet_tasks", "--threads", "1", "--queue", "cq")
    try:
        with TaskHandler(redis_url, max_num_threads=0, queue="cq") as producer:
            running = producer.enqueue_task(Task(fleet_tasks.slow, ("cancel-cli", 2.0)))
            wait_for(lambda: running.status() == "running", what="running")
            waiting = producer.enqueue_task(Task(fleet_tasks.mark, ("cancel-cli", "1")))
            done = taskutils(redis_url, "cancel", "--queue", "cq", waiting.id, running.id)
            assert done.returncode == 0, done.stderr
            assert f"{waiting.id}: cancelled" in done.stdout and f"{running.id}: running; told to stop" in done.stdout
            assert waiting.status() == "cancelled"
            running.result(timeout=20)
            again = taskutils(redis_url, "cancel", "--queue", "cq", running.id)
            assert again.returncode == 1 and "not cancelled" in again.stdout
    finally:
        worker.kill()


def test_status_lists_schedules_with_their_next_and_last_run(redis_url):
    from taskutils import Recurrent

    with TaskHandler(redis_url, max_num_threads=0, queue="timed") as producer:
        producer.recurrent_tasks["nightly"] = Recurrent(Task(fleet_tasks.mark, ("n", "1")), cron="0 3 * * *",
                                                        timezone="Europe/Paris", misfire="skip")
        producer.recurrent_tasks["often"] = Recurrent(Task(fleet_tasks.mark, ("o", "1")), 90.0)
        done = taskutils(redis_url, "status")
    assert done.returncode == 0, done.stderr
    assert "schedule timed/nightly: cron '0 3 * * *' Europe/Paris, misfire skip, next 20" in done.stdout
    assert ", last never" in done.stdout
    assert "schedule timed/often: every 90s, misfire coalesce" in done.stdout


def test_tasks_task_purge_and_cancel_from_the_command_line(redis_url, workers, client):
    crawl = TaskHandler(redis_url, max_num_threads=0, queue="crawl")
    slow = crawl.enqueue_task(Task(fleet_tasks.slow, ("cli-run", 30.0)))
    workers("--queue", "crawl", "--threads", "1", "--visibility-timeout", "0.6")
    wait_for(lambda: client.llen("cli-run:starts") == 1, what="the slow task to start")
    queued = crawl.enqueue_tasks([Task(fleet_tasks.mark, ("cli", "<script>" * 40), key="site", priority=3)] * 3)
    later = crawl.enqueue_task(Task(fleet_tasks.noop, delay=600))
    listed = wait_for(lambda: (lambda out: out if " for " in out else None)(taskutils(redis_url, "tasks").stdout),
                      what="the running task's start reported")
    rows = {line.split()[0]: line for line in listed.splitlines()[1:]}
    assert set(rows) == {slow.id, later.id, *(ref.id for ref in queued)}
    assert "running" in rows[slow.id] and ", on " in rows[slow.id]
    assert "site" in rows[queued[0].id] and rows[queued[0].id].rstrip().endswith("…")  # arguments cut short
    only = taskutils(redis_url, "tasks", "--state", "scheduled").stdout.splitlines()[1:]
    assert [line.split()[0] for line in only] == [later.id]
    shown = taskutils(redis_url, "task", queued[0].id).stdout
    assert "state      queued" in shown and "key        site" in shown and "crawl" in shown
    missing = taskutils(redis_url, "task", "0-1")
    assert missing.returncode == 1 and "no task '0-1'" in missing.stderr
    assert taskutils(redis_url, "tasks", "--queue", "typo").returncode == 1
    cancelled = taskutils(redis_url, "cancel", queued[2].id)  # no --queue: found on crawl
    assert cancelled.returncode == 0 and "cancelled" in cancelled.stdout
    unconfirmed = taskutils(redis_url, "purge", "crawl")  # no terminal to confirm on
    assert unconfirmed.returncode == 2 and "--yes" in unconfirmed.stderr
    purged = taskutils(redis_url, "purge", "crawl", "--yes")
    assert purged.returncode == 0 and purged.stdout.strip() == "crawl: purged 3 task(s); 1 running and 0 failed stay"
    assert crawl.backend.counts("crawl").pending == 1
    assert taskutils(redis_url, "purge", "nothing-here", "--yes").returncode == 1
    crawl.close()


def test_cancel_finds_each_ids_own_queue(redis_url):
    with TaskHandler(redis_url, max_num_threads=0, queue="one") as one, \
            TaskHandler(redis_url, max_num_threads=0, queue="two") as two:
        first, second = one.enqueue_task(Task(fleet_tasks.noop)), two.enqueue_task(Task(fleet_tasks.noop))
        done = taskutils(redis_url, "cancel", first.id, second.id)
        assert done.returncode == 0 and done.stdout.count("cancelled") == 2
        assert (first.status(), second.status()) == ("cancelled", "cancelled")
