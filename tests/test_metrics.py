"""Prometheus metrics of a worker: what each task end counts (with a registry of the test's own)."""

from __future__ import annotations

import time

import pytest

prometheus_client = pytest.importorskip("prometheus_client", reason="taskutils[metrics] is part of the test extra")

from taskutils import Task
from taskutils.backends.records import Claim
from taskutils.config import Settings
from taskutils.metrics import WorkerMetrics
from taskutils.task import allow_all
from taskutils.worker.execution import TaskExecutor
from taskutils.worker.observer import Observer

from . import jobs


def claim(task: Task, failures: int = 0, crashes: int = 0, enqueued_at: float | None = None) -> Claim:
    return Claim("q", "e-1", "t", task.encode(enqueued_at), failures, crashes)


@pytest.fixture
def counted():
    registry = prometheus_client.CollectorRegistry()
    observer = Observer(WorkerMetrics(registry))
    executor = TaskExecutor(Settings(max_crashes=2), allow_all, "c", observer)

    def value(name: str, **labels: str) -> float:
        return registry.get_sample_value(name, labels) or 0.0

    return executor, observer, value


def test_each_outcome_is_counted_with_its_queue_and_function(counted):
    executor, observer, value = counted
    executor.run(claim(Task(jobs.add, (1, 2)), enqueued_at=time.time() - 2))
    executor.run(claim(Task(jobs.fail_times, ("m-retry", 9), repeats_on_failure=3)))
    executor.run(claim(Task(jobs.fail_times, ("m-fail", 9))))
    executor.run(claim(Task(jobs.add, (1, 2)), crashes=2))
    executor.run(claim(Task(jobs.throttle_for, (5,))))
    observer.handed_back(claim(Task(jobs.add, (1, 2))))
    assert value("taskutils_tasks_total", queue="q", function="tests.jobs:add", outcome="done") == 0  # not folded yet
    observer.fold()
    for outcome, function in [("done", "tests.jobs:add"), ("retried", "tests.jobs:fail_times"),
                              ("failed", "tests.jobs:fail_times"), ("quarantined", ""),
                              ("throttled", "tests.jobs:throttle_for"), ("handed_back", "")]:
        assert value("taskutils_tasks_total", queue="q", function=function, outcome=outcome) == 1, outcome
    assert value("taskutils_task_duration_seconds_count", queue="q", function="tests.jobs:add") == 1
    assert value("taskutils_queue_wait_seconds_count", queue="q") == 1  # only the task with an enqueue time
    assert 1.5 < value("taskutils_queue_wait_seconds_sum", queue="q") < 60
    assert value("taskutils_tasks_running", queue="q") == 0
    assert observer.take_tally("q") == ((int(time.time() // 60), 1, 2, 1),)  # quarantined counts as failed


def test_a_retry_has_no_queue_wait_and_a_running_task_is_counted_at_each_exchange(counted):
    executor, observer, value = counted
    executor.run(claim(Task(jobs.add, (1, 2)), failures=1, enqueued_at=time.time()))
    observer.fold()
    assert value("taskutils_queue_wait_seconds_count", queue="q") == 0

    seen = []

    def look() -> None:
        observer.fold()
        seen.append((list(observer.running_since()), value("taskutils_tasks_running", queue="q")))

    jobs.hooks["m-look"] = look
    executor.run(Claim("q", "e-2", "t", Task(jobs.call_hook, ("m-look",)).encode(), 0, 0))
    assert seen == [(["e-2"], 1.0)]
    observer.fold()
    assert observer.running_since() == {} and value("taskutils_tasks_running", queue="q") == 0


def test_without_metrics_only_the_history_is_counted():
    observer = Observer()
    executor = TaskExecutor(Settings(), allow_all, "c", observer)
    executor.run(claim(Task(jobs.add, (1, 2))))
    assert observer.metrics is None and observer.take_tally("q")[0][1:] == (1, 0, 0)


def test_a_task_that_was_told_it_is_cancelled_and_returned_counts_as_cancelled(counted):
    from taskutils.backends import MemoryBackend
    from taskutils.backends.records import Exchange, NewTask
    from taskutils.context import TaskContext, running, running_token_reset

    executor, observer, value = counted
    backend = MemoryBackend()
    backend.enqueue("q", [NewTask(Task(jobs.until_cancelled, ("m-cancel",)).encode())])
    (claimed,) = backend.exchange(Exchange("q", "c", want=1)).claims
    assert not backend.cancel("q", claimed.task_id, b"", 60)  # running: only told
    token = running(TaskContext(claimed.task_id, "q", None, 1, backend, lambda queue: None))
    try:
        executor.run(claimed)
    finally:
        running_token_reset(token)
    observer.fold()
    assert value("taskutils_tasks_total", queue="q", function="tests.jobs:until_cancelled", outcome="cancelled") == 1


def test_a_failure_to_count_is_logged_and_never_reaches_the_exchanger(counted, caplog):
    executor, observer, value = counted
    executor.run(claim(Task(jobs.add, (1, 2))))
    broken = observer.metrics.tasks
    observer.metrics.tasks = None  # counting now raises (AttributeError), as a full disk would in multiprocess mode
    observer.fold()
    observer.fold()
    assert caplog.text.count("counting task ends for the history and metrics failed") == 1  # once a minute
    observer.metrics.tasks = broken
    assert observer.take_tally("q", every=True) == ((int(time.time() // 60), 1, 0, 0),)  # history counted before
