"""Backend operations driven directly (no threads), on every backend: leases, fencing, waking, schedules."""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest

from taskutils import Task
from taskutils.backends.records import Claim, Counts, Ending, Exchange, NewTask, RecurrentRecord, Settlement

from . import jobs
from .conftest import wait_for

BODY = Task(jobs.add, (1, 2)).encode()


def claim(backend, queue: str, consumer: str, want: int, lease: float = 30.0, idle_for: float = 0.0) -> list[Claim]:
    return backend.exchange(Exchange(queue, consumer, (), want, lease, idle_for)).claims


def settle(backend, *settlements: Settlement, result_ttl: float = 60.0) -> list[bool | None]:
    return backend.exchange(Exchange(settlements[0].claim.queue, "settler", settlements, result_ttl=result_ttl)).applied


def test_claim_takes_by_priority_then_fifo_in_one_batch(backend):
    ids = backend.enqueue("q", [NewTask(BODY, p) for p in (1, 3, 1, 2)])
    assert [c.task_id for c in claim(backend, "q", "c1", 3)] == [ids[1], ids[3], ids[0]]
    assert claim(backend, "q", "c1", 5)[0].task_id == ids[2]
    assert backend.counts("q").running == 4


def test_cap_limits_a_batch_claim(backend):
    backend.set_max_concurrency("q", 2)
    backend.enqueue("q", [NewTask(BODY) for _ in range(5)])
    assert len(claim(backend, "q", "c1", 5)) == 2
    assert claim(backend, "q", "c2", 5) == []
    backend.set_max_concurrency("q", None)
    assert len(claim(backend, "q", "c2", 5)) == 3


def test_one_exchange_settles_then_claims_into_the_freed_slots(backend):
    backend.set_max_concurrency("q", 2)
    ids = backend.enqueue("q", [NewTask(BODY) for _ in range(4)])
    done = [Settlement(held, Ending.DONE) for held in claim(backend, "q", "c1", 2)]
    reply = backend.exchange(Exchange("q", "c1", done, 2))
    assert reply.applied == [True, True] and reply.capped
    assert [c.task_id for c in reply.claims] == ids[2:]
    assert backend.counts("q") == Counts(0, 0, 2, 0)


def test_exchanges_sent_ahead_are_served_in_the_order_sent(backend):
    ids = backend.enqueue("q", [NewTask(BODY) for _ in range(4)])
    first = backend.send_exchange(Exchange("q", "c1", (), 2))
    second = backend.send_exchange(Exchange("q", "c1", (), 1))  # sent before the first reply is read
    held = first().claims
    assert [c.task_id for c in held] == ids[:2]
    assert [c.task_id for c in second().claims] == ids[2:3]
    reply = backend.send_exchange(Exchange("q", "c1", [Settlement(c, Ending.DONE) for c in held], 1))()
    assert reply.applied == [True, True] and [c.task_id for c in reply.claims] == ids[3:]
    assert backend.counts("q").running == 2


def test_expired_lease_hands_the_task_back_and_fences_the_old_owner(backend):
    backend.enqueue("q", [NewTask(BODY)])
    (first,) = claim(backend, "q", "c1", 1, lease=0.2)
    (second,) = wait_for(lambda: claim(backend, "q", "c2", 1), what="redelivery")
    assert (second.task_id, second.crashes) == (first.task_id, 1)
    assert second.token != first.token
    assert settle(backend, Settlement(first, Ending.DONE, b"late")) == [False]
    assert settle(backend, Settlement(first, Ending.RETRY)) == [False]
    assert backend.renew("q", {first.task_id: first.token}, 30) == [first.task_id]
    assert backend.status("q", first.task_id)[0] == "running"
    assert settle(backend, Settlement(second, Ending.DONE, b"ok")) == [True]
    assert backend.status("q", first.task_id) == (None, b"ok")


