"""The hot path's per-thread connections: handed back when threads end, fresh after fork and restart."""

from __future__ import annotations

import gc
import os
import threading

import redis

from taskutils import Task, TaskHandler

from . import jobs
from .redis_server import RedisServer


def clients_of(url: str) -> int:
    """Connections the server sees, not counting the one asking."""
    with redis.Redis.from_url(url) as probe:
        return len(probe.client_list()) - 1


def test_threads_that_end_hand_their_connection_back(redis_url: str) -> None:
    with TaskHandler(redis_url, max_num_threads=0) as producer:
        producer.enqueue_task(Task(jobs.add, (1, 2)))
        before = clients_of(redis_url)

        def enqueue_once() -> None:
            producer.enqueue_task(Task(jobs.add, (1, 2)))

        for _ in range(5):  # 5 waves of 10 threads: a leak would leave 50 connections checked out
            threads = [threading.Thread(target=enqueue_once) for _ in range(10)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            gc.collect()
        pool = producer.backend.client.connection_pool
        assert len(pool._in_use_connections) <= 1  # the main thread's own
        assert clients_of(redis_url) <= before + 10  # the pool keeps at most one wave's connections idle
        assert producer.backend.counts("default").queued == 51


def test_a_forked_child_uses_its_own_connection(redis_url: str) -> None:
    with TaskHandler(redis_url, max_num_threads=0) as producer:
        producer.enqueue_task(Task(jobs.add, (1, 2)))
        child = os.fork()
        if child == 0:  # on a shared socket, parent and child would read each other's replies
            try:
                batches = [producer.enqueue_tasks([Task(jobs.add, (1, 2))] * 3) for _ in range(200)]
                os._exit(0 if all(len(batch) == 3 for batch in batches) else 3)
            except BaseException:
                os._exit(4)
        for _ in range(200):
            producer.enqueue_task(Task(jobs.add, (1, 2)))  # a crossed 3-id reply would not unpack
        _, status = os.waitpid(child, 0)
        assert os.WEXITSTATUS(status) == 0
        assert producer.backend.counts("default").queued == 1 + 600 + 200


def test_the_same_thread_goes_on_after_a_redis_restart() -> None:
    server = RedisServer().start()
    try:
        with TaskHandler(server.url, max_num_threads=0, broker_timeout=5) as producer:
            producer.enqueue_task(Task(jobs.add, (1, 2)))
            server.kill()
            server.start()
            ref = producer.enqueue_task(Task(jobs.add, (1, 2)))  # the kept connection is dead: reconnect, reload the script
            assert ref.status() == "queued"
    finally:
        server.kill()
