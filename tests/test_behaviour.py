"""The behaviour suite: the public API, run on the embedded backend, fakeredis and a real redis-server."""

from __future__ import annotations

import threading

import pytest

from taskutils import InvalidTask, PayloadError, Recurrent, Task, TaskFailed, TaskNotFound

from . import jobs
from .conftest import wait_for


def test_runs_a_task_and_keeps_its_result(make_handler):
    handler = make_handler()
    ref = handler.enqueue_task(Task(jobs.add, (2, 3)))
    assert ref.result(timeout=10) == 5
    assert ref.status() == "done"


def test_arguments_round_trip(make_handler):
    handler = make_handler()
    args = (None, True, -(2**63), 2**64 - 1, 1.5, "é", b"\x00\xff", [1, [2]], {"k": {"n": 1}})
    ref = handler.enqueue_task(Task(jobs.echo, args, {"tuple": (1, 2)}))
    assert ref.result(timeout=10) == [list(args[:7]) + [[1, [2]], {"k": {"n": 1}}], {"tuple": [1, 2]}]


def test_higher_priority_runs_first_and_equal_priorities_in_order(make_handler, key):
    handler = make_handler(max_num_threads=1)
    handler.pause()
    plan = [(0, "a"), (5, "b"), (0, "c"), (9, "d"), (5, "e"), (-1, "f"), (0, "g")]
    handler.enqueue_tasks([Task(jobs.record, (key, name), priority=p) for p, name in plan])
    handler.resume()
    assert handler.join(timeout=10)
    assert jobs.calls[key] == ["d", "b", "e", "a", "c", "g", "f"]


def test_enqueue_tasks_returns_refs_in_order(make_handler):
    handler = make_handler()
    refs = handler.enqueue_tasks(Task(jobs.add, (n, n)) for n in range(50))
    assert [ref.result(timeout=10) for ref in refs] == [2 * n for n in range(50)]
    assert len({ref.id for ref in refs}) == 50


def test_retries_then_succeeds(make_handler, key):
    handler = make_handler()
    ref = handler.enqueue_task(Task(jobs.fail_times, (key, 2), repeats_on_failure=2))
    assert ref.result(timeout=10) == 3
    assert len(jobs.calls[key]) == 3


def test_retry_delay_spaces_attempts(make_handler, key):
    handler = make_handler()
    ref = handler.enqueue_task(Task(jobs.fail_times, (key, 2), repeats_on_failure=2, retry_delay=0.2, retry_backoff=2))
    assert ref.result(timeout=10) == 3
    first, second, third = jobs.calls[key]
    assert second - first >= 0.19 and third - second >= 0.39


def test_fails_for_good_with_traceback_and_is_kept(make_handler, backend):
    handler = make_handler()
    ref = handler.enqueue_task(Task(jobs.boom, ("kaput",), repeats_on_failure=1))
    with pytest.raises(TaskFailed) as failure:
        ref.result(timeout=10)
    assert "ValueError: kaput" in str(failure.value) and "Traceback" in str(failure.value)
    assert ref.status() == "failed"
    stored = backend.failed("default")
    assert list(stored) == [ref.id]


def test_worker_survives_system_exit(make_handler):
    handler = make_handler(max_num_threads=1)
    first = handler.enqueue_task(Task(jobs.exit_task))
    second = handler.enqueue_task(Task(jobs.add, (1, 1)))
    with pytest.raises(TaskFailed, match="SystemExit"):
        first.result(timeout=10)
    assert second.result(timeout=10) == 2


def test_unimportable_function_fails_clearly_and_worker_goes_on(make_handler):
    handler = make_handler(max_num_threads=1, allow=["no_such_module"])
    missing = handler.enqueue_task(Task("no_such_module:func"))
    fine = handler.enqueue_task(Task(jobs.add, (1, 2)))
    with pytest.raises(TaskFailed, match="cannot import module 'no_such_module'"):
        missing.result(timeout=10)
    assert fine.result(timeout=10) == 3


