"""current_task().enqueue_on_success: follow-up tasks enqueued with their task's outcome, in one
atomic step, on every backend; refused follow-ups and a killed worker on Redis."""

from __future__ import annotations

import logging

import pytest

from taskutils import Task
from taskutils.backends.records import Ending, Exchange, NewTask, Settlement
from taskutils.backends.redis import prefix
from taskutils.worker.leaving import settle_at_exit

from . import fleet_tasks, jobs
from .conftest import wait_for

BODY = Task(jobs.add, (1, 2)).encode()


def test_follow_ups_are_enqueued_when_the_task_succeeds(make_handler, key):
    handler = make_handler()
    ref = handler.enqueue_task(Task(jobs.follow_up, (key, [1, 2, 3])))
    assert ref.result(timeout=10) == 3
    assert handler.join(timeout=10)
    assert sorted(jobs.calls[key]) == [1, 2, 3]


def test_a_failed_attempt_enqueues_none_and_its_retry_enqueues_its_own(make_handler, key):
    handler = make_handler()
    ref = handler.enqueue_task(Task(jobs.follow_up, (key, ["a", "b"]), {"fail_first": True}, repeats_on_failure=1))
    assert ref.result(timeout=10) == 2
    assert handler.join(timeout=10)
    assert jobs.calls[key + ":runs"] == [1, 2]
    assert sorted(jobs.calls[key]) == ["a", "b"]


def test_a_task_failed_for_good_or_throttled_enqueues_none(make_handler, key):
    handler = make_handler()
    failed = handler.enqueue_task(Task(jobs.follow_up, (key, ["lost"]), {"fail_always": True}))
    throttled = handler.enqueue_task(Task(jobs.follow_up, (key, ["kept"]), {"throttle_first": True}))
    assert throttled.result(timeout=10) == 1
    assert handler.join(timeout=10)
    assert failed.status() == "failed"
    assert jobs.calls[key] == ["kept"]  # the throttled run asked for it too: only the run that succeeded counts


def test_keyed_delayed_and_unique_follow_ups(make_handler, key):
    """Follow-ups take the options of any task: a key, a delay, a unique value. A value held by a
    pending task, by the task that asks (it still runs), or by an earlier follow-up of the same
    run is enqueued once."""
    handler = make_handler()
    held = handler.enqueue_task(Task(jobs.record, (key, "held"), unique="u:held", delay=0.3))
    asking = Task(jobs.follow_up, (key, ["self", "held", "new", "new"]), {"unique": "u:", "key": "site"}, unique="u:self")
    assert handler.enqueue_task(asking).result(timeout=10) == 4
    delayed = handler.enqueue_task(Task(jobs.follow_up, (key, ["later"]), {"delay": 0.2}))
    assert delayed.result(timeout=10) == 1
    assert handler.join(timeout=10)
    assert held.status() == "done"
    assert sorted(jobs.calls[key]) == ["held", "later", "new"]


def test_bad_follow_ups_are_refused_in_the_task_that_asks(make_handler, key):
    handler = make_handler(max_payload=10_000)
    other = handler.enqueue_task(Task(jobs.follow_up_refused, ({"queue": "elsewhere"},)))
    huge = handler.enqueue_task(Task(jobs.follow_up_refused, ({}, 20_000)))
    assert other.result(timeout=10).startswith("InvalidTask: enqueue_on_success enqueues on this task's queue")
    assert huge.result(timeout=10).startswith("PayloadError: task 0 (tests.jobs:record) encodes to")
    assert handler.join(timeout=10)
    assert jobs.calls["never"] == []


