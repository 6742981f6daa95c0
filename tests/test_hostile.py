"""Hostile and broken input written straight into Redis: it ends in the failed store, the worker goes on."""

from __future__ import annotations

import os
import tempfile
import time
import uuid

import fakeredis
import msgpack
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taskutils import BrokerError, InvalidTask, PayloadError, Task, TaskHandler
from taskutils.backends.records import Ending, Exchange, NewTask, Settlement
from taskutils.backends.redis import RedisBackend, prefix
from taskutils.config import Settings
from taskutils.task import module_allowed
from taskutils.worker.execution import TaskExecutor

from . import fleet_tasks
from .conftest import wait_for
from .fleet import WorkerProcess

P = prefix("default")


def body(ref, args=(), kwargs=None, repeats=0):
    return msgpack.packb([ref, list(args), kwargs or {}, repeats, 0.0, 1.0])


def push_raw(client: redis.Redis, item: bytes) -> None:
    client.rpush(P + "ready:0", item)
    client.zadd(P + "prios", {"0": 0})


def test_garbage_in_every_key_ends_in_the_failed_store(redis_url):
    client = redis.Redis.from_url(redis_url)
    marker = os.path.join(tempfile.gettempdir(), f"pwned-{uuid.uuid4().hex}")
    bad_items = [
        b"plain garbage",
        b"ffffffff0001|0|0|\x93\x01",  # truncated msgpack
        b"ffffffff0002|0|0|" + msgpack.packb([1, 2, 3, 4, 5, 6]),  # wrong types
        b"ffffffff0003|0|0|" + body("tests.fleet_tasks:nope"),
        b"ffffffff0004|0|0|" + body("os:system", [f"touch {marker}"]),
        b"ffffffff0005|0|0|" + body("tests.fleet_tasks:os.system", [f"touch {marker}"]),
        b"ffffffff0006|0|0|" + body("builtins:exec", [f"open({marker!r}, 'w')"]),
        b"ffffffff0007|0|0|" + body("tests.fleet_tasks:mark", []),  # does not fit the signature
        b"ffffffff0008|0|0|" + body("tests.fleet_tasks:mark", ["k", "x" * 600_000]),  # over max_payload
    ]
    for item in bad_items:
        push_raw(client, item)
    client.zadd(P + "scheduled", {b"not a member": 0, b"max|ffffffff0009|0|0|\xc1": 0})
    client.hset(P + "inflight", "ffffffff000a", b"junk without bars")
    client.zadd(P + "leases", {"ffffffff000a": 0})
    client.zadd(P + "prios", {"not-a-level": -5})
    worker = WorkerProcess(redis_url, "--import", "tests.fleet_tasks", "--threads", "2")
    try:
        with TaskHandler(redis_url, max_num_threads=0) as producer:
            good = producer.enqueue_task(Task(fleet_tasks.mark, ("ok", "1")))
            assert good.result(timeout=30) is None
            assert producer.join(timeout=30)
            reasons = sorted(task.reason for task in producer.failed_tasks())
        assert len(reasons) == len(bad_items) + 3, reasons
        text = "\n".join(reasons)
        for expected in ("not valid msgpack", "wrong type", "has no function 'nope'", "is not allowed",
                         "arguments do not fit", "over max_payload"):
            assert expected in text, (expected, reasons)
        assert not os.path.exists(marker), "a task from Redis ran os.system"
        assert worker.alive()
    finally:
        worker.kill()
        client.close()


def hostile_executor() -> TaskExecutor:
    """An executor allowed to run tests.fleet_tasks only, as a worker started with --import would be."""
    allowed = ("tests.fleet_tasks",)
    return TaskExecutor(Settings.build({}), lambda m: module_allowed(m, allowed), "hypothesis")


def claim(backend: RedisBackend, want: int) -> list:
    return backend.exchange(Exchange("default", "hypothesis", (), want)).claims