def test_unencodable_result_fails_the_task(make_handler):
    ref = make_handler().enqueue_task(Task(jobs.unencodable_result))
    with pytest.raises(TaskFailed, match="cannot be encoded"):
        ref.result(timeout=10)


def test_bad_argument_is_refused_and_nothing_is_enqueued(make_handler, backend):
    handler = make_handler(max_num_threads=0)
    good = Task(jobs.add, (1, 2))
    bad = Task(jobs.echo, kwargs={"when": object()})
    with pytest.raises(PayloadError, match="argument 'when'"):
        handler.enqueue_tasks([good, bad])
    assert backend.counts("default").pending == 0


def test_delayed_task_is_scheduled_then_runs(make_handler):
    handler = make_handler(sleep_seconds=60)
    ref = handler.enqueue_task(Task(jobs.add, (1, 1), delay=0.3))
    assert ref.status() == "scheduled"
    assert ref.result(timeout=10) == 2


def test_idle_worker_starts_new_work_without_waiting_for_sleep_seconds(make_handler):
    handler = make_handler(sleep_seconds=60)
    assert handler.enqueue_task(Task(jobs.add, (1, 1))).result(timeout=10) == 2
    assert handler.join(timeout=5)  # the worker waits for new work now, for up to 60 s
    assert handler.enqueue_task(Task(jobs.add, (2, 2))).result(timeout=10) == 4


def test_status_moves_through_queued_running_done(make_handler, key):
    handler = make_handler(max_num_threads=1)
    handler.pause()
    ref = handler.enqueue_task(Task(jobs.wait_gate, (key,)))
    # a claim sent just before the pause may take it; it comes back unstarted (README: pause())
    wait_for(lambda: ref.status() == "queued", what="queued")
    handler.resume()
    wait_for(lambda: ref.status() == "running", what="running")
    jobs.gates[key].set()
    assert ref.result(timeout=10) == "released"
    assert ref.status() == "done"


def test_unknown_task_is_not_found(make_handler):
    handler = make_handler(max_num_threads=0)
    with pytest.raises(TaskNotFound):
        handler.task("ffffffffffff").status()


def test_result_times_out(make_handler):
    handler = make_handler(max_num_threads=0)
    ref = handler.enqueue_task(Task(jobs.add, (1, 1)))
    with pytest.raises(TimeoutError):
        ref.result(timeout=0.05)


def test_join_waits_for_queue_and_times_out(make_handler, key):
    handler = make_handler(max_num_threads=1)
    handler.enqueue_task(Task(jobs.wait_gate, (key,)))
    assert handler.join(timeout=0.1) is False
    jobs.gates[key].set()
    assert handler.join(timeout=10) is True


def test_max_concurrency_caps_running_tasks(make_handler, key):
    handler = make_handler(max_num_threads=6, max_concurrency=2)
    handler.enqueue_tasks([Task(jobs.probe, (key, 0.05)) for _ in range(12)])
    assert handler.join(timeout=20)
    assert jobs.peaks[key] == 2


def test_long_tasks_run_side_by_side_on_every_thread(make_handler, key):
    handler = make_handler(max_num_threads=4)
    refs = handler.enqueue_tasks([Task(jobs.meet, (key, 4)) for _ in range(4)])  # each returns once all four run
    assert [ref.result(timeout=30) for ref in refs] == [True] * 4


def test_cap_is_shared_by_handlers_on_one_backend(make_handler, key):
    first = make_handler(max_num_threads=4, max_concurrency=3)
    make_handler(own_client=True, max_num_threads=4, allow=["tests"])
    first.enqueue_tasks([Task(jobs.probe, (key, 0.05)) for _ in range(16)])
    assert first.join(timeout=20)
    assert jobs.peaks[key] == 3


def test_close_lets_running_tasks_finish(make_handler, key):
    handler = make_handler(max_num_threads=1)
    ref = handler.enqueue_task(Task(jobs.wait_gate, (key,)))
    wait_for(lambda: jobs.calls[key] == ["started"], what="task start")  # "running" already once claimed
    threading.Timer(0.2, jobs.gates[key].set).start()
    assert handler.close(timeout=10)
    assert ref.status() == "done"


