"""Keys and their limits with real taskutils-worker processes on a real redis-server."""

from __future__ import annotations

import signal

from taskutils import Limit, Task, TaskHandler

from . import fleet_tasks
from .conftest import wait_for


def server_time(client) -> float:
    seconds, micros = client.time()
    return seconds + micros / 1e6


def test_a_throttled_key_does_not_hold_up_another(producer, workers, client):
    """Head of line: 5,000 tasks of key a keep asking for 2 s more; the 50 tasks of key b
    enqueued meanwhile each finish within a second, and no task of a uses an attempt."""
    producer.enqueue_tasks([Task(fleet_tasks.throttled, ("hol:a", 2), key="a") for _ in range(5000)])
    (worker,) = workers("--threads", "2", "--sleep-seconds", "5")
    wait_for(lambda: client.get("hol:a"), what="the first throttle of key a")
    enqueued = []
    for _ in range(50):
        enqueued.append(server_time(client))
        producer.enqueue_task(Task(fleet_tasks.stamp, ("hol:b",), key="b"))
    wait_for(lambda: client.llen("hol:b") == 50, what="the 50 tasks of key b")
    finished = [float(stamp) for stamp in client.lrange("hol:b", 0, -1)]
    assert max(end - start for start, end in zip(enqueued, finished)) < 1.0
    wait_for(lambda: int(client.get("hol:a")) >= 3, what="key a throttled again after 2 s")
    # the throttle's settlement and those of claims held ahead reach Redis a moment after the
    # task's own count; while key a waits its 2 s, every task of it is back in its list
    wait_for(lambda: client.llen("tu:{default}:kq:a:0") >= 4999, timeout=1.5, what="key a's tasks back in their lane")
    heads = client.lrange("tu:{default}:kq:a:0", 0, -1)
    assert len(heads) >= 4999  # one may be running
    assert all(envelope.split(b"|")[1:3] == [b"0", b"0"] for envelope in heads)  # no failure, no crash counted
    assert producer.backend.counts("default").failed == 0
    assert worker.log.count("throttled: key 'a'") == 1  # once per key per minute, not per task


def test_key_limits_hold_across_worker_processes(producer, workers, client):
    producer.limits["p"] = Limit(concurrency=2, rate=10, per=1.0)
    producer.enqueue_tasks([Task(fleet_tasks.paced, ("pace", 0.15), key="p") for _ in range(30)])
    producer.enqueue_tasks([Task(fleet_tasks.mark, ("free", str(n)), key="free") for n in range(30)])
    workers("--threads", "3", count=2)
    assert producer.join(timeout=30)
    assert int(client.get("pace:peak")) == 2
    assert client.hlen("free") == 30
    starts = sorted(float(stamp) for stamp in client.lrange("pace:starts", 0, -1))
    assert len(starts) == 30
    # starts are stamped by the task a little after its claim: allow 50 ms of that jitter (a
    # limit kept per process instead of fleet-wide would start pairs at once, 11 in half a second)
    assert min(later - earlier for earlier, later in zip(starts, starts[1:])) > 0.1 - 0.05
    assert min(starts[k + 10] - starts[k] for k in range(len(starts) - 10)) > 1.0 - 0.05


def test_a_killed_worker_gives_its_key_slot_back_after_the_lease(producer, workers, client):
    producer.limits["k"] = Limit(concurrency=1)
    first = producer.enqueue_task(Task(fleet_tasks.slow_first_run, ("killed",), key="k"))
    producer.enqueue_task(Task(fleet_tasks.append, ("killed", "second"), key="k"))
    (doomed,) = workers("--visibility-timeout", "2")
    wait_for(lambda: client.get("killed:runs"), what="the first run")
    doomed.signal(signal.SIGKILL)
    workers("--visibility-timeout", "2")
    wait_for(lambda: client.llen("killed") == 2, timeout=20, what="both tasks after the lease expired")
    assert client.lrange("killed", 0, -1) == [b"rerun", b"second"]  # the slot was held until the lease ended
    assert first.status() == "done"


def test_a_limit_changed_while_tasks_run_applies_to_the_next_start(producer, workers, client):
    producer.limits["c"] = Limit(concurrency=1)
    producer.enqueue_tasks([Task(fleet_tasks.probe, ("change", 0.3), key="c") for _ in range(12)])
    workers("--threads", "4")
    wait_for(lambda: client.get("change:peak"), what="the first run")
    producer.limits["c"] = Limit(concurrency=3)
    assert producer.join(timeout=30)
    assert int(client.get("change:peak")) == 3


RACE = """
import sys
from taskutils import Task, TaskHandler
from tests import fleet_tasks
url, first, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with TaskHandler(url, max_num_threads=0) as producer:
    for n in range(first, first + count):
        value = f"https://a.example/{n % 50}"
        producer.enqueue_task(Task(fleet_tasks.mark, ("raced", value), unique=value, unique_for=60))
"""


def test_racing_producer_processes_enqueue_each_unique_value_once(redis_url, workers, client):
    """Four producer processes enqueue the same 50 URLs 100 times each, at once, while two
    workers run them: each URL runs once."""
    import subprocess
    import sys

    from .fleet import ROOT

    workers("--threads", "4", count=2)
    racers = [subprocess.Popen([sys.executable, "-c", RACE, redis_url, str(n * 100), "100"], cwd=ROOT)
              for n in range(4)]
    assert all(racer.wait(60) == 0 for racer in racers)
    wait_for(lambda: client.hlen("raced") == 50, what="the 50 URLs to run")
    with TaskHandler(redis_url, max_num_threads=0) as producer:
        assert producer.join(timeout=30)
    assert all(int(runs) == 1 for runs in client.hvals("raced"))


def test_a_cron_schedule_catches_up_exactly_once_across_the_fleet(producer, workers, client):
    from taskutils import Recurrent

    workers("--threads", "2", count=2)
    now = producer.backend.now()
    producer.recurrent_tasks["caught"] = Recurrent(Task(fleet_tasks.append, ("caught", "run")), cron="* * * * *",
                                                   start=now - 300, misfire="catch_up")
    missed = int(now // 60) - int(-(-(now - 300) // 60)) + 1
    wait_for(lambda: client.llen("caught") >= missed, what="the missed runs")
    assert producer.join(timeout=30)
    assert client.llen("caught") == missed  # not once per worker