def drain(backend: RedisBackend, executor: TaskExecutor) -> None:
    """Claim and run until nothing is ready, the way a worker does, on this thread."""
    while True:
        claims = claim(backend, 10)
        if not claims:
            return
        settlements = [executor.run(held) for held in claims]
        assert all(backend.exchange(Exchange("default", "hypothesis", settlements, result_ttl=60)).applied)


msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text() | st.binary(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12,
)


def fresh_fake_backend() -> tuple[RedisBackend, redis.Redis]:
    client = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    return RedisBackend(client), client


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=st.lists(st.binary(max_size=64), min_size=1, max_size=5), bodies=st.lists(msgpack_values, max_size=3))
def test_random_bytes_and_payloads_never_break_a_worker(raw, bodies):
    backend, client = fresh_fake_backend()
    for item in raw:
        push_raw(client, item)
    for index, value in enumerate(bodies):
        push_raw(client, f"{index:012x}|0|0|".encode() + msgpack.packb(value))
        client.zadd(P + "scheduled", {msgpack.packb(value) + b"#%d" % index: 0})  # members must differ
    drain(backend, hostile_executor())
    counts = backend.counts("default")
    assert (counts.queued, counts.running, counts.scheduled) == (0, 0, 0)
    assert counts.failed == len(raw) + 2 * len(bodies)


@settings(max_examples=25, deadline=None)
@given(raw=st.lists(st.binary(max_size=64), min_size=1, max_size=5))
def test_random_bytes_on_a_real_server(raw, redis_server):
    backend = RedisBackend.from_url(redis_server.url)
    backend.client.flushall()
    for item in raw:
        push_raw(backend.client, item)
    drain(backend, hostile_executor())
    assert backend.counts("default").failed == len(raw)
    backend.close()


def test_queue_key_of_the_wrong_type_is_reported_and_the_worker_goes_on(redis_url):
    client = redis.Redis.from_url(redis_url)
    client.set(P + "prios", "not a sorted set")
    worker = WorkerProcess(redis_url, "--import", "tests.fleet_tasks", "--threads", "1", "--queue", "default", "--queue", "other", "--sleep-seconds", "0.2")
    try:
        worker.wait_for_log("WRONGTYPE")
        with TaskHandler(redis_url, max_num_threads=0, queue="other") as producer:
            assert producer.enqueue_task(Task(fleet_tasks.mark, ("ok", "2"))).result(timeout=30) is None
        assert worker.alive()
    finally:
        worker.kill()
        client.close()


def raw_backends(redis_url: str) -> list[RedisBackend]:
    """A real server's backend and a fakeredis one, both flushed."""
    real = RedisBackend.from_url(redis_url)
    real.client.flushall()
    return [real, fresh_fake_backend()[0]]


def test_copied_envelopes_run_under_their_own_ids_and_lose_nothing(redis_url):
    for backend in raw_backends(redis_url):
        envelope = b"ffffffff0001|0|0|" + body("tests.fleet_tasks:mark", ["k", "v"])
        backend.client.hset(P + "failed", "ffffffff0002", b"0|ffffffff0002|0|0|kept")
        for item in (envelope, envelope, b"ffffffff0002|0|0|" + body("tests.fleet_tasks:mark", ["k", "w"])):
            push_raw(backend.client, item)  # two copies in one batch, and one whose id is in the failed store
        claims = claim(backend, 10)
        seqs = [held.task_id.partition("-")[2] for held in claims]
        assert len(claims) == 3 and len(set(seqs)) == 3
        assert seqs[0] == "ffffffff0001" and claims[0].body == claims[1].body
        assert seqs[2] != "ffffffff0002"  # that one belongs to the failed task
        assert backend.client.hget(P + "failed", "ffffffff0002") == b"0|ffffffff0002|0|0|kept"
        assert all(backend.status("default", held.task_id)[0] == "running" for held in claims)
        backend.close()


