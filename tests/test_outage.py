"""Redis outages and restarts: workers ride them out, producers fail clearly, persistence keeps enqueues."""

from __future__ import annotations

import time

import pytest
import redis

from taskutils import BackendUnavailable, Task, TaskHandler, TaskNotFound
from taskutils.backends.redis import prefix

from . import fleet_tasks
from .conftest import wait_for
from .fleet import WorkerProcess
from .redis_server import RedisServer


@pytest.fixture
def broker():
    server = RedisServer(persist="everysec").start()
    yield server
    server.kill()


@pytest.fixture
def lossy_broker():
    """A redis-server of the test's own that keeps nothing on disk and refuses writes when full."""
    server = RedisServer("--maxmemory-policy", "noeviction").start()
    yield server
    server.kill()


@pytest.fixture
def record(redis_url):
    """Where the tasks record what they did: the session's Redis, which the faults do not touch."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def broker_workers(redis_url):
    """Starts taskutils-worker processes on a broker of the test's own, recording into `record`."""
    started: list[WorkerProcess] = []

    def start(server: RedisServer, *args: str, count: int = 1) -> list[WorkerProcess]:
        new = [WorkerProcess(server.url, "--import", "tests.fleet_tasks", *args, record_url=redis_url) for _ in range(count)]
        started.extend(new)
        return new

    yield start
    for worker in started:
        worker.kill()


def ride_out_outage(broker: RedisServer, record_url: str, outage_seconds: float) -> None:
    record = redis.Redis.from_url(record_url)
    # a claim whose reply the outage swallows comes back after the visibility timeout: keep it short
    args = ("--import", "tests.fleet_tasks", "--threads", "2", "--sleep-seconds", "0.5", "--visibility-timeout", "3")
    workers = [WorkerProcess(broker.url, *args, record_url=record_url) for _ in range(2)]
    try:
        with TaskHandler(broker.url, max_num_threads=0) as producer:
            producer.enqueue_tasks([Task(fleet_tasks.slow, ("outage", 0.01)) for _ in range(300)])
            time.sleep(0.3)
            broker.stop()
            time.sleep(outage_seconds)
            broker.start()
            restarted = time.monotonic()
            assert producer.join(timeout=120)
            drained_after = time.monotonic() - restarted
        done = record.llen("outage:ends")
        print(f"\noutage {outage_seconds}s: 300 tasks, {done} runs, queue drained {drained_after:.1f}s after the restart")
        assert done >= 300
        for worker in workers:
            assert worker.alive()
            worker.wait_for_log("reachable again", timeout=30)
            assert worker.log.count("broker unreachable") == 1, worker.log
            print(next(line for line in worker.log.splitlines() if "reachable again" in line))
    finally:
        for worker in workers:
            worker.kill()
        record.close()


def test_workers_ride_out_a_redis_restart(broker, redis_url):
    ride_out_outage(broker, redis_url, outage_seconds=3)


@pytest.mark.slow
def test_workers_ride_out_a_ten_second_outage(broker, redis_url):
    ride_out_outage(broker, redis_url, outage_seconds=10)


def test_enqueue_during_an_outage_fails_after_broker_timeout():
    server = RedisServer(password="hunter2-secret").start()
    producer = TaskHandler(server.url, max_num_threads=0, broker_timeout=1)
    server.kill()
    started = time.monotonic()
    with pytest.raises(BackendUnavailable) as failure:
        producer.enqueue_task(Task(fleet_tasks.mark, ("x", "1")))
    assert time.monotonic() - started < 15, "enqueue must not hang through an outage"
    assert "hunter2-secret" not in str(failure.value)
    producer.close()


@pytest.mark.parametrize("fsync", ["always", "everysec"])
def test_acknowledged_enqueues_survive_a_redis_crash(fsync):
    server = RedisServer(persist=fsync).start()
    try:
        with TaskHandler(server.url, max_num_threads=0) as producer:
            producer.enqueue_tasks([Task(fleet_tasks.mark, ("x", str(n))) for n in range(400)])
            for n in range(100):
                producer.enqueue_task(Task(fleet_tasks.mark, ("x", str(n))))
        server.kill()  # SIGKILL right after the last acknowledged enqueue
        server.start()
        with TaskHandler(server.url, max_num_threads=0) as producer:
            assert producer.backend.counts("default").queued == 500
    finally:
        server.kill()


def test_without_persistence_a_restart_loses_the_queue():
    server = RedisServer().start()
    try:
        with TaskHandler(server.url, max_num_threads=0) as producer:
            producer.enqueue_tasks([Task(fleet_tasks.mark, ("x", str(n))) for n in range(10)])
        server.kill()
        server.start()
        with TaskHandler(server.url, max_num_threads=0) as producer:
            assert producer.backend.counts("default").queued == 0
    finally:
        server.kill()