BREAKAGES = {  # a key the follow-ups write, how it is broken, how an operator mends it
    "a lane of the wrong type": ("kq:site:0", lambda client, key: client.set(key, "not a list"), lambda client, key: client.delete(key)),
    "garbage where the sequence number is": ("seq", lambda client, key: client.set(key, "garbage"), lambda client, key: client.set(key, 1000)),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
@pytest.mark.parametrize("connect", ["fakeredis", "redis", "redis-evalsha"], indirect=True)
def test_follow_ups_refused_by_the_broker_leave_the_outcome_unrecorded_and_the_task_retried(
    make_handler, backend, key, caplog, breakage,
):
    """A key the follow-ups write, broken by hand, refuses them: the done outcome is not recorded
    either (nothing half done), the run counts as a failed attempt with the reason, naming the
    key, and once the key is mended the retry enqueues them. (The embedded backend has no keys
    an operator could overwrite.)"""
    handler = make_handler()
    ref = handler.enqueue_task(
        Task(jobs.follow_up, (key, ["x"]), {"key": "site"}, repeats_on_failure=1, retry_delay=0.5)
    )
    suffix, breaks, mend = BREAKAGES[breakage]
    bad = prefix("default") + suffix
    breaks(backend.client, bad)
    with caplog.at_level(logging.WARNING, logger="taskutils.worker"):
        wait_for(lambda: jobs.calls[key + ":runs"] and ref.status() == "scheduled", what="the retry to wait")
    assert any("could not be enqueued" in r.getMessage() and bad in r.getMessage() for r in caplog.records)
    mend(backend.client, bad)
    assert ref.result(timeout=10) == 1
    assert handler.join(timeout=10)
    assert jobs.calls[key + ":runs"] == [1, 2]
    assert jobs.calls[key] == ["x"]


def test_a_worker_killed_before_settling_enqueues_no_follow_ups(redis_url, producer, workers, client, key):
    """Real workers: the first run kills its worker after asking for follow-ups; they are never
    enqueued, and the run on the live worker after the lease expires enqueues its own, once."""
    workers("--threads", "1", "--visibility-timeout", "2", count=2)
    producer.enqueue_task(Task(fleet_tasks.follow_up_then_die_once, (key, ["a", "b", "c"])))
    wait_for(lambda: client.hlen(key) == 3, timeout=30, what="the follow-ups of the second run")
    assert producer.join(timeout=30)
    assert client.get(key + ":runs") == b"2"
    assert client.hgetall(key) == {b"a": b"1", b"b": b"1", b"c": b"1"}


def test_a_settlement_that_does_not_apply_enqueues_no_follow_ups(backend):
    """A lease that moved on (a stale token), or the same claim settled twice in one exchange:
    only a settlement that applies enqueues its follow-ups, once."""
    backend.enqueue("q", [NewTask(BODY)])
    (claim,) = backend.exchange(Exchange("q", "c", (), 1)).claims
    follow_up = NewTask(BODY, key="k")
    stale = Settlement(claim._replace(token=claim.token + "0"), Ending.DONE, follow_ups=(follow_up,))
    assert backend.exchange(Exchange("q", "c", (stale,))).applied == [False]
    assert backend.counts("q").queued == 0
    done = Settlement(claim, Ending.DONE, follow_ups=(follow_up, NewTask(BODY, unique="u")))
    reply = backend.exchange(Exchange("q", "c", (done, done._replace(follow_ups=(NewTask(BODY, delay=60),)))))
    assert reply.applied == [True, False]
    counts = backend.counts("q")
    assert (counts.queued, counts.scheduled, counts.running) == (2, 0, 0)


def test_follow_ups_are_looked_up_before_any_settlement_of_the_batch_lets_its_value_go(backend):
    """A batch settling B (holding unique value U, kept for no time after) and A (whose follow-up
    has value U): U is still B's when the follow-ups are looked up, so none is enqueued, on
    every backend, whatever the order of the batch."""
    for order in (0, 1):
        queue = f"q{order}"
        backend.enqueue(queue, [NewTask(BODY, unique="U"), NewTask(BODY)])
        holder, asker = backend.exchange(Exchange(queue, "c", (), 2)).claims
        batch = [Settlement(holder, Ending.DONE), Settlement(asker, Ending.DONE, follow_ups=(NewTask(BODY, unique="U"),))]
        reply = backend.exchange(Exchange(queue, "c", tuple(batch[::-1] if order else batch)))
        assert reply.applied == [True, True]
        assert backend.counts(queue).queued == 0, order


REDIS_BACKENDS = ["fakeredis", "redis", "redis-evalsha"]


@pytest.mark.parametrize("connect", REDIS_BACKENDS, indirect=True)
def test_a_claim_settled_twice_whose_follow_ups_are_refused_stays_held(backend):
    """The first settlement of a claim in a batch is the one: refused with its follow-ups, a
    second settlement of the same claim in that batch does not apply either."""
    backend.enqueue("default", [NewTask(BODY)])
    (claim,) = backend.exchange(Exchange("default", "c", (), 1)).claims
    backend.client.set(prefix("default") + "kq:site:0", "not a list")
    done = Settlement(claim, Ending.DONE, follow_ups=(NewTask(BODY, key="site"),))
    reply = backend.exchange(Exchange("default", "c", (done, done._replace(follow_ups=()))))
    assert reply.unsettled == (0,) and reply.applied == [False, False]
    assert "kq:site:0" in reply.unsettled_reason
    assert backend.counts("default").running == 1 and backend.status("default", claim.task_id)[1] is None


@pytest.mark.parametrize("connect", REDIS_BACKENDS, indirect=True)
def test_a_follow_up_that_must_wait_for_its_key_wakes_a_waiting_consumer(backend):
    """A follow-up whose key waits for its rate puts its lane first in line for a time: a
    waiting consumer is woken to wait for that time instead of its own."""
    backend.limit_set("default", "k", "|1.0|10.0|1|0")  # one start per 10 s
    backend.enqueue("default", [NewTask(BODY, key="k")])
    (claim,) = backend.exchange(Exchange("default", "a", (), 1, idle_for=10.0)).claims
    assert backend.exchange(Exchange("default", "b", (), 1, idle_for=10.0)).claims == []  # b waits
    wake = prefix("default") + "wake"
    backend.client.delete(wake)
    done = Settlement(claim, Ending.DONE, follow_ups=(NewTask(BODY, key="k"),))
    assert backend.exchange(Exchange("default", "a", (done,))).applied == [True]
    assert backend.client.llen(wake) >= 1


@pytest.mark.parametrize("connect", REDIS_BACKENDS, indirect=True)
def test_a_stopping_worker_hands_back_a_done_task_whose_follow_ups_are_refused(backend, caplog):
    """At exit a worker sends the outcomes it has not sent yet (settle_at_exit): one refused with
    its follow-ups goes back to the queue unfinished (no attempt counted), to run again, and the
    log says why."""
    backend.enqueue("default", [NewTask(BODY)])
    (claim,) = backend.exchange(Exchange("default", "leaving", (), 1)).claims
    backend.client.set(prefix("default") + "kq:site:0", "not a list")
    done = Settlement(claim, Ending.DONE, follow_ups=(NewTask(BODY, key="site"),))
    with caplog.at_level(logging.WARNING, logger="taskutils.worker"):
        settle_at_exit(backend, "leaving", [done], result_ttl=60.0)
    assert any("follow-up tasks were refused" in r.getMessage() and "kq:site:0" in r.getMessage() for r in caplog.records)
    counts = backend.counts("default")
    assert (counts.queued, counts.running) == (1, 0)
    assert backend.status("default", claim.task_id)[1] is None  # no outcome: it runs again