def test_a_settlement_sent_twice_in_one_round_trip_applies_once(redis_url):
    for backend in raw_backends(redis_url):
        push_raw(backend.client, b"ffffffff0001|0|0|" + body("tests.fleet_tasks:mark", ["k", "v"]))
        (held,) = claim(backend, 1)
        retry = Settlement(held, Ending.RETRY)
        assert backend.exchange(Exchange("default", "twice", [retry, retry])).applied == [True, False]
        assert backend.counts("default").queued == 1  # put back once, not twice
        backend.close()


def test_a_key_of_the_wrong_type_fails_whole_calls_quietly_until_it_is_repaired(redis_url):
    """A task's state bucket overwritten with a string while the task runs: its settlement is
    refused before anything is written (no outcome beside a lease still held), the worker retries
    with backoff instead of at once, and once the key is deleted the task settles."""
    client = redis.Redis.from_url(redis_url)
    worker = WorkerProcess(redis_url, "--import", "tests.fleet_tasks", "--threads", "2")
    try:
        with TaskHandler(redis_url, max_num_threads=0) as producer:
            ref = producer.enqueue_task(Task(fleet_tasks.slow, ("broken", 1.0)))
            wait_for(lambda: client.llen("broken:starts") == 1, what="the task to start")
            seq = int(ref.id.partition("-")[2], 16)
            state, outcome = P + f"state:{seq // 64:x}", P + f"outcome:{seq // 64:x}"
            client.delete(state)
            client.set(state, "not a hash")
            wait_for(lambda: client.llen("broken:ends") == 1, what="the task to end")
            worker.wait_for_log("WRONGTYPE")
            seen = []
            for _ in range(20):  # never an outcome while the lease is still held
                seen.append((client.hexists(P + "inflight", f"{seq:x}"), client.hexists(outcome, str(seq % 64))))
                time.sleep(0.05)
            assert set(seen) == {(True, False)}, seen
            before = client.info("stats")["total_commands_processed"]
            time.sleep(1.0)
            rate = client.info("stats")["total_commands_processed"] - before - 1
            print(f"\na wrong-typed key: {rate} commands/s from the worker")
            assert rate < 60  # no hot loop
            client.delete(state)  # the operator repairs the queue (the states of that bucket go with it)
            wait_for(lambda: client.hexists(outcome, str(seq % 64)), timeout=30, what="the settlement to go through")
            assert ref.result(timeout=1) == worker.pid and ref.status() == "done"
            assert worker.alive()
    finally:
        worker.kill()
        client.close()


@pytest.mark.parametrize("bad", [
    {"delay": float("nan")}, {"delay": float("inf")}, {"retry_delay": float("nan"), "repeats_on_failure": 1},
    {"retry_backoff": float("nan"), "repeats_on_failure": 1}, {"retry_backoff": 2.0**64, "retry_delay": 1, "repeats_on_failure": 3},
    {"queue": ""},
])
def test_absurd_task_settings_are_refused_before_anything_is_stored(redis_url, bad):
    worker = WorkerProcess(redis_url, "--import", "tests.fleet_tasks", "--threads", "1")
    try:
        with TaskHandler(redis_url, max_num_threads=0) as producer:
            with pytest.raises(InvalidTask) as refused:
                producer.enqueue_task(Task(fleet_tasks.mark, ("absurd", "1"), **bad))
            assert next(iter(bad)) in str(refused.value)  # the message names the field
            assert producer.backend.counts("default").pending == 0 and producer.join(timeout=5)
    finally:
        worker.kill()


def test_arguments_nested_too_deep_are_a_payload_error(redis_url):
    deep: list = []
    tip = deep
    for _ in range(3000):
        tip.append([])
        tip = tip[0]
    with TaskHandler(redis_url, max_num_threads=0) as producer:
        with pytest.raises(PayloadError, match="nested too deep"):
            producer.enqueue_task(Task(fleet_tasks.mark, ("deep", deep)))
        assert producer.backend.counts("default").pending == 0