def test_evicting_redis_is_warned_about(caplog):
    server = RedisServer("--maxmemory-policy", "allkeys-lru").start()
    try:
        worker = WorkerProcess(server.url)
        worker.kill()
        assert "maxmemory-policy is 'allkeys-lru'" in worker.log
        with TaskHandler(server.url, max_num_threads=0):
            pass
        assert "set it to 'noeviction'" in caplog.text
    finally:
        server.kill()


def test_a_task_of_a_redis_that_lost_its_data_cannot_settle_a_new_one(lossy_broker, broker_workers, record):
    """Redis restarts empty while a task runs; a new task gets the same sequence number. The old
    task's outcome must not settle the new one, and its TaskRef must not read the new one's."""
    workers = broker_workers(lossy_broker, "--threads", "1", "--sleep-seconds", "0.5", count=2)
    with TaskHandler(lossy_broker.url, max_num_threads=0) as producer:
        first = producer.enqueue_task(Task(fleet_tasks.slow, ("first", 2.0)))
        wait_for(lambda: record.llen("first:starts") == 1, what="the first task to start")
    first_pid = int(record.lindex("first:starts", 0))
    lossy_broker.kill()
    lossy_broker.start()  # empty: no persistence
    with TaskHandler(lossy_broker.url, max_num_threads=0) as producer:
        second = producer.enqueue_task(Task(fleet_tasks.slow, ("second", 4.0)))
        wait_for(lambda: record.llen("second:starts") == 1, timeout=20, what="the second task to start")
        wait_for(lambda: record.llen("first:ends") == 1, timeout=20, what="the first task to end")
        next(w for w in workers if w.pid == first_pid).wait_for_log("its lease had moved on")  # its outcome came, refused
        assert second.status() == "running"
        with pytest.raises(TaskNotFound):
            producer.task(first.id).status()
        assert second.result(timeout=20) != first_pid


def commands_per_second(client: redis.Redis, seconds: float) -> float:
    before = client.info("stats")["total_commands_processed"]
    time.sleep(seconds)
    return (client.info("stats")["total_commands_processed"] - before - 1) / seconds


def test_a_redis_out_of_memory_is_waited_out_quietly_and_loses_nothing(lossy_broker, broker_workers, record):
    """Under maxmemory with noeviction Redis refuses the scripts: the workers back off instead of
    retrying at once (one error logged each), and once memory is back every waiting task runs,
    once (the 8 running through the episode may run again if their leases ran out meanwhile)."""
    workers = broker_workers(lossy_broker, "--threads", "4", "--visibility-timeout", "5", count=2)
    client = redis.Redis.from_url(lossy_broker.url)
    with TaskHandler(lossy_broker.url, max_num_threads=0) as producer:
        producer.enqueue_tasks([Task(fleet_tasks.slow, ("oom-slow", 1.5)) for _ in range(8)])
        producer.enqueue_tasks([Task(fleet_tasks.mark, ("oom", str(n))) for n in range(300)])
        wait_for(lambda: record.llen("oom-slow:starts") == 8, what="every thread to run a slow task")
        client.config_set("maxmemory", max(client.info("memory")["used_memory"] // 2, 1))
        rate = commands_per_second(client, 2.0)  # the slow tasks end in it: their exchanges are refused
        refused = client.info("errorstats").get("errorstat_OOM", {}).get("count", 0)
        print(f"\nout of memory: {rate:.0f} commands/s from 2 workers, {refused} refused")
        assert refused > 0
        assert rate < 100, rate
        client.config_set("maxmemory", 0)
        assert producer.join(timeout=60)
    client.close()
    assert len(record.hgetall("oom")) == 300 and set(record.hgetall("oom").values()) == {b"1"}
    assert record.llen("oom-slow:ends") >= 8
    assert any("cannot be served" in worker.log for worker in workers)
    for worker in workers:
        assert worker.alive() and worker.log.count("cannot be served") <= 1, worker.log


def test_idle_workers_take_new_work_at_once_after_redis_restarts_empty(lossy_broker, broker_workers):
    """Their waits break with the connection, and they register again on the new server at once,
    instead of waiting out sleep_seconds unregistered."""
    broker_workers(lossy_broker, "--threads", "2", "--sleep-seconds", "60", count=2)
    with TaskHandler(lossy_broker.url, max_num_threads=0) as producer:
        producer.enqueue_task(Task(fleet_tasks.mark, ("before", "1"))).result(timeout=10)
    lossy_broker.kill()
    lossy_broker.start()
    fresh = redis.Redis.from_url(lossy_broker.url)
    wait_for(lambda: fresh.zcard(prefix("default") + "idle") == 2, what="both workers to wait on the new server")
    fresh.close()
    with TaskHandler(lossy_broker.url, max_num_threads=0) as producer:
        assert producer.enqueue_task(Task(fleet_tasks.mark, ("after", "1"))).result(timeout=20) is None  # well before 60 s
