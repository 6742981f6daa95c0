"""Keys, fair turns and key limits, driven on the backend directly, on every backend."""

from __future__ import annotations

import time

import pytest

from taskutils import InvalidTask, Limit, Task, TaskHandler
from taskutils.backends.records import Counts, Ending, Exchange, NewTask, Settlement

from . import jobs
from .test_backend import claim, settle

BODY = Task(jobs.add, (1, 2)).encode()


def keyed(key: str | None, priority: int = 0) -> NewTask:
    return NewTask(BODY, priority, 0.0, key)


def exchange(backend, want: int, *settled: Settlement):
    return backend.exchange(Exchange("q", "c1", settled, want, 30.0, 0.0, 60.0))


def test_a_claim_carries_its_key_and_counts_see_keyed_tasks(backend):
    ids = backend.enqueue("q", [keyed("a.example"), keyed(None)])
    assert backend.counts("q") == Counts(0, 2, 0, 0)
    held = {c.task_id: c for c in claim(backend, "q", "c1", 5)}
    assert held[ids[0]].key == "a.example" and held[ids[1]].key is None
    assert held[ids[0]].body == held[ids[1]].body == BODY
    assert backend.counts("q") == Counts(0, 0, 2, 0)


def test_keys_take_turns_so_a_flood_of_one_does_not_hold_up_another(backend):
    flood = backend.enqueue("q", [keyed("a") for _ in range(100)])
    other = backend.enqueue("q", [keyed("b"), keyed("b")])
    first = [c.task_id for c in claim(backend, "q", "c1", 4)]
    assert first == [flood[0], other[0], flood[1], other[1]]
    assert [c.task_id for c in claim(backend, "q", "c1", 2)] == flood[2:4]


def test_the_unkeyed_lane_takes_its_turn_among_the_keys(backend):
    plain = backend.enqueue("q", [keyed(None) for _ in range(3)])
    keys = backend.enqueue("q", [keyed("a"), keyed("b")])
    assert [c.task_id for c in claim(backend, "q", "c1", 5)] == [plain[0], keys[0], keys[1], plain[1], plain[2]]


def test_within_a_key_priority_then_fifo(backend):
    ids = backend.enqueue("q", [keyed("a", 0), keyed("a", 5), keyed("a", 0), keyed("a", 5)])
    assert [c.task_id for c in claim(backend, "q", "c1", 4)] == [ids[1], ids[3], ids[0], ids[2]]


def test_concurrency_limit_holds_and_a_finished_task_frees_its_slot(backend):
    backend.limit_set("q", "a", Limit(concurrency=2).encode())
    ids = backend.enqueue("q", [keyed("a") for _ in range(5)] + [keyed("b")])
    held = claim(backend, "q", "c1", 10)
    assert sorted(c.task_id for c in held) == sorted([ids[0], ids[1], ids[5]])
    assert claim(backend, "q", "c2", 10) == []
    reply = exchange(backend, 10, Settlement(held[0], Ending.DONE))
    assert reply.applied == [True] and [c.task_id for c in reply.claims] == [ids[2]]


def test_the_default_limit_applies_to_keys_without_their_own(backend):
    backend.limit_set("q", None, Limit(concurrency=1).encode())
    backend.limit_set("q", "wide", Limit(concurrency=3).encode())
    backend.enqueue("q", [keyed("narrow") for _ in range(3)] + [keyed("wide") for _ in range(3)])
    assert sorted(c.key for c in claim(backend, "q", "c1", 10)) == ["narrow", "wide", "wide", "wide"]


def test_rate_spaces_starts_and_the_wait_is_told(backend):
    backend.limit_set("q", "a", Limit(rate=4, per=1.0).encode())
    backend.enqueue("q", [keyed("a") for _ in range(3)])
    assert len(claim(backend, "q", "c1", 10)) == 1
    reply = exchange(backend, 10)
    assert reply.claims == [] and reply.next_due is not None and 0.1 < reply.next_due < 0.26
    time.sleep(reply.next_due + 0.02)
    assert len(claim(backend, "q", "c1", 10)) == 1


def test_keys_whose_time_came_take_turns_in_the_order_of_their_times(backend):
    """Keys waiting for their rate are served in the order their times come, one turn each; a
    claim that is full leaves the others first in line for the next one, before a key that just
    had its turn."""
    backend.limit_set("q", None, Limit(rate=5, per=1.0).encode())
    ids = {key: backend.enqueue("q", [keyed(key) for _ in range(3)]) for key in "abc"}
    assert [c.key for c in claim(backend, "q", "c1", 10)] == ["a", "b", "c"]  # one each, then 0.2 s apart
    time.sleep(0.25)
    assert [c.task_id for c in claim(backend, "q", "c1", 2)] == [ids["a"][1], ids["b"][1]]
    time.sleep(0.25)  # a and b are due again, but c has waited longer
    assert [c.key for c in claim(backend, "q", "c1", 10)] == ["c", "a", "b"]