def test_a_claim_that_meets_a_broken_list_takes_nothing(redis_url):
    """Two priority levels are ready; the lower level's list holds the wrong type. The claim fails
    whole: the tasks of the higher level are not taken out without a lease."""
    for backend in raw_backends(redis_url):
        ids = backend.enqueue("default", [NewTask(body("tests.fleet_tasks:mark", ["k", "v"]), 5) for _ in range(2)])
        backend.client.set(P + "ready:0", "not a list")
        backend.client.zadd(P + "prios", {"0": 0})
        with pytest.raises(BrokerError):
            claim(backend, 4)
        assert backend.client.llen(P + "ready:5") == 2
        assert all(backend.status("default", task_id)[0] == "queued" for task_id in ids)
        backend.client.delete(P + "ready:0")
        assert [held.task_id for held in claim(backend, 4)] == ids
        backend.close()


def test_a_broken_key_lane_does_not_hold_up_the_other_keys(redis_url):
    """One key's list holds the wrong type: the other keys' tasks are claimed, and once nothing
    else is left the claim reports the broken key."""
    for backend in raw_backends(redis_url):
        fine = backend.enqueue("default", [NewTask(body("tests.fleet_tasks:mark", ["k", "v"]), 0, 0, "fine")] * 2)
        backend.enqueue("default", [NewTask(body("tests.fleet_tasks:mark", ["k", "v"]), 0, 0, "broken")])
        backend.client.delete(P + "kq:broken:0")
        backend.client.set(P + "kq:broken:0", "not a list")
        assert [held.task_id for held in claim(backend, 4)] == fine
        assert claim(backend, 4) == []  # the broken key waits a second before it is tried again
        time.sleep(1.05)
        with pytest.raises(BrokerError) as refused:
            claim(backend, 4)
        if not isinstance(backend.client, fakeredis.FakeRedis):  # fakeredis drops the text of a script's error
            assert "WRONGTYPE tu:{default}:kq:broken:0" in str(refused.value)
        backend.close()


def test_damaged_counts_and_limits_written_by_hand_do_not_stop_a_key(redis_url):
    for backend in raw_backends(redis_url):
        backend.client.set(P + "kqueued", "garbage")
        backend.client.hset(P + "limits", "k", "zero|nan|-1|x|1")  # no usable bound: unlimited
        ids = backend.enqueue("default", [NewTask(body("tests.fleet_tasks:mark", ["k", "v"]), 0, 0, "k")] * 3)
        assert backend.counts("default").queued == 3
        assert [held.task_id for held in claim(backend, 5)] == ids
        backend.close()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1, "soon", True])
def test_throttled_with_a_bad_retry_after_is_a_clear_failure(bad):
    from taskutils import Throttled

    with pytest.raises(ValueError, match="retry_after"):
        Throttled(retry_after=bad)


@pytest.mark.parametrize("broken, settles", [("cancel_run", False), ("state:0", False), ("turns", False),
                                             ("later", False), ("cancel_q", True)])  # the task is keyed
def test_a_new_key_of_the_wrong_type_fails_its_step_whole(redis_url, broken, settles):
    """Each key an exchange may write is checked before its step writes: a key the settling
    step writes refuses the settlement whole (the task stays leased); a key only the claiming
    step writes lets the settlement through and refuses the claim. Either way nothing is half
    done, and once the key is repaired the queue goes on."""
    for backend in raw_backends(redis_url):
        backend.enqueue("default", [NewTask(body("tests.fleet_tasks:mark", ["k", "v"]), 0, 0, "k", "u", 0.0)])
        (held,) = claim(backend, 1)
        backend.client.delete(P + broken)
        backend.client.set(P + broken, "not what taskutils keeps there")
        with pytest.raises(BrokerError):
            backend.exchange(Exchange("default", "c", (Settlement(held, Ending.DONE),), 1))
        assert backend.counts("default").running == (0 if settles else 1)
        backend.client.delete(P + broken)
        applied = backend.exchange(Exchange("default", "c", (Settlement(held, Ending.DONE),), 1)).applied
        assert applied == [not settles] and backend.counts("default").pending == 0
        backend.close()


