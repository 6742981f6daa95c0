"""Faults injected into real workers on a real redis-server: kills, stalls, poison, shutdown, clock skew,
outcomes that cannot be computed."""

from __future__ import annotations

import os
import signal
import time

import msgpack
import pytest

from taskutils import Recurrent, Task, TaskHandler
from taskutils.backends.records import NewTask

from . import fleet_tasks
from .chaos import run_chaos
from .conftest import wait_for


def check_chaos(report) -> None:
    print("\n" + report.lines())
    assert report.kills >= 2
    assert report.lost == 0
    assert report.failed_otherwise == 0
    assert report.quarantined <= 2  # a task held by three killed workers in a row: rare, and kept, not lost
    assert report.duplicates_not_running_at_a_kill == 0
    assert report.peak_concurrency <= report.cap
    assert report.running_after == 0 and report.slots_held_after == 0


def test_chaos_short(redis_url):
    check_chaos(run_chaos(redis_url, tasks=400, task_seconds=0.05, kill_every=0.7))


def test_chaos_with_short_tasks(redis_url):
    """Tasks of 2-6 ms: many claims are in flight, being settled or being claimed at each kill."""
    check_chaos(run_chaos(redis_url, tasks=3000, task_seconds=0.004, kill_every=0.7))


@pytest.mark.slow
def test_chaos_long(redis_url):
    check_chaos(run_chaos(redis_url, tasks=3000, task_seconds=0.05, kill_every=1.0))


def test_stalled_worker_is_fenced_when_it_comes_back(producer, workers, client):
    (first,) = workers("--threads", "1", "--visibility-timeout", "1")
    ref = producer.enqueue_task(Task(fleet_tasks.slow, ("stall", 1.0)))
    wait_for(lambda: client.llen("stall:starts") == 1, what="task start")
    first.signal(signal.SIGSTOP)  # a long GC pause or a partition
    (second,) = workers("--threads", "1", "--visibility-timeout", "1")
    assert ref.result(timeout=30) == second.pid
    first.signal(signal.SIGCONT)
    first.wait_for_log("its outcome here is dropped", timeout=30)
    assert client.llen("stall:ends") == 2, "the stale run went on to its end"
    assert ref.result(timeout=1) == second.pid and ref.status() == "done"


def test_poison_task_is_quarantined(producer, workers, client):
    ref = producer.enqueue_task(Task(fleet_tasks.die, ("poison",)))
    deadline = time.monotonic() + 60
    (current,) = workers("--threads", "1", "--visibility-timeout", "0.5")
    while ref.status() != "failed":
        assert time.monotonic() < deadline, "poison task was not quarantined"
        if not current.alive():
            (current,) = workers("--threads", "1", "--visibility-timeout", "0.5")
        time.sleep(0.05)
    (failed,) = producer.failed_tasks()
    assert failed.reason == "quarantined: crashed its worker 3 times (max_crashes=3)"
    assert client.llen("poison:starts") == 3


def test_sigterm_hands_back_what_outlives_the_grace_period(producer, workers, client):
    (worker,) = workers("--threads", "1", "--grace-period", "0.3")
    ref = producer.enqueue_task(Task(fleet_tasks.slow, ("grace", 2.0)))
    wait_for(lambda: client.llen("grace:starts") == 1, what="task start")
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    assert ref.status() == "queued"
    assert "handed 1 running task(s) back" in worker.log
    workers("--threads", "1")
    assert ref.result(timeout=30)


def test_second_signal_stops_at_once(producer, workers, client):
    (worker,) = workers("--threads", "1", "--grace-period", "60")
    ref = producer.enqueue_task(Task(fleet_tasks.slow, ("twice", 30.0)))
    wait_for(lambda: client.llen("twice:starts") == 1, what="task start")
    worker.signal(signal.SIGTERM)
    worker.wait_for_log("stop taking tasks")
    worker.signal(signal.SIGINT)
    assert worker.wait(10) == 1
    assert "second SIGINT" in worker.log and ref.status() == "queued"


SHIFTED = "import time\n_real = time.time\ntime.time = lambda: _real() + {shift}\n"


def test_workers_with_skewed_clocks_agree(producer, workers, client):
    workers("--threads", "2", "--visibility-timeout", "1", "--sleep-seconds", "0.1", python_prelude=SHIFTED.format(shift=300))
    workers("--threads", "2", "--visibility-timeout", "1", "--sleep-seconds", "0.1", python_prelude=SHIFTED.format(shift=-300))
    long_run = producer.enqueue_task(Task(fleet_tasks.slow, ("skew-long", 2.0)))
    seconds, micros = client.time()
    enqueued_at = seconds + micros / 1e6
    delayed = producer.enqueue_task(Task(fleet_tasks.stamp, ("skew-delayed",), delay=1.0))
    producer.recurrent_tasks["skew"] = Recurrent(Task(fleet_tasks.stamp, ("skew-beats",)), interval=0.3, repeats=4)
    wait_for(lambda: "skew" not in producer.recurrent_tasks, timeout=30, what="schedule to end")
    assert delayed.result(timeout=30) is None and long_run.result(timeout=30)
    assert producer.join(timeout=30)
    beats = [float(t) for t in client.lrange("skew-beats", 0, -1)]
    assert len(beats) == 4, "a recurrent run fired twice or not at all"
    assert all(later - earlier > 0.2 for earlier, later in zip(beats, beats[1:])), f"runs too close: {beats}"
    assert float(client.lindex("skew-delayed", 0)) - enqueued_at > 0.95, "delayed task ran early"
    assert client.llen("skew-long:starts") == 1, "a running task was handed out again early"