def test_a_token_holds_only_its_own_lease(backend):
    """Tokens are never reused, so an old lease's settlement cannot pass for a new lease's."""
    backend.enqueue("q", [NewTask(BODY) for _ in range(2)])
    first, other = claim(backend, "q", "c1", 2)
    assert settle(backend, Settlement(first, Ending.HAND_BACK)) == [True]
    (again,) = claim(backend, "q", "c2", 1)
    assert again.task_id == first.task_id and again.token not in (first.token, other.token)
    forged = first._replace(token=other.token)
    assert settle(backend, Settlement(forged, Ending.DONE)) == [False]
    assert settle(backend, Settlement(again, Ending.DONE), Settlement(other, Ending.DONE)) == [True, True]


def test_renewed_lease_is_not_handed_out(backend):
    backend.enqueue("q", [NewTask(BODY)])
    (held,) = claim(backend, "q", "c1", 1, lease=0.3)
    for _ in range(4):
        assert backend.renew("q", {held.task_id: held.token}, 0.3) == []
        assert claim(backend, "q", "c2", 1) == []
        time.sleep(0.1)  # lets the first lease's 0.3 s pass: the renewals keep it held
    assert settle(backend, Settlement(held, Ending.DONE)) == [True]


def test_retry_counts_failures(backend):
    backend.enqueue("q", [NewTask(BODY)])
    (held,) = claim(backend, "q", "c1", 1)
    assert settle(backend, Settlement(held, Ending.RETRY)) == [True]
    (again,) = claim(backend, "q", "c1", 1)
    assert (again.failures, again.crashes) == (1, 0)


def test_a_task_done_without_a_value_keeps_an_empty_outcome(backend):
    (task_id,) = backend.enqueue("q", [NewTask(BODY)])
    (held,) = claim(backend, "q", "c1", 1)
    assert settle(backend, Settlement(held, Ending.DONE, b"")) == [True]
    assert backend.status("q", task_id) == (None, b"")
    (other,) = backend.enqueue("q", [NewTask(BODY)])
    assert settle(backend, Settlement(claim(backend, "q", "c1", 1)[0], Ending.DONE, b""), result_ttl=0) == [True]
    assert backend.status("q", other) == (None, None)  # result_ttl 0 keeps nothing


def test_an_id_of_another_queue_or_epoch_is_unknown(backend):
    (task_id,) = backend.enqueue("q", [NewTask(BODY)])
    epoch, _, seq = task_id.partition("-")
    assert backend.status("q", task_id)[0] == "queued"
    assert backend.status("q", f"{int(epoch, 16) ^ 1:x}-{seq}") == (None, None)
    assert backend.status("q", "not an id") == (None, None)


def test_missed_recurrent_runs_collapse_and_stay_on_the_grid(backend):
    start = backend.now() - 10.5
    backend.recurrent_put("q", "r", RecurrentRecord(BODY, 1.0, -1, None, start))
    assert len(claim(backend, "q", "c1", 10)) == 1
    assert backend.recurrent_get("q", "r").next_run == pytest.approx(start + 11.0)
    assert claim(backend, "q", "c1", 10) == []


def test_recurrent_stops_after_repeats_and_at_stop(backend):
    now = backend.now()
    backend.recurrent_put("q", "twice", RecurrentRecord(BODY, 0.05, 2, None, now - 1))
    backend.recurrent_put("q", "stopped", RecurrentRecord(BODY, 100.0, -1, now + 1, now - 1))
    assert len(claim(backend, "q", "c1", 10)) == 2
    assert backend.recurrent_names("q") == ["twice"]
    wait_for(lambda: claim(backend, "q", "c1", 10), what="second run")
    assert backend.recurrent_names("q") == []


def test_setting_the_same_schedule_again_changes_nothing(backend):
    now = backend.now()
    first = RecurrentRecord(BODY, 3600.0, -1, None, now - 1, definition=b"hourly")
    assert backend.recurrent_put("q", "hourly", first) is True
    assert len(claim(backend, "q", "c1", 10)) == 1  # the first run
    assert backend.recurrent_put("q", "hourly", dataclasses.replace(first, next_run=backend.now())) is False
    assert claim(backend, "q", "c1", 10) == []  # no second run, and the grid goes on
    assert backend.recurrent_get("q", "hourly").next_run == pytest.approx(now - 1 + 3600)
    assert backend.recurrent_put("q", "hourly", dataclasses.replace(first, interval=60.0, definition=b"every minute")) is True
    assert backend.recurrent_get("q", "hourly").interval == 60.0