def test_burst_starts_that_many_at_once_then_keeps_the_window(backend):
    backend.limit_set("q", "a", Limit(rate=3, per=1.0, burst=3).encode())
    backend.enqueue("q", [keyed("a") for _ in range(6)])
    assert len(claim(backend, "q", "c1", 10)) == 3
    reply = exchange(backend, 10)
    assert reply.claims == [] and 0.8 < reply.next_due < 1.01  # the window of 1 s holds 3 starts


def test_throttled_keyed_task_goes_back_first_without_an_attempt_and_its_key_waits(backend):
    ids = backend.enqueue("q", [keyed("a"), keyed("a"), keyed("b")])
    first = claim(backend, "q", "c1", 1)[0]
    assert first.task_id == ids[0]
    reply = exchange(backend, 10, Settlement(first, Ending.THROTTLE, delay=0.4))
    assert reply.applied == [True] and [c.task_id for c in reply.claims] == [ids[2]]
    assert 0.2 < reply.next_due < 0.41
    time.sleep(reply.next_due + 0.02)
    again = claim(backend, "q", "c1", 10)
    assert [c.task_id for c in again][:1] == [ids[0]] and again[0].failures == 0


def test_throttled_unkeyed_task_waits_alone(backend):
    ids = backend.enqueue("q", [keyed(None), keyed(None)])
    first = claim(backend, "q", "c1", 1)[0]
    reply = exchange(backend, 10, Settlement(first, Ending.THROTTLE, delay=30))
    assert [c.task_id for c in reply.claims] == [ids[1]]
    assert backend.counts("q") == Counts(1, 0, 1, 0)
    assert backend.status("q", ids[0])[0] == "scheduled"


def test_adaptive_limit_halves_its_rate_on_a_throttle(backend):
    backend.limit_set("q", "a", Limit(rate=10, per=1.0, adaptive=True).encode())
    backend.enqueue("q", [keyed("a") for _ in range(3)])
    first = claim(backend, "q", "c1", 1)[0]
    exchange(backend, 0, Settlement(first, Ending.THROTTLE, delay=0))
    time.sleep(0.12)
    assert len(claim(backend, "q", "c1", 10)) == 1
    reply = exchange(backend, 10)
    assert reply.claims == [] and 0.12 < reply.next_due < 0.21  # spaced 0.2 s now, not 0.1


def test_an_expired_lease_gives_the_key_slot_back(backend):
    backend.limit_set("q", "a", Limit(concurrency=1).encode())
    ids = backend.enqueue("q", [keyed("a"), keyed("a")])
    assert [c.task_id for c in claim(backend, "q", "dead", 5, lease=0.2)] == [ids[0]]
    time.sleep(0.3)
    again = claim(backend, "q", "c2", 5)
    assert [c.task_id for c in again] == [ids[0]] and again[0].crashes == 1


def test_a_changed_limit_applies_from_the_next_start(backend):
    backend.limit_set("q", "a", Limit(concurrency=1).encode())
    backend.enqueue("q", [keyed("a") for _ in range(4)])
    assert len(claim(backend, "q", "c1", 10)) == 1
    backend.limit_set("q", "a", Limit(concurrency=3).encode())
    assert len(claim(backend, "q", "c1", 10)) == 2
    assert backend.limit_set("q", "a", None) is True
    assert len(claim(backend, "q", "c1", 10)) == 1


def test_retried_keyed_task_stays_in_its_lane(backend):
    backend.limit_set("q", "a", Limit(concurrency=1).encode())
    ids = backend.enqueue("q", [keyed("a"), keyed("a")])
    first = claim(backend, "q", "c1", 5)[0]
    reply = exchange(backend, 5, Settlement(first, Ending.RETRY))
    assert [c.task_id for c in reply.claims] == [ids[1]] and reply.claims[0].key == "a"
    second = exchange(backend, 5, Settlement(reply.claims[0], Ending.DONE)).claims
    assert [(c.task_id, c.key, c.failures) for c in second] == [(ids[0], "a", 1)]


def test_failed_keyed_task_is_requeued_into_its_lane(backend):
    (task_id,) = backend.enqueue("q", [keyed("a")])
    held = claim(backend, "q", "c1", 1)[0]
    settle(backend, Settlement(held, Ending.FAILED, b"x", b"r"))
    assert backend.requeue_failed("q", [task_id]) == [task_id]
    assert [(c.task_id, c.key) for c in claim(backend, "q", "c1", 1)] == [(task_id, "a")]


