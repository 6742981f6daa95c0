"""Redis outages and restarts: workers ride them out, producers fail clearly, persistence keeps enqueues."""

from __future__ import annotations

import time

import pytest
import redis

from taskutils import BackendUnavailable, Task, TaskHandler

from . import fleet_tasks
from .fleet import WorkerProcess
from .redis_server import RedisServer


@pytest.fixture
def broker():
    server = RedisServer(persist="everysec").start()
    yield server
    server.kill()


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
