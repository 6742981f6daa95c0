"""Backend operations driven directly (no threads), on every backend: leases, fencing, schedules."""

from __future__ import annotations

import time

import pytest

from taskutils import Task
from taskutils.backends.base import DONE_KIND, Claim, Counts, NewTask, RecurrentRecord, Settlement

from . import jobs
from .conftest import wait_for

BODY = Task(jobs.add, (1, 2)).encode()


def test_claim_takes_by_priority_then_fifo_in_one_batch(backend):
    ids = backend.enqueue("q", [NewTask(BODY, p) for p in (1, 3, 1, 2)])
    batch = backend.claim("q", "c1", 3, 30)
    assert [c.task_id for c in batch.claims] == [ids[1], ids[3], ids[0]]
    assert backend.claim("q", "c1", 5, 30).claims[0].task_id == ids[2]
    assert backend.counts("q").running == 4


def test_cap_limits_a_batch_claim(backend):
    backend.set_max_concurrency("q", 2)
    backend.enqueue("q", [NewTask(BODY) for _ in range(5)])
    assert len(backend.claim("q", "c1", 5, 30).claims) == 2
    assert backend.claim("q", "c2", 5, 30).claims == []
    backend.set_max_concurrency("q", None)
    assert len(backend.claim("q", "c2", 5, 30).claims) == 3


def test_one_exchange_settles_then_claims_into_the_freed_slots(backend):
    backend.set_max_concurrency("q", 2)
    ids = backend.enqueue("q", [NewTask(BODY) for _ in range(4)])
    held = backend.claim("q", "c1", 2, 30).claims
    done = [Settlement(claim, DONE_KIND) for claim in held]
    applied, batch = backend.exchange("q", "c1", done, 2, 30)
    assert applied == [True, True]
    assert [claim.task_id for claim in batch.claims] == ids[2:]
    assert backend.counts("q").running == 2


def test_claims_ahead_wait_for_a_slot_outside_the_cap(backend):
    backend.set_max_concurrency("q", 2)
    ids = backend.enqueue("q", [NewTask(BODY) for _ in range(7)])
    claims = backend.exchange("q", "c1", [], 2, 30, ahead=3)[1].claims
    assert [claim.task_id for claim in claims] == ids[:5]
    assert [claim.ahead for claim in claims] == [False, False, True, True, True]
    assert backend.counts("q") == Counts(0, 2 + 3, 2, 0)  # held ahead: still waiting, as far as the cap goes
    assert [backend.status("q", claim.task_id)[0] for claim in claims] == ["running"] * 2 + ["queued"] * 3
    assert backend.claim("q", "c2", 2, 30).claims == []  # the slots are taken; the cap ignores claims ahead
    first, second, ahead = claims[0], claims[1], claims[2:]
    passed = Settlement(first, DONE_KIND, passes_slot_to=ahead[0])  # ahead[0] started in first's slot
    assert backend.exchange("q", "c1", [passed], 0, 30)[0] == [True]
    assert backend.status("q", ahead[0].task_id)[0] == "running"
    assert backend.counts("q").running == 2 and backend.claim("q", "c2", 2, 30).claims == []
    assert backend.ack(second, b"", 0)  # a slot freed, passed to nobody
    assert [claim.task_id for claim in backend.claim("q", "c2", 2, 30).claims] == ids[5:6]
    assert backend.release(ahead[1])  # handed back: back to the front, and no longer ahead
    assert backend.counts("q") == Counts(0, 1 + 1 + 1, 2, 0)
    late = Settlement(ahead[0], DONE_KIND, passes_slot_to=ahead[1])  # no longer held: not counted
    assert backend.exchange("q", "c1", [late], 0, 30)[0] == [True]
    assert backend.status("q", ahead[1].task_id)[0] == "queued" and backend.counts("q").running == 1


def test_asking_only_for_claims_ahead_does_not_make_a_consumer_idle(backend):
    """Its slots are busy: new work must go to a consumer that asked for free slots."""
    backend.set_max_concurrency("q", 2)
    assert backend.exchange("q", "c1", [], 0, 30, idle_for=10, ahead=2)[1].claims == []
    backend.enqueue("q", [NewTask(BODY)])
    assert backend.counts("q") == Counts(0, 1, 0, 0)  # queued, not handed to c1
    assert backend.exchange("q", "c2", [], 1, 30, idle_for=10)[1].claims != []