def raw_task(ref: str, args: list, repeats: int = 0, retry_delay: float = 0.0, retry_backoff: float = 1.0) -> bytes:
    """A task body as any client could write it, past Task's checks."""
    return msgpack.packb([ref, args, {}, repeats, retry_delay, retry_backoff])


def test_a_task_whose_outcome_cannot_be_computed_fails_for_good_and_frees_its_slot(producer, workers, client):
    """A retry backoff that overflows, and a crash count too big for Lua's numbers: each task ends
    failed with its reason; neither stays running behind the heartbeat, holding the cap's only slot."""
    workers("--threads", "2", "--max-concurrency", "1", "--visibility-timeout", "2")
    backend = producer.backend
    backend.enqueue("default", [NewTask(raw_task("tests.fleet_tasks:always_fails", ["attempts"], 20, 1.0, 1e18))])
    client.rpush("tu:{default}:ready:0", b"fff0|0|99999999999999999999|" + raw_task("tests.fleet_tasks:mark", ["k", "v"]))
    client.zadd("tu:{default}:prios", {"0": 0})
    after = producer.enqueue_task(Task(fleet_tasks.mark, ("after", "1")))
    assert producer.join(timeout=30)
    assert after.result(timeout=1) is None
    reasons = sorted(task.reason for task in producer.failed_tasks())
    assert len(reasons) == 2, reasons
    assert any("retry delay" in reason for reason in reasons) and any("quarantined" in reason for reason in reasons)
    assert int(client.get("attempts")) == 2


def test_a_worker_that_stalls_while_idle_does_not_run_what_others_ran(producer, workers, client):
    (stalled,) = workers("--threads", "2", "--visibility-timeout", "1")
    producer.enqueue_task(Task(fleet_tasks.mark, ("warm", "1"))).result(timeout=10)
    stalled.signal(signal.SIGSTOP)
    ref = producer.enqueue_task(Task(fleet_tasks.slow, ("idle-stall", 0.1)))  # may wake the stalled one
    (other,) = workers("--threads", "2", "--visibility-timeout", "1")
    assert ref.result(timeout=30) == other.pid
    stalled.signal(signal.SIGCONT)
    producer.enqueue_task(Task(fleet_tasks.mark, ("after", "1"))).result(timeout=10)  # both look for work again
    time.sleep(1.0)  # a window for a wrong start of the task the stalled worker may have been woken for
    assert [int(pid) for pid in client.lrange("idle-stall:starts", 0, -1)] == [other.pid]


def test_claims_held_by_a_stalled_worker_are_not_started_once_others_ran_them(producer, workers, client):
    """A worker holding prefetched claims stalls past their lease: after SIGCONT it finishes the
    tasks that were running (they may run twice), and drops the claims it had not started."""
    (stalled,) = workers("--threads", "2", "--visibility-timeout", "1")
    producer.enqueue_tasks([Task(fleet_tasks.noop) for _ in range(300)])  # short tasks: it prefetches now
    assert producer.join(timeout=30)
    producer.enqueue_tasks([Task(fleet_tasks.slow, ("held", 0.5)) for _ in range(4)])
    wait_for(lambda: client.llen("held:starts") == 2, what="two running, two held")
    stalled.signal(signal.SIGSTOP)
    (other,) = workers("--threads", "4", "--visibility-timeout", "1")
    assert producer.join(timeout=30)
    stalled.signal(signal.SIGCONT)
    wait_for(lambda: client.llen("held:ends") == 6, what="the stalled worker to finish the two it ran")
    time.sleep(1.0)  # a window for a wrong start: its held claims go to its runners or its heartbeat now
    starts = [int(pid) for pid in client.lrange("held:starts", 0, -1)]
    print(f"\nstalled while holding 2 running and 2 held claims: it ran {starts.count(stalled.pid)}, the other {starts.count(other.pid)}")
    assert starts.count(stalled.pid) == 2, starts  # the two running at the stall, never the two held
    assert starts.count(other.pid) == 4, starts


def test_close_with_a_timeout_keeps_running_tasks_leased_from_a_real_worker(producer, workers, client, redis_url,
                                                                           monkeypatch):
    """A handler's task still running when close() times out keeps its lease: a worker process
    on the same capped queue does not run it, nor anything else, meanwhile."""
    monkeypatch.setenv("TASKUTILS_TEST_RECORD_URL", redis_url)
    handler = TaskHandler(redis_url, max_num_threads=2, max_concurrency=1, allow=["tests"])
    ref = handler.enqueue_task(Task(fleet_tasks.slow, ("closing", 2.0)))
    wait_for(lambda: client.llen("closing:starts") == 1, what="the task to start in the handler")
    assert handler.close(timeout=0.2) is False
    workers("--threads", "2", "--sleep-seconds", "0.2")
    other = producer.enqueue_task(Task(fleet_tasks.slow, ("waiting", 0.1)))
    time.sleep(1.0)
    assert ref.status() == "running" and other.status() == "queued"
    assert ref.result(timeout=10) == os.getpid() and other.result(timeout=10)
    assert client.llen("closing:starts") == 1


def test_a_steady_drain_logs_no_lost_lease(producer, workers):
    """With no fault at all, a short visibility timeout must not make the heartbeat report lost
    leases for claims already being settled."""
    (worker,) = workers("--threads", "8", "--visibility-timeout", "1")
    producer.enqueue_tasks([Task(fleet_tasks.slow, ("steady", 0.002)) for _ in range(3000)])
    assert producer.join(timeout=120)
    assert "lease lost" not in worker.log and "moved on" not in worker.log
