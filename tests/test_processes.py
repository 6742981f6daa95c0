"""taskutils-worker --processes N: a supervisor keeps N worker processes alive and drains them on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess

import pytest

from taskutils import Task

from . import fleet_tasks
from .conftest import wait_for
from .fleet import WorkerProcess


def children(supervisor: WorkerProcess) -> set[int]:
    """Pids of the worker processes the supervisor started that have not exited."""
    started = {int(pid) for pid in re.findall(r"worker process (\d+) started", supervisor.log)}
    exited = {int(pid) for pid in re.findall(r"worker process (\d+) exited", supervisor.log)}
    return started - exited


def running(supervisor: WorkerProcess, pids: set[int]) -> bool:
    """Every one of `pids` logged that its worker started."""
    return all(re.search(rf"worker \S+:{pid}:\S+ started", supervisor.log) for pid in pids)


def test_every_process_takes_work_and_a_killed_one_is_replaced(producer, workers, client):
    (supervisor,) = workers("--processes", "2", "--threads", "2", "--visibility-timeout", "1")
    wait_for(lambda: len(children(supervisor)) == 2 and running(supervisor, children(supervisor)), what="two workers")
    first = children(supervisor)
    refs = producer.enqueue_tasks([Task(fleet_tasks.slow, ("spread", 0.05)) for _ in range(40)])
    assert producer.join(timeout=60)
    assert {int(pid) for pid in client.lrange("spread:starts", 0, -1)} == first
    assert {ref.result(timeout=1) for ref in refs} == first

    long = producer.enqueue_task(Task(fleet_tasks.slow, ("long", 1.0)))
    wait_for(lambda: client.llen("long:starts") == 1, what="the long task to start")
    victim = int(client.lindex("long:starts", 0))
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: len(children(supervisor)) == 2 and victim not in children(supervisor), timeout=20,
             what="a new worker process in place of the killed one")
    assert "exited with signal SIGKILL" in supervisor.log
    assert long.result(timeout=30) != victim  # its lease expired, and a live process ran it again
    assert supervisor.alive()


def test_sigterm_drains_every_process_and_exits_zero(producer, workers, client):
    (supervisor,) = workers("--processes", "2", "--threads", "1", "--grace-period", "30", "--log-level", "DEBUG")
    wait_for(lambda: running(supervisor, children(supervisor)) and len(children(supervisor)) == 2, what="two workers")
    refs = producer.enqueue_tasks([Task(fleet_tasks.slow, ("drain", 1.0)) for _ in range(2)])
    wait_for(lambda: client.llen("drain:starts") == 2, what="both tasks to start")
    supervisor.signal(signal.SIGTERM)
    try:
        code = supervisor.wait(30)
    except subprocess.TimeoutExpired:  # seen once in CI, not reproduced since: keep what the processes said
        pytest.fail(f"the supervisor did not exit within 30 s of SIGTERM; its log and its children's:\n{supervisor.log}")
    assert code == 0
    assert [ref.status() for ref in refs] == ["done", "done"]
    assert client.llen("drain:ends") == 2
    assert supervisor.log.count("exited with code 0") == 2


def test_a_supervisor_whose_workers_cannot_start_gives_up(workers):
    (supervisor,) = workers("--processes", "2", "--import", "no_such_module_anywhere")
    assert supervisor.wait(30) == 2
    assert "cannot import --import module 'no_such_module_anywhere'" in supervisor.log
    assert "cannot keep worker process" in supervisor.log
