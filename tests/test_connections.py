"""The hot path's per-thread connections: closed when threads end, fresh after fork and restart,
and exchanges pipelined on them that lose their reply."""

from __future__ import annotations

import gc
import os
import threading

import pytest
import redis

from taskutils import Task, TaskHandler
from taskutils.backends.connections import ThreadConnections
from taskutils.backends.records import Ending, Exchange, NewTask, Settlement
from taskutils.backends.redis_client import outage_retry

from . import jobs
from .conftest import wait_for
from .redis_server import RedisServer


def clients_of(url: str) -> int:
    """Connections the server sees, not counting the one asking."""
    with redis.Redis.from_url(url) as probe:
        return len(probe.client_list()) - 1


def break_next_read(monkeypatch) -> None:
    """The next reply read on any connection is lost, as if the connection reset."""
    read_response = redis.connection.AbstractConnection.read_response

    def broken_once(connection, *args, **kwargs):
        monkeypatch.setattr(redis.connection.AbstractConnection, "read_response", read_response)
        connection.disconnect()
        raise redis.ConnectionError("connection reset (injected)")

    monkeypatch.setattr(redis.connection.AbstractConnection, "read_response", broken_once)


def test_threads_that_end_close_their_connection(redis_url: str) -> None:
    with TaskHandler(redis_url, max_num_threads=0) as producer:
        producer.enqueue_task(Task(jobs.add, (1, 2)))
        before = clients_of(redis_url)

        def enqueue_once() -> None:
            producer.enqueue_task(Task(jobs.add, (1, 2)))

        for _ in range(5):  # 5 waves of 10 threads: a leak would leave 50 connections open
            threads = [threading.Thread(target=enqueue_once) for _ in range(10)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            gc.collect()
        assert clients_of(redis_url) <= before + 1
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


def test_exchanges_in_flight_survive_a_lost_connection_and_lost_scripts(redis_url: str, monkeypatch) -> None:
    """A reply lost with the connection, or refused because the server lost its scripts, is made
    up for by running the exchange again; claims whose reply was lost come back when their lease
    expires. Every task still runs to the end exactly once."""
    with TaskHandler(redis_url, max_num_threads=0) as producer:
        backend = producer.backend
        ids = backend.enqueue("q", [NewTask(Task(jobs.add, (1, 2)).encode()) for _ in range(6)])
        first = backend.send_exchange(Exchange("q", "c1", (), 2, 1.0))
        second = backend.send_exchange(Exchange("q", "c1", (), 2, 1.0))
        break_next_read(monkeypatch)
        claims = first().claims + second().claims  # both replies lost: both run again
        backend.client.script_flush()
        done = [Settlement(claim, Ending.DONE) for claim in claims]
        settle = backend.send_exchange(Exchange("q", "c1", done[:1], 0, 1.0))
        settle_rest = backend.send_exchange(Exchange("q", "c1", done[1:], 0, 1.0))
        assert settle().applied + settle_rest().applied == [True] * len(claims)
        finished = {claim.task_id for claim in claims}

        def finish_what_comes_back() -> bool:
            for claim in backend.exchange(Exchange("q", "c2", (), 6, 30)).claims:
                assert claim.task_id not in finished
                assert backend.exchange(Exchange("q", "c2", [Settlement(claim, Ending.DONE)])).applied == [True]
                finished.add(claim.task_id)
            return len(finished) == 6

        wait_for(finish_what_comes_back, what="the lost claims' leases to expire and their tasks to end")
        assert finished == set(ids) and backend.counts("q").pending == 0


def test_a_settlement_sent_again_after_its_reply_was_lost_is_reported_unknown(redis_url: str, monkeypatch) -> None:
    """The lost attempt settled the task, so the second attempt is refused: the backend reports
    that as unknown (None), which the worker logs as most likely settled (test_exchanger.py)."""
    with TaskHandler(redis_url, max_num_threads=0) as producer:
        backend = producer.backend
        backend.enqueue("q", [NewTask(Task(jobs.add, (1, 2)).encode())])
        (claim,) = backend.exchange(Exchange("q", "c1", (), 1)).claims
        settle = backend.send_exchange(Exchange("q", "c1", [Settlement(claim, Ending.DONE, b"")], result_ttl=60))
        wait_for(lambda: backend.client.zcard("tu:{q}:leases") == 0, what="the server to run the settlement")
        break_next_read(monkeypatch)
        assert settle().applied == [None]
        assert backend.status("q", claim.task_id) == (None, b"")  # the outcome the lost attempt kept


def test_a_plain_command_waits_for_replies_sent_ahead(redis_url: str) -> None:
    connections = ThreadConnections(redis.Redis.from_url(redis_url), outage_retry(5))
    read = connections.send("PING")
    with pytest.raises(RuntimeError, match="unread"):
        connections.execute("PING")  # it would take the first reply for its own
    assert read() == b"PONG" and connections.execute("ECHO", "x") == b"x"
    connections.close()
