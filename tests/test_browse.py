"""Reading tasks for people (taskutils.browse): lists by state, one task by id, key backlogs,
purge and the per-minute history, the same on every backend."""

from __future__ import annotations

import time

import pytest

from taskutils import Task, browse
from taskutils.backends.records import Exchange, NewTask
from taskutils.task import TaskBody

from . import jobs
from .conftest import wait_for


def test_each_state_lists_its_tasks_with_what_people_need(make_handler, backend, key):
    producer = make_handler(max_num_threads=0, queue=key)
    later = producer.enqueue_task(Task(jobs.add, (1, 2), delay=300))
    low = producer.enqueue_task(Task(jobs.echo, ("low",), {"x": 1}, priority=1))
    high = producer.enqueue_task(Task(jobs.echo, ("high",), priority=5, key="example.org"))
    scheduled = browse.list_tasks(backend, key, "scheduled")
    assert [(t.id, t.ref, t.args, t.state) for t in scheduled] == [(later.id, "tests.jobs:add", [1, 2], "scheduled")]
    assert scheduled[0].due == pytest.approx(backend.now() + 300, abs=5)
    assert scheduled[0].enqueued_at == pytest.approx(time.time(), abs=5)
    queued = browse.list_tasks(backend, key, "queued")
    assert {t.id: (t.priority, t.key, t.kwargs) for t in queued} == {
        low.id: (1, None, {"x": 1}), high.id: (5, "example.org", {}),
    }
    assert [t.id for t in browse.list_tasks(backend, key)] == [t.id for t in queued] + [later.id]
    assert len(browse.list_tasks(backend, key, limit=2)) == 2
    with pytest.raises(ValueError, match="state must be one of"):
        browse.list_tasks(backend, key, "done")


def test_running_tasks_show_their_worker_and_start_and_failed_ones_their_traceback(make_handler, backend, key):
    worker = make_handler(max_num_threads=2, allow=["tests.jobs"], queue=key, visibility_timeout=0.6)  # heartbeat every 0.2 s
    gate = key + "-gate"
    running = worker.enqueue_task(Task(jobs.wait_gate, (gate,)))
    failed = worker.enqueue_task(Task(jobs.fail_times, (key, 5), repeats_on_failure=1))
    try:
        view = wait_for(lambda: [t for t in browse.list_tasks(backend, key, "running") if t.started_at], what="a start reported")[0]
        assert view.id == running.id and view.worker and 0 <= backend.now() - view.started_at < 30
        wait_for(lambda: backend.counts(key).failed == 1, what="the failure")
        (gone,) = browse.list_tasks(backend, key, "failed")
        assert gone.id == failed.id and gone.failures == 2 and "planned failure 2 of 5" in gone.error
        assert browse.find_task(backend, failed.id).error == gone.error
        assert browse.find_task(backend, running.id).state == "running"
    finally:
        jobs.gates[gate].set()
    assert running.result(timeout=10) == "released"


def test_find_task_knows_every_state_and_says_none_for_unknown_ids(make_handler, backend, key):
    producer = make_handler(max_num_threads=0, queue=key)
    queued = producer.enqueue_task(Task(jobs.add, (1, 2), key="k"))
    cancelled = producer.enqueue_task(Task(jobs.add, (3, 4)))
    assert cancelled.cancel()
    found = browse.find_task(backend, queued.id)
    assert (found.queue, found.state, found.key, found.args) == (key, "queued", "k", [1, 2])
    assert browse.find_task(backend, cancelled.id).state == "cancelled"
    assert [t.id for t in browse.list_tasks(backend, key, "queued")] == [queued.id]  # the cancelled one is not listed
    assert browse.find_task(backend, queued.id, ["elsewhere"]) is None
    assert browse.find_task(backend, "0-0") is None and browse.find_task(backend, "not an id") is None
    worker = make_handler(max_num_threads=1, allow=["tests.jobs"], queue=key)
    assert worker.task(queued.id).result(timeout=10) == 3
    done = browse.find_task(backend, queued.id)
    assert (done.state, done.result) == ("done", 3)


def test_key_backlog_lists_the_busiest_keys_first(make_handler, backend, key):
    producer = make_handler(max_num_threads=0, queue=key)
    producer.enqueue_tasks([Task(jobs.add, (1, 1), key=f"k{i % 3}") for i in range(3 * 4 - 1)] + [Task(jobs.add, (0, 0))])
    assert browse.key_backlog(backend, key) == [("k0", 4), ("k1", 4), ("k2", 3)]
    assert browse.key_backlog(backend, key, 1) == [("k0", 4)]