def test_claims_ahead_count_as_claims_on_a_queue_with_no_cap(backend):
    backend.enqueue("q", [NewTask(BODY) for _ in range(5)])
    claims = backend.exchange("q", "c1", [], 1, 30, ahead=3)[1].claims
    assert len(claims) == 4 and not any(claim.ahead for claim in claims)
    assert backend.counts("q").running == 4


def test_an_expired_claim_ahead_frees_nothing_and_holds_nothing(backend):
    backend.set_max_concurrency("q", 1)
    backend.enqueue("q", [NewTask(BODY) for _ in range(3)])
    old_slot, old_ahead, _ = backend.exchange("q", "c1", [], 1, 0.2, ahead=2)[1].claims
    again = wait_for(lambda: backend.exchange("q", "c2", [], 5, 30, ahead=1)[1].claims, what="redelivery")
    assert [(claim.ahead, claim.crashes) for claim in again] == [(False, 1), (True, 1)]  # one slot: no stale claim ahead counted
    assert backend.counts("q") == Counts(0, 2, 1, 0)
    stale = Settlement(old_slot, DONE_KIND, passes_slot_to=old_ahead)  # c1 came back after its leases expired
    assert backend.exchange("q", "c1", [stale], 0, 30)[0] == [False]
    assert backend.counts("q") == Counts(0, 2, 1, 0)  # c2's claim ahead of the same task is still not counted
    assert backend.ack(again[0], b"", 0)
    assert [claim.crashes for claim in backend.claim("q", "c3", 5, 30).claims] == [1]  # the third: it may have started


def test_exchanges_sent_ahead_are_served_in_the_order_sent(backend):
    ids = backend.enqueue("q", [NewTask(BODY) for _ in range(4)])
    first = backend.exchange_later("q", "c1", [], 2, 30)
    second = backend.exchange_later("q", "c1", [], 1, 30)  # sent before the first result is read
    held = first()[1].claims
    assert [claim.task_id for claim in held] == ids[:2]
    assert [claim.task_id for claim in second()[1].claims] == ids[2:3]
    settle = backend.exchange_later("q", "c1", [Settlement(claim, DONE_KIND) for claim in held], 1, 30)
    applied, batch = settle()
    assert applied == [True, True] and [claim.task_id for claim in batch.claims] == ids[3:]
    assert backend.counts("q").running == 2


def test_expired_lease_hands_the_task_back_and_fences_the_old_owner(backend):
    backend.enqueue("q", [NewTask(BODY)])
    (first,) = backend.claim("q", "c1", 1, 0.2).claims
    second = wait_for(lambda: backend.claim("q", "c2", 1, 30).claims, what="redelivery")[0]
    assert (second.task_id, second.crashes) == (first.task_id, 1)
    assert second.token != first.token
    assert backend.ack(first, b"late", 60) is False
    assert backend.retry(first, 0) is False
    assert backend.renew("q", {first.task_id: first.token}, 30) == [first.task_id]
    assert backend.status("q", first.task_id)[0] == "running"
    assert backend.ack(second, b"ok", 60) is True
    assert backend.status("q", first.task_id) == (None, b"ok")


def test_renewed_lease_is_not_handed_out(backend):
    backend.enqueue("q", [NewTask(BODY)])
    (claim,) = backend.claim("q", "c1", 1, 0.3).claims
    for _ in range(4):
        assert backend.renew("q", {claim.task_id: claim.token}, 0.3) == []
        assert backend.claim("q", "c2", 1, 30).claims == []
        time.sleep(0.1)  # let the first lease's 0.3 s pass; the renewals keep it held
    assert backend.ack(claim, b"", 0)


def test_retry_counts_failures(backend):
    backend.enqueue("q", [NewTask(BODY)])
    (claim,) = backend.claim("q", "c1", 1, 30).claims
    assert backend.retry(claim, 0)
    (again,) = backend.claim("q", "c1", 1, 30).claims
    assert (again.failures, again.crashes) == (1, 0)


def test_missed_recurrent_runs_collapse_and_stay_on_the_grid(backend):
    now = backend.now()
    start = now - 10.5
    backend.recurrent_put("q", "r", RecurrentRecord(BODY, 1.0, -1, None, start))
    assert len(backend.claim("q", "c1", 10, 30).claims) == 1
    record = backend.recurrent_get("q", "r")
    assert record.next_run == pytest.approx(start + 11.0)
    assert backend.claim("q", "c1", 10, 30).claims == []


