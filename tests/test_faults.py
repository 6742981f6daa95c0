"""Faults injected into real workers on a real redis-server: kills, stalls, poison, shutdown, clock skew."""

from __future__ import annotations

import signal
import time

import pytest

from taskutils import Recurrent, Task

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