def test_limits_mapping(backend):
    h = TaskHandler(backend=backend, max_num_threads=0, queue="q")
    h.limits["a.example"] = Limit(concurrency=2, rate=5)
    h.limits.default = Limit(concurrency=1, rate=1, per=2.0)
    assert h.limits["a.example"] == Limit(concurrency=2, rate=5)
    assert "a.example" in h.limits and "b.example" not in h.limits
    assert list(h.limits) == ["a.example"] and len(h.limits) == 1
    assert h.limits.default == Limit(concurrency=1, rate=1, per=2.0)
    del h.limits["a.example"]
    h.limits.default = None
    assert len(h.limits) == 0 and h.limits.default is None
    with pytest.raises(KeyError):
        del h.limits["a.example"]
    with pytest.raises(InvalidTask, match="must be a Limit"):
        h.limits["a"] = 5


@pytest.mark.parametrize(
    "options, message",
    [
        ({"concurrency": 0}, "concurrency"),
        ({"rate": float("nan")}, "rate"),
        ({"rate": float("inf")}, "rate"),
        ({"rate": 1, "per": 0}, "per"),
        ({"rate": 2, "burst": 3}, "burst"),
        ({"concurrency": 1, "adaptive": True}, "adaptive"),
    ],
)
def test_bad_limits_are_refused(options, message):
    with pytest.raises(InvalidTask, match=message):
        Limit(**options)


@pytest.mark.parametrize("key", ["", "a|b", "tab\there", "x" * 257, 5])
def test_bad_keys_are_refused(key):
    with pytest.raises(InvalidTask, match="key"):
        Task(jobs.add, (1, 2), key=key)


def test_the_queue_cap_still_caps_keyed_tasks_as_a_whole(backend):
    backend.set_max_concurrency("q", 2)
    backend.limit_set("q", None, Limit(concurrency=5).encode())
    backend.enqueue("q", [keyed(key) for key in ("a", "b", "c") for _ in range(3)])
    first = claim(backend, "q", "c1", 10)
    assert len(first) == 2 and claim(backend, "q", "c2", 10) == []
    reply = exchange(backend, 10, Settlement(first[0], Ending.DONE))
    assert len(reply.claims) == 1 and reply.capped


def test_a_paused_queue_starts_nothing_keeps_taking_tasks_and_resumes(backend):
    """Paused across the fleet: claims take nothing and say so, enqueues and settlements go on,
    due work is still promoted; resumed, the claims take it all, in order."""
    held = claim(backend, "q", "c1", 1) if backend.enqueue("q", [keyed(None)]) else []
    assert backend.set_paused("q", True) and not backend.set_paused("q", True) and backend.paused("q")
    ids = backend.enqueue("q", [keyed("a"), keyed(None)])
    reply = exchange(backend, 10, Settlement(held[0], Ending.DONE))
    assert reply.applied == [True] and reply.claims == [] and reply.paused
    assert backend.counts("q") == Counts(0, 2, 0, 0)
    assert backend.set_paused("q", False) and not backend.set_paused("q", False) and not backend.paused("q")
    reply = exchange(backend, 10)
    assert sorted(c.task_id for c in reply.claims) == sorted(ids) and not reply.paused


def test_status_counts_each_workers_running_tasks_when_read(backend):
    """The registration's own count is as old as its heartbeat: the backend counts the leases."""
    backend.register_worker("w1", {"host": "h", "running": "0"}, 30.0)
    backend.register_worker("w2", {"host": "h", "running": "5"}, 30.0)
    backend.enqueue("q", [keyed(None), keyed("a"), keyed(None)])
    assert len(claim(backend, "q", "w1", 2)) == 2
    assert {w["consumer"]: w["running"] for w in backend.workers()} == {"w1": "2", "w2": "0"}


def test_a_worker_whose_registration_expired_is_gone_from_the_list_at_once(backend):
    """A dead worker stops renewing its registration: the first read after it expires forgets
    it (and, on Redis, drops it from the index of workers)."""
    backend.register_worker("alive", {"host": "h"}, 30.0)
    backend.register_worker("dead", {"host": "h"}, 0.3)
    assert {w["consumer"] for w in backend.workers()} == {"alive", "dead"}
    time.sleep(0.4)
    assert [w["consumer"] for w in backend.workers()] == ["alive"]
    client = getattr(backend, "client", None)
    if client is not None:  # Redis: the index no longer names it either
        assert client.zrange("tu:workers", 0, -1) == [b"alive"]
