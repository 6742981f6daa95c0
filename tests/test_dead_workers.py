"""A process that is gone must not receive work: real workers killed or stopped while idle or under load."""

from __future__ import annotations

import signal

import pytest

from taskutils import Task, TaskHandler
from taskutils.backends.redis import prefix

from . import fleet_tasks
from .conftest import wait_for


def server_time(client) -> float:
    seconds, micros = client.time()
    return seconds + micros / 1e6


def in_effect(worker, fault: int, client) -> None:
    """Wait until `fault` has taken `worker` down, as the kernel and Redis see it: a signal is
    delivered asynchronously, and Redis reads a dead process's closed connections in a later
    turn of its event loop (two round trips after the process is gone)."""
    if fault == signal.SIGKILL:
        worker.wait()
    else:
        wait_for(lambda: worker.state() == "T", what="the worker to stop")
    client.ping()
    client.ping()


@pytest.mark.parametrize("fault", [signal.SIGKILL, signal.SIGSTOP], ids=["killed", "stopped"])
def test_new_tasks_go_to_the_live_worker_when_idle_ones_die(producer, workers, client, fault):
    """Three idle workers with default settings; one is killed and one killed or stopped (a
    stopped process keeps its connection, like a host that vanished): each of the next tasks,
    enqueued one by one, starts on the live worker at once, not after a visibility timeout
    (30 s), and no crash is counted against it."""
    live, first, second = workers(count=3)
    producer.enqueue_tasks([Task(fleet_tasks.mark, ("warm", str(n))) for n in range(12)])
    assert producer.join(timeout=30)
    wait_for(lambda: client.zcard(prefix("default") + "idle") == 3, what="the three workers to wait for work")
    first.signal(signal.SIGKILL)
    second.signal(fault)
    in_effect(first, signal.SIGKILL, client)
    in_effect(second, fault, client)
    starts = []
    for n in range(6):
        enqueued = server_time(client)
        ref = producer.enqueue_task(Task(fleet_tasks.stamp_then_fail, ("starts",)))
        wait_for(lambda: client.llen("starts") == n + 1, timeout=40, what=f"task {n} to start")
        started, pid = client.lindex("starts", n).decode().split("|")
        starts.append((float(started) - enqueued, int(pid)))
        wait_for(lambda: ref.status() == "failed", what=f"task {n} to end")
    print(f"\n{signal.Signals(fault).name}: enqueue -> start of the next 6 tasks: "
          + ", ".join(f"{delay * 1000:.1f} ms" for delay, _ in starts))
    assert all(pid == live.pid for _, pid in starts), starts
    # a token that went to a process dying at that instant is lost, and the task then waits
    # until the live worker's wait ends by itself (sleep_seconds, 2 s): in_effect rules that out
    assert max(delay for delay, _ in starts) < 1.0, starts
    assert [task.crashes for task in producer.failed_tasks()] == [0] * 6


def test_a_capped_queue_runs_at_its_full_cap_right_after_workers_are_killed(redis_url, workers, client):
    """Workers killed under load and while idle leave nothing behind that holds a slot of the cap."""
    args = ("--queue", "capped", "--threads", "3", "--max-concurrency", "4", "--visibility-timeout", "2")
    pool = workers(*args, count=3)
    producer = TaskHandler(redis_url, max_num_threads=0, queue="capped")
    try:
        producer.enqueue_tasks([Task(fleet_tasks.probe, ("load", 0.05)) for _ in range(200)])
        wait_for(lambda: client.exists("load:peak"), what="the load to start")
        for victim in pool[:2]:  # killed mid-task, and replaced
            victim.kill()
        pool = pool[2:] + workers(*args, count=2)
        assert producer.join(timeout=60)
        for victim in pool[:2]:  # killed while waiting for work, and replaced
            victim.kill()
        workers(*args, count=2)
        producer.enqueue_tasks([Task(fleet_tasks.probe, ("after", 0.05)) for _ in range(40)])
        assert producer.join(timeout=60)
        print(f"\npeak right after the kills: {int(client.get('after:peak'))} of a cap of 4")
        assert int(client.get("after:peak")) == 4
    finally:
        producer.close()