def test_recurrent_runs_the_given_number_of_times(make_handler, key):
    handler = make_handler(sleep_seconds=60)
    handler.recurrent_tasks["tick"] = Recurrent(Task(jobs.record, (key, "tick")), interval=0.1, repeats=3)
    wait_for(lambda: "tick" not in handler.recurrent_tasks, what="schedule to end")
    assert handler.join(timeout=10)
    assert jobs.calls[key] == ["tick"] * 3


def test_recurrent_runs_before_queued_work(make_handler, key):
    handler = make_handler(max_num_threads=1)
    handler.pause()
    handler.enqueue_tasks([Task(jobs.record, (key, "task"), priority=100) for _ in range(3)])
    handler.recurrent_tasks["now"] = Recurrent(Task(jobs.record, (key, "recurrent")), interval=60, repeats=1)
    handler.resume()
    assert handler.join(timeout=10)
    assert jobs.calls[key][0] == "recurrent"


def test_recurrent_mapping(make_handler):
    handler = make_handler(max_num_threads=0)
    schedule = Recurrent(Task(jobs.add, (1, 2), repeats_on_failure=2), interval=5, repeats=4, start=2e9)
    handler.recurrent_tasks["a"] = schedule
    handler.recurrent_tasks["b"] = Recurrent(Task(jobs.add, (0, 0)), interval=1, start=2e9)
    assert "a" in handler.recurrent_tasks and "zzz" not in handler.recurrent_tasks
    assert sorted(handler.recurrent_tasks) == ["a", "b"] and len(handler.recurrent_tasks) == 2
    stored = handler.recurrent_tasks["a"]
    assert (stored.interval, stored.repeats, stored.start) == (5, 4, 2e9)
    assert stored.task.ref == "tests.jobs:add" and stored.task.args == (1, 2) and stored.task.repeats_on_failure == 2
    del handler.recurrent_tasks["a"]
    assert list(handler.recurrent_tasks) == ["b"]
    with pytest.raises(KeyError):
        del handler.recurrent_tasks["a"]


def test_recurrent_is_shared_between_handlers(make_handler):
    producer = make_handler(max_num_threads=0)
    other = make_handler(own_client=True, max_num_threads=0)
    producer.recurrent_tasks["shared"] = Recurrent(Task(jobs.add, (1, 1)), interval=10, start=2e9)
    assert "shared" in other.recurrent_tasks


def test_bad_recurrent_input_is_refused(make_handler):
    handler = make_handler(max_num_threads=0)
    with pytest.raises(InvalidTask):
        handler.recurrent_tasks["x"] = Task(jobs.add)  # type: ignore[assignment]
    with pytest.raises(InvalidTask):
        Recurrent(Task(jobs.add), interval=0)
    with pytest.raises(InvalidTask):
        Recurrent(Task(jobs.add), interval=1, repeats=0)
    with pytest.raises(InvalidTask, match="stop has already passed"):
        handler.recurrent_tasks["late"] = Recurrent(Task(jobs.add), interval=1, stop=1.0)


def test_due_work_wakes_every_idle_worker_it_needs(make_handler, key):
    first = make_handler(max_num_threads=1, sleep_seconds=60, allow=["tests"])
    make_handler(own_client=True, max_num_threads=1, sleep_seconds=60, allow=["tests"])
    assert first.join(timeout=5)
    refs = first.enqueue_tasks([Task(jobs.wait_gate, (key,), delay=0.2) for _ in range(2)])
    wait_for(lambda: jobs.calls[key] == ["started", "started"], what="both tasks running at once")
    jobs.gates[key].set()
    assert [ref.result(timeout=10) for ref in refs] == ["released", "released"]


def test_a_paused_handler_does_not_keep_work_from_idle_ones(make_handler, key):
    paused = make_handler(max_num_threads=1, sleep_seconds=60, allow=["tests"])
    make_handler(own_client=True, max_num_threads=1, sleep_seconds=60, allow=["tests"])
    paused.pause()
    for _ in range(3):
        assert paused.enqueue_task(Task(jobs.add, (1, 1))).result(timeout=10) == 2