def test_recurrent_stops_after_repeats_and_at_stop(backend):
    now = backend.now()
    backend.recurrent_put("q", "twice", RecurrentRecord(BODY, 0.05, 2, None, now - 1))
    backend.recurrent_put("q", "stopped", RecurrentRecord(BODY, 100.0, -1, now + 1, now - 1))
    assert len(backend.claim("q", "c1", 10, 30).claims) == 2
    assert backend.recurrent_names("q") == ["twice"]
    wait_for(lambda: backend.claim("q", "c1", 10, 30).claims, what="second run")
    assert backend.recurrent_names("q") == []


def test_failed_store_keeps_the_record(backend):
    backend.enqueue("q", [NewTask(BODY)])
    (claim,) = backend.claim("q", "c1", 1, 30).claims
    assert backend.fail(claim, b"outcome", b"record", 60)
    assert backend.failed("q") == {claim.task_id: b"record"}
    assert backend.counts("q").failed == 1


def test_next_due_reports_the_earliest_delayed_task(backend):
    backend.enqueue("q", [NewTask(BODY, delay=5.0)])
    batch = backend.claim("q", "c1", 1, 30)
    assert batch.claims == [] and 4.0 < batch.next_due <= 5.0


def test_a_run_past_stop_never_fires(backend):
    now = backend.now()
    backend.recurrent_put("q", "late", RecurrentRecord(BODY, 1.0, -1, now - 5, now - 1))
    assert backend.claim("q", "c1", 10, 30).claims == []
    assert backend.recurrent_names("q") == []


def test_new_work_goes_straight_to_an_idle_consumer(backend):
    assert backend.claim("q", "c1", 1, 30, idle_for=5).claims == []
    (task_id,) = backend.enqueue("q", [NewTask(BODY)])
    woken = backend.wait(["q"], "c1", 2)
    # Redis leases it to the waiting consumer in the enqueue itself; embedded, the consumer claims it
    claims = [woken] if isinstance(woken, Claim) else backend.claim("q", "c1", 1, 30).claims
    assert [claim.task_id for claim in claims] == [task_id]
    assert backend.status("q", task_id)[0] == "running"
    assert backend.ack(claims[0], b"ok", 60)


def test_a_resting_consumer_gives_back_what_was_handed_to_it(backend):
    """A consumer that stops waiting under its name (it pauses or stops) puts back the tasks an
    enqueue handed to it that it did not take; another consumer then claims them."""
    assert backend.claim("q", "c1", 1, 30, idle_for=5).claims == []
    (task_id,) = backend.enqueue("q", [NewTask(BODY)])
    (later,) = backend.enqueue("q", [NewTask(BODY)])
    backend.rest(["q"], "c1")
    assert backend.status("q", task_id)[0] == "queued"
    assert [claim.task_id for claim in backend.claim("q", "c2", 2, 30).claims] == [task_id, later]  # in order
    assert backend.wait(["q"], "c1", 0.05) is None


def test_one_bulk_enqueue_keeps_priority_fifo_delays_and_hand_off(backend):
    assert backend.claim("q", "c1", 1, 30, idle_for=5).claims == []  # c1 now waits for work
    priorities = [1, 0, 5, 1, 0, 5, 1]
    tasks = [NewTask(BODY, priority) for priority in priorities]
    tasks.insert(2, NewTask(BODY, 9, delay=60))
    ids = backend.enqueue("q", tasks)
    assert len(set(ids)) == 8 and ids == sorted(ids)  # fresh ids, in the order given
    woken = backend.wait(["q"], "c1", 2)
    first = [woken] if isinstance(woken, Claim) else backend.claim("q", "c1", 1, 30).claims
    rest = backend.claim("q", "c2", 10, 30).claims
    ready = [ids[i] for i in (0, 1, 3, 4, 5, 6, 7)]
    by_priority = sorted(ready, key=lambda task_id: -tasks[ids.index(task_id)].priority)  # stable: FIFO
    assert [claim.task_id for claim in first + rest] == by_priority  # the waiting consumer got the first
    assert backend.status("q", ids[2])[0] == "scheduled" and backend.counts("q").running == 7


def test_work_handed_to_a_consumer_that_claims_instead_keeps_priority_order(backend):
    assert backend.claim("q", "c1", 1, 30, idle_for=5).claims == []
    low, high = backend.enqueue("q", [NewTask(BODY, 0)]), backend.enqueue("q", [NewTask(BODY, 5)])
    assert [claim.task_id for claim in backend.claim("q", "c1", 2, 30).claims] == high + low
    assert backend.counts("q").running == 2