def test_a_run_past_stop_never_fires(backend):
    now = backend.now()
    backend.recurrent_put("q", "late", RecurrentRecord(BODY, 1.0, -1, now - 5, now - 1))
    assert claim(backend, "q", "c1", 10) == []
    assert backend.recurrent_names("q") == []


def test_failed_store_keeps_the_record(backend):
    backend.enqueue("q", [NewTask(BODY)])
    (held,) = claim(backend, "q", "c1", 1)
    assert settle(backend, Settlement(held, Ending.FAILED, b"outcome", b"record")) == [True]
    assert backend.failed("q") == {held.task_id: b"record"}
    assert backend.counts("q").failed == 1
    assert backend.requeue_failed("q", [held.task_id]) == [held.task_id]
    assert backend.status("q", held.task_id) == ("queued", None)


def test_next_due_reports_the_earliest_delayed_task(backend):
    backend.enqueue("q", [NewTask(BODY, delay=5.0)])
    reply = backend.exchange(Exchange("q", "c1", (), 1))
    assert reply.claims == [] and 4.0 < reply.next_due <= 5.0


def test_new_work_wakes_a_waiting_consumer_who_then_claims_it(backend):
    """Nothing is handed to a consumer: the wake-up only tells it to claim, and the task stays
    queued for whoever claims first."""
    assert claim(backend, "q", "c1", 1, idle_for=5) == []
    woken = []
    waiter = threading.Thread(target=lambda: woken.append(backend.wait(["q"], "c1", 5)))
    waiter.start()
    time.sleep(0.1)  # c1 is blocked in its wait now
    (task_id,) = backend.enqueue("q", [NewTask(BODY)])
    waiter.join(5)
    assert not waiter.is_alive()
    assert backend.status("q", task_id)[0] == "queued"
    assert [c.task_id for c in claim(backend, "q", "c2", 1)] == [task_id]  # another consumer may take it


def test_a_consumer_that_waits_no_more_takes_nothing(backend):
    """A consumer registered as waiting whose process died takes nothing: the task stays queued
    and the next live consumer claims it at once."""
    assert claim(backend, "q", "dead", 1, idle_for=30) == []
    (task_id,) = backend.enqueue("q", [NewTask(BODY)])
    assert backend.status("q", task_id)[0] == "queued" and backend.counts("q") == Counts(0, 1, 0, 0)
    assert [c.task_id for c in claim(backend, "q", "alive", 1)] == [task_id]


def test_interrupt_ends_a_wait_at_once(backend):
    assert claim(backend, "q", "c1", 1, idle_for=30) == []
    backend.interrupt(["q"], "c1")
    started = time.monotonic()
    backend.wait(["q"], "c1", 10)
    assert time.monotonic() - started < 5


def test_one_bulk_enqueue_keeps_priority_fifo_and_delays(backend):
    priorities = [1, 0, 5, 1, 0, 5, 1]
    tasks = [NewTask(BODY, priority) for priority in priorities]
    tasks.insert(2, NewTask(BODY, 9, delay=60))
    ids = backend.enqueue("q", tasks)
    assert len(set(ids)) == 8
    ready = [ids[i] for i in (0, 1, 3, 4, 5, 6, 7)]
    by_priority = sorted(ready, key=lambda task_id: -tasks[ids.index(task_id)].priority)  # stable: FIFO
    assert [c.task_id for c in claim(backend, "q", "c2", 10)] == by_priority
    assert backend.status("q", ids[2])[0] == "scheduled" and backend.counts("q").running == 7


def test_a_claim_short_of_what_it_asked_tells_when_work_comes_apart_from_lease_deadlines(backend, key):
    backend.enqueue(key, [NewTask(b"x")])
    reply = backend.exchange(Exchange(key, "c", want=2, lease=30.0))
    assert len(reply.claims) == 1 and 29 < reply.next_due <= 30 and reply.work_due is None  # only its own lease
    backend.enqueue(key, [NewTask(b"y", delay=5.0)])
    reply = backend.exchange(Exchange(key, "c", want=2, lease=30.0))
    assert reply.claims == [] and 4 < reply.next_due <= 5 and 4 < reply.work_due <= 5