def test_purge_drops_waiting_tasks_keeps_running_and_failed_and_lets_unique_values_go(make_handler, backend, key):
    producer = make_handler(max_num_threads=0, queue=key)
    tasks = [Task(jobs.add, (i, 0), key=f"k{i % 2}" if i % 3 else None, priority=i % 4, unique=f"u{i}") for i in range(2400)]
    refs = producer.enqueue_tasks(tasks + [Task(jobs.add, (1, 1), delay=300)])
    assert refs[7].cancel()
    assert backend.purge(key) == 2400  # the cancelled task was counted out already
    counts = backend.counts(key)
    assert (counts.scheduled, counts.queued) == (0, 0) and browse.list_tasks(backend, key) == []
    assert browse.find_task(backend, refs[3].id) is None  # gone for good: no outcome kept
    again = producer.enqueue_task(Task(jobs.add, (3, 0), unique="u3"))
    assert again.id != refs[3].id  # its unique value was let go
    worker = make_handler(max_num_threads=2, allow=["tests.jobs"], queue=key)
    assert again.result(timeout=10) == 3 and worker.join(timeout=10)
    assert backend.purge(key) == 0


def test_history_counts_tasks_done_failed_and_retried_per_minute(make_handler, backend, key):
    worker = make_handler(max_num_threads=2, allow=["tests.jobs"], queue=key)
    worker.enqueue_tasks([Task(jobs.add, (i, i)) for i in range(5)])
    worker.enqueue_task(Task(jobs.fail_times, (key, 1), repeats_on_failure=1))  # one retry, then done
    worker.enqueue_task(Task(jobs.fail_times, (key + "x", 9)))  # failed
    assert worker.join(timeout=10)

    def now_counts():
        recent = browse.history(backend, key, 2)
        return sum(m.done for m in recent), sum(m.failed for m in recent), sum(m.retried for m in recent)

    wait_for(lambda: now_counts() == (6, 1, 1), timeout=15, what=f"the history to show the tasks: {now_counts()}")
    hour = browse.history(backend, key)
    assert len(hour) == 60 and hour[-1].start <= backend.now() < hour[-1].start + 60
    assert len(browse.history(backend, key, 10**6)) == 24 * 60  # at most a day


def test_an_exchange_tally_adds_up_and_old_minutes_are_read_from_their_hour(backend, key):
    backend.enqueue(key, [NewTask(b"x")])
    minute = int(backend.now() // 60)
    backend.exchange(Exchange(key, "c", tally=((minute - 61, 1, 2, 3), (minute, 4, 0, 0))))
    backend.exchange(Exchange(key, "c", tally=((minute, 1, 1, 1),)))
    assert backend.history(key, minute - 120) == {minute - 61: (1, 2, 3), minute: (5, 1, 1)}
    assert backend.history(key, minute) == {minute: (5, 1, 1)}


def test_a_body_carries_its_enqueue_time_and_a_damaged_one_is_ignored():
    body = Task(jobs.add, (1, 2)).encode(1234.5)
    assert TaskBody.decode(body).enqueued_at == 1234.5
    assert TaskBody.decode(Task(jobs.add, (1, 2)).encode()).enqueued_at is None
    import msgpack

    damaged = msgpack.packb(["tests.jobs:add", [1, 2], {}, 0, 0, 1, "yesterday"])
    assert TaskBody.decode(damaged).enqueued_at is None
    assert TaskBody.decode(msgpack.packb(["tests.jobs:add", [1, 2], {}, 0, 0, 1, float("nan")])).enqueued_at is None


def test_a_worker_that_stops_sends_its_last_counts_and_the_cap_reads_back(make_handler, backend, key):
    worker = make_handler(max_num_threads=2, allow=["tests.jobs"], queue=key)
    refs = worker.enqueue_tasks([Task(jobs.add, (i, i)) for i in range(3)])
    assert [ref.result(timeout=10) for ref in refs] == [0, 2, 4]
    worker.close(timeout=10)
    assert sum(minute.done for minute in browse.history(backend, key, 2)) == 3
    assert backend.max_concurrency(key) is None
    backend.set_max_concurrency(key, 4)
    assert backend.max_concurrency(key) == 4


def test_keys_at_their_limit_still_show_their_backlog_and_queue_names_are_literal(make_handler, backend, key):
    from taskutils import Limit

    producer = make_handler(max_num_threads=0, queue=key + "*")
    other = make_handler(max_num_threads=0, queue=key + "x")
    producer.limits["busy"] = Limit(concurrency=1)
    producer.enqueue_tasks([Task(jobs.add, (1, 1), key="busy")] * 3 + [Task(jobs.add, (1, 1), key="free")])
    other.enqueue_task(Task(jobs.add, (1, 1), key="elsewhere"))
    (claimed,) = backend.exchange(Exchange(key + "*", "c", want=1)).claims  # "busy" is now at its limit
    assert claimed.key == "busy"
    assert browse.key_backlog(backend, key + "*") == [("busy", 2), ("free", 1)]
    assert {t.key for t in browse.list_tasks(backend, key + "*", "queued")} == {"busy", "free"}
    assert backend.purge(key + "*") == 3 and backend.counts(key + "x").queued == 1  # "a*" is not a pattern
