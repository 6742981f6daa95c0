"""Cancellation, unique tasks and current_task(), on every backend."""

from __future__ import annotations

import time

import pytest

from taskutils import InvalidTask, NoCurrentTask, Task, TaskCancelled, current_task

from . import jobs
from .conftest import wait_for


def test_a_queued_task_cancelled_never_runs(make_handler, key):
    producer = make_handler(max_num_threads=0)
    doomed = producer.enqueue_task(Task(jobs.record, (key, "doomed"), key="k"))
    kept = producer.enqueue_task(Task(jobs.record, (key, "kept"), key="k"))
    assert doomed.cancel() is True
    assert doomed.status() == "cancelled"
    with pytest.raises(TaskCancelled):
        doomed.result(timeout=1)
    assert producer.backend.counts(producer.queue).queued == 1
    make_handler(allow=["tests"])
    assert kept.result(timeout=10) == "kept"
    assert producer.join(timeout=10)
    assert jobs.calls[key] == ["kept"]
    assert doomed.cancel() is False  # already ended


def test_a_scheduled_task_cancelled_never_runs(make_handler, key):
    handler = make_handler()
    doomed = handler.enqueue_task(Task(jobs.record, (key, "doomed"), delay=0.3))
    assert doomed.status() == "scheduled"
    assert doomed.cancel() is True
    assert handler.backend.counts(handler.queue).scheduled == 0
    after = handler.enqueue_task(Task(jobs.record, (key, "after"), delay=0.5))
    assert after.result(timeout=10) == "after"
    assert jobs.calls[key] == ["after"] and doomed.status() == "cancelled"


def test_a_running_task_is_told_and_its_outcome_still_recorded(make_handler, key):
    handler = make_handler()
    ref = handler.enqueue_task(Task(jobs.until_cancelled, (key,)))
    assert jobs.gates[key].wait(10)
    assert ref.cancel() is False
    assert ref.result(timeout=10) is True
    assert ref.status() == "done"


def test_cancelling_an_unknown_task_returns_false(make_handler):
    handler = make_handler(max_num_threads=0)
    assert handler.task("0-1").cancel() is False
    assert handler.task("not an id").cancel() is False


def test_a_unique_value_enqueues_one_task_while_it_is_pending(make_handler, key):
    producer = make_handler(max_num_threads=0)
    first = producer.enqueue_task(Task(jobs.record, (key, 1), unique="https://a.example/"))
    again = producer.enqueue_task(Task(jobs.record, (key, 2), unique="https://a.example/"))
    batch = producer.enqueue_tasks([Task(jobs.record, (key, 3), unique="u")] * 3)
    assert again.id == first.id and len({ref.id for ref in batch}) == 1
    assert producer.backend.counts(producer.queue).queued == 2
    make_handler(allow=["tests"])
    assert producer.join(timeout=10)
    assert sorted(jobs.calls[key]) == [1, 3]
    later = producer.enqueue_task(Task(jobs.record, (key, 4), unique="https://a.example/"))
    assert later.id != first.id  # no unique_for: the value went with its task
    assert later.result(timeout=10) == 4


def test_unique_for_keeps_the_value_after_the_task_ends(make_handler, key):
    handler = make_handler()
    first = handler.enqueue_task(Task(jobs.record, (key, 1), unique="seen", unique_for=0.5))
    first.result(timeout=10)
    assert handler.enqueue_task(Task(jobs.record, (key, 2), unique="seen", unique_for=0.5)).id == first.id
    time.sleep(0.6)
    fresh = handler.enqueue_task(Task(jobs.record, (key, 3), unique="seen"))
    assert fresh.id != first.id and fresh.result(timeout=10) == 3


def test_cancelling_and_failing_let_the_unique_value_go(make_handler, key):
    handler = make_handler(max_num_threads=0)
    doomed = handler.enqueue_task(Task(jobs.record, (key, 1), unique="v"))
    doomed.cancel()
    assert handler.enqueue_task(Task(jobs.boom, ("x",), unique="v")).id != doomed.id
    make_handler(allow=["tests"])
    assert handler.join(timeout=10)
    assert handler.enqueue_task(Task(jobs.record, (key, 2), unique="v")).result(timeout=10) == 2


def test_current_task_tells_id_queue_key_and_attempt(make_handler, key):
    handler = make_handler()
    ref = handler.enqueue_task(Task(jobs.whoami, (key, True), key="k", repeats_on_failure=1))
    ref.result(timeout=10)
    assert jobs.calls[key] == [[ref.id, handler.queue, "k", 1], [ref.id, handler.queue, "k", 2]]


def test_current_task_outside_a_task_is_a_clear_error():
    with pytest.raises(NoCurrentTask, match="only available inside a task"):
        current_task()


def test_a_task_enqueues_follow_ups_with_its_own_handler_and_join_waits_for_both_queues(make_handler, key):
    handler = make_handler(queue="first")
    other = make_handler(queue="second", allow=["tests"])
    handler.enqueue_task(Task(jobs.spawn, (key, 3, "second")))
    handler.enqueue_task(Task(jobs.spawn, (key, 2)))
    assert handler.join(timeout=10, queues=["first", "second"])
    assert sorted(jobs.calls[key]) == [0, 0, 1, 1, 2]
    assert other.join(timeout=1)


def test_bad_unique_and_join_arguments_are_refused(make_handler):
    handler = make_handler(max_num_threads=0)
    with pytest.raises(InvalidTask, match="unique_for needs"):
        Task(jobs.add, (1, 2), unique_for=5)
    with pytest.raises(InvalidTask, match="unique"):
        Task(jobs.add, (1, 2), unique="x" * 5000)
    with pytest.raises(InvalidTask, match="unique_for"):
        Task(jobs.add, (1, 2), unique="x", unique_for=float("nan"))
    with pytest.raises(InvalidTask, match="queue names"):
        handler.join(queues="first")


def test_a_task_that_waits_for_cancel_sees_it_through_wait_for(make_handler, key):
    handler = make_handler()
    ref = handler.enqueue_task(Task(jobs.until_cancelled, (key,)))
    assert jobs.gates[key].wait(10)
    wait_for(lambda: ref.status() == "running", what="the task to run")
    ref.cancel()
    assert ref.result(timeout=10) is True


def test_a_value_held_past_its_time_is_swept_without_being_looked_up(backend):
    """Redis keeps held values in 65,536 small hashes: a heartbeat's sweep gives back the memory
    of holds whose time passed, even if nobody enqueues that value again."""
    from taskutils.backends.records import Ending, Exchange, NewTask, Settlement

    body = Task(jobs.add, (1, 2)).encode()
    backend.enqueue("q", [NewTask(body, unique="https://a.example/", unique_for=0.2)])
    (held,) = backend.exchange(Exchange("q", "c", (), 1, 30.0)).claims
    backend.exchange(Exchange("q", "c", (Settlement(held, Ending.DONE),)))
    assert backend.enqueue("q", [NewTask(body, unique="https://a.example/")]) == [held.task_id]
    time.sleep(0.3)
    if backend.in_process:
        assert backend.sweep_unique("q") == 0  # the embedded backend drops holds as their time passes
        return
    swept = sum(backend.sweep_unique("q") for _ in range(256))  # 256 sweeps of 256 hashes: all of them
    assert swept == 1
    assert not backend.client.keys("tu:{q}:up:*")
