"""Real taskutils-worker processes on a real redis-server: the fleet behaves like one handler."""

from __future__ import annotations

import signal

import pytest

from taskutils import Recurrent, Task, TaskFailed, TaskHandler

from . import fleet_tasks
from .conftest import wait_for
from .fleet import WorkerProcess


def test_each_task_runs_exactly_once_across_three_workers(producer, workers, client):
    workers("--threads", "4", count=3)
    producer.enqueue_tasks([Task(fleet_tasks.mark, ("runs", str(n))) for n in range(600)])
    assert producer.join(timeout=60)
    runs = client.hgetall("runs")
    assert len(runs) == 600 and set(runs.values()) == {b"1"}


def test_one_worker_thread_takes_tasks_in_priority_order(producer, workers, client):
    plan = [(0, "a"), (5, "b"), (0, "c"), (9, "d"), (5, "e")]
    producer.enqueue_tasks([Task(fleet_tasks.append, ("order", name), priority=p) for p, name in plan])
    workers("--threads", "1")
    assert producer.join(timeout=30)
    assert client.lrange("order", 0, -1) == [b"d", b"b", b"e", b"a", b"c"]


def test_global_cap_holds_across_processes(producer, workers, client):
    workers("--threads", "4", "--queue", "capped", "--max-concurrency", "3", count=3)
    capped = TaskHandler(producer.settings.redis_url, max_num_threads=0, queue="capped")
    capped.enqueue_tasks([Task(fleet_tasks.probe, ("cap", 0.05)) for _ in range(40)])
    assert capped.join(timeout=60)
    assert int(client.get("cap:peak")) == 3
    # short tasks: settled and claimed in the same round trips, and still never more than the cap
    capped.enqueue_tasks([Task(fleet_tasks.probe, ("short", 0.001)) for _ in range(1500)])
    assert capped.join(timeout=60)
    capped.close()
    assert int(client.get("short:peak")) <= 3


def test_recurrent_runs_fire_exactly_once(producer, workers, client):
    workers("--threads", "2", "--sleep-seconds", "0.05", count=3)
    producer.recurrent_tasks["beat"] = Recurrent(Task(fleet_tasks.append, ("beats", "x")), interval=0.2, repeats=5)
    wait_for(lambda: "beat" not in producer.recurrent_tasks, timeout=20, what="schedule to end")
    assert producer.join(timeout=20)
    assert client.llen("beats") == 5


def test_lock_excludes_across_processes(producer, workers, client):
    workers("--threads", "3", count=3)
    producer.enqueue_tasks([Task(fleet_tasks.locked_probe, ("locked", 0.02)) for _ in range(24)])
    assert producer.join(timeout=60)
    assert int(client.get("locked:peak")) == 1


def test_sigkill_mid_task_loses_nothing(producer, workers, client):
    (doomed,) = workers("--threads", "1", "--visibility-timeout", "1")
    ref = producer.enqueue_task(Task(fleet_tasks.slow, ("killed", 0.5)))
    wait_for(lambda: client.llen("killed:starts") == 1, what="task start")
    doomed.kill()
    (survivor,) = workers("--threads", "1", "--visibility-timeout", "1")
    assert ref.result(timeout=30) == survivor.process.pid
    assert client.llen("killed:starts") == 2 and client.llen("killed:ends") == 1


def test_sigterm_drains_running_task_and_exits_zero(producer, workers, client):
    (worker,) = workers("--threads", "2")
    ref = producer.enqueue_task(Task(fleet_tasks.slow, ("drain", 1.0)))
    wait_for(lambda: client.llen("drain:starts") == 1, what="task start")
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    assert ref.status() == "done"
    assert "SIGTERM" in worker.log and "stopped" in worker.log


def test_unimportable_and_forbidden_functions_fail_clearly(producer, workers):
    (worker,) = workers("--threads", "1")
    missing, forbidden, fine = producer.enqueue_tasks(
        [Task("tests.fleet_tasks:nope"), Task("os:system", ("echo pwned",)), Task(fleet_tasks.mark, ("ok", "1"))]
    )
    with pytest.raises(TaskFailed, match="has no function 'nope'"):
        missing.result(timeout=30)
    with pytest.raises(TaskFailed, match="not allowed"):
        forbidden.result(timeout=30)
    assert fine.result(timeout=30) is None
    assert worker.process.poll() is None
    assert "pwned" not in worker.log


def test_worker_is_configured_by_environment_alone(redis_url, client):
    env = {"TASKUTILS_IMPORTS": "tests.fleet_tasks", "TASKUTILS_QUEUES": "envq", "TASKUTILS_THREADS": "2"}
    worker = WorkerProcess(redis_url, env=env)
    try:
        assert "queues envq, 2 threads, allowed modules tests.fleet_tasks" in worker.log
        with TaskHandler(redis_url, max_num_threads=0, queue="envq") as producer:
            assert producer.enqueue_task(Task(fleet_tasks.mark, ("env", "1"))).result(timeout=30) is None
    finally:
        worker.kill()


def test_task_longer_than_the_visibility_timeout_runs_once(producer, workers, client):
    workers("--threads", "2", "--visibility-timeout", "0.6", count=2)
    ref = producer.enqueue_task(Task(fleet_tasks.slow, ("long", 3.0)))
    assert ref.result(timeout=30)
    assert client.llen("long:starts") == 1