def test_unique_holds_written_in_seconds_by_the_version_before_still_hold(redis_url):
    """Holds after a task ended are kept in ms now; the version before wrote seconds. A hold in
    seconds still holds until its time, and is taken over (and swept) once that time passed."""
    from taskutils.backends.redis_scripts import unique_digest

    for backend in raw_backends(redis_url):
        epoch = backend.enqueue("default", [NewTask(body("tests.fleet_tasks:mark", ["k", "v"]))])[0].split("-")[0]
        for value, until in (("kept", time.time() + 600), ("over", time.time() - 600)):
            digest = unique_digest(value)
            backend.client.hset(P + "up:" + digest[:4], digest[4:], f"ffff|{until!r}")
        kept, over = (backend.enqueue("default", [NewTask(body("tests.fleet_tasks:mark", ["k", v]), unique=v)])[0]
                      for v in ("kept", "over"))
        assert kept == f"{epoch}-ffff" and over != f"{epoch}-ffff"
        backend.close()


def test_status_reads_a_queue_whose_config_key_is_broken(redis_url):
    """`status` shows every queue even if one's config key (its cap, default limit and pause)
    holds the wrong type; pausing that queue says which key is wrong."""
    from .test_admin_cli import taskutils

    client = redis.Redis.from_url(redis_url)
    client.flushall()
    with TaskHandler(redis_url, max_num_threads=0, queue="broken") as producer:
        producer.enqueue_task(Task(fleet_tasks.mark, ("k", "v")))
    client.delete(prefix("broken") + "config")
    client.set(prefix("broken") + "config", "garbage")
    status = taskutils(redis_url, "status")
    assert status.returncode == 0 and any(line.split()[:3] == ["broken", "0", "1"] for line in status.stdout.splitlines())
    paused = taskutils(redis_url, "pause", "broken")
    assert paused.returncode == 1 and "tu:{broken}:config holds a string" in paused.stderr
    client.close()


def test_a_broken_history_key_loses_counts_never_the_exchange_that_carries_them(redis_url):
    client = redis.Redis.from_url(redis_url)
    backend = RedisBackend.from_url(redis_url)
    (task_id,) = backend.enqueue("default", [NewTask(body("tests.fleet_tasks:noop"))])
    minute = int(backend.now() // 60)
    client.set(P + f"hist:{minute // 60}", "not a hash")
    reply = backend.exchange(Exchange("default", "c", want=1, tally=((minute, 1, 0, 0),)))
    assert [claim.task_id for claim in reply.claims] == [task_id]
    done = backend.exchange(Exchange("default", "c", [Settlement(reply.claims[0], Ending.DONE)], result_ttl=60))
    assert done.applied == [True] and backend.history("default", minute - 60) == {}
    client.delete(P + f"hist:{minute // 60}")
    backend.exchange(Exchange("default", "c", tally=((minute, 2, 0, 0), (minute, 0, 1, 0))))
    assert backend.history("default", minute) == {minute: (2, 1, 0)}
    client.hset(P + f"hist:{minute // 60}", mapping={"x": "y", "": "1", f"{minute % 60}d": "oops"})
    assert backend.history("default", minute) == {minute: (0, 1, 0)}  # garbage fields are skipped


def test_purge_refuses_a_broken_lane_whole_and_purges_the_rest(redis_url):
    client = redis.Redis.from_url(redis_url)
    backend = RedisBackend.from_url(redis_url)
    backend.enqueue("default", [NewTask(body("tests.fleet_tasks:noop"), key="good"), NewTask(body("m:f"), key="bad")])
    backend.enqueue("default", [NewTask(body("tests.fleet_tasks:noop"))])
    client.delete(P + "kq:bad:0")
    client.set(P + "kq:bad:0", "not a list")
    with pytest.raises(BrokerError, match="purged 2 task.s. of 'default', but not those of 'bad': .*WRONGTYPE"):
        backend.purge("default")
    assert backend.counts("default").queued == 1  # the bad key's, in its kqueued count
    client.delete(P + "kq:bad:0")
    assert backend.purge("default") == 0
