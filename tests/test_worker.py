"""A whole worker in one process, on every backend: failed store, quarantine, shutdown, registration, round trips."""

from __future__ import annotations

import os
import threading
import time

from taskutils import PayloadError, Task, TaskFailed, TaskHandler
from taskutils.backends.records import Claim, Exchange, NewTask
from taskutils.errors import BrokerError
from taskutils.worker.heartbeat import Heartbeat
from taskutils.worker.ledger import ClaimLedger

from . import jobs
from .conftest import wait_for


def test_failed_store_lists_requeues_and_purges(make_handler, key):
    handler = make_handler()
    first = handler.enqueue_task(Task(jobs.fail_times, (key, 1)))
    second = handler.enqueue_task(Task(jobs.boom, ("never",)))
    for ref in (first, second):
        wait_for(lambda: ref.status() == "failed", what="failure")
    listed = {task.id: task for task in handler.failed_tasks()}
    assert set(listed) == {first.id, second.id}
    assert listed[second.id].reason == "ValueError: never" and listed[second.id].ref == "tests.jobs:boom"
    assert "Traceback" in listed[second.id].error and listed[second.id].failures == 1
    assert handler.requeue_failed([first.id]) == [first.id]
    assert first.result(timeout=10) == 2
    assert [task.id for task in handler.failed_tasks()] == [second.id]
    assert handler.purge_failed() == 1 and handler.failed_tasks() == []


def test_crashing_task_is_quarantined(backend):
    backend.enqueue("default", [NewTask(Task(jobs.add, (1, 1)).encode())])
    for _ in range(3):  # three workers claim it and die: each lease expires
        wait_for(lambda: backend.exchange(Exchange("default", "dying", (), 1, 0.05)).claims, what="(re)delivery")
    handler = TaskHandler(backend=backend, sleep_seconds=0.2)
    try:
        wait_for(lambda: handler.failed_tasks(), what="quarantine")
        (task,) = handler.failed_tasks()
        assert task.reason == "quarantined: crashed its worker 3 times (max_crashes=3)"
    finally:
        handler.close(timeout=10)


def test_arguments_that_do_not_fit_fail_at_once(make_handler):
    ref = make_handler().enqueue_task(Task(jobs.takes_one, (1, 2), repeats_on_failure=5))
    wait_for(lambda: ref.status() == "failed", what="failure")
    (task,) = make_handler(max_num_threads=0).failed_tasks()
    assert task.failures == 1 and "arguments do not fit tests.jobs:takes_one(a)" in task.error


def test_oversized_payload_is_refused_at_enqueue(make_handler, backend):
    handler = make_handler(max_num_threads=0, max_payload=1000)
    try:
        handler.enqueue_task(Task(jobs.echo, ("x" * 2000,)))
        raise AssertionError("an oversized payload was accepted")
    except PayloadError as exc:
        assert "over max_payload=1000" in str(exc)
    assert backend.counts("default").pending == 0


def test_oversized_payload_found_in_the_queue_fails(make_handler, backend):
    backend.enqueue("default", [NewTask(Task(jobs.echo, ("x" * 2000,)).encode())])
    make_handler(max_payload=1000)
    wait_for(lambda: backend.counts("default").failed == 1, what="failure")
    (record,) = make_handler(max_num_threads=0).failed_tasks()
    assert "over max_payload=1000" in record.error


def test_close_keeps_the_lease_of_a_task_still_running(make_handler, backend, key):
    """Python cannot stop a thread: a task still running when close() times out keeps its lease
    until it ends, so no other worker runs it meanwhile, even on a capped queue."""
    handler = make_handler(max_num_threads=2, max_concurrency=1)
    ref = handler.enqueue_task(Task(jobs.wait_gate, (key,)))
    wait_for(lambda: jobs.calls[key] == ["started"], what="task start")
    assert handler.close(timeout=0.1) is False
    other = make_handler(own_client=True, allow=["tests"], sleep_seconds=0.1)
    quick = other.enqueue_task(Task(jobs.add, (1, 1)))
    time.sleep(0.5)  # time enough for the other handler to take the task or the slot, were they free
    assert ref.status() == "running" and quick.status() == "queued" and backend.counts("default").running == 1
    jobs.gates[key].set()
    assert ref.result(timeout=10) == "released" and quick.result(timeout=10) == 2
    assert jobs.calls[key] == ["started"]


def test_live_workers_are_registered(make_handler, backend):
    handler = make_handler(max_num_threads=2)
    (worker,) = backend.workers()
    assert worker["threads"] == "2" and worker["queues"] == "default" and worker["pid"] == str(os.getpid())
    handler.close(timeout=10)
    assert backend.workers() == []


def test_a_long_task_does_not_hold_up_the_next(make_handler, key):
    """While one thread runs a task, a task enqueued meanwhile starts on another."""
    handler = make_handler(max_num_threads=2, sleep_seconds=30)
    first = handler.enqueue_task(Task(jobs.meet, (key, 2)))  # returns only once both run at once
    wait_for(lambda: first.status() == "running", what="the first task to start")
    second = handler.enqueue_task(Task(jobs.meet, (key, 2)))
    assert first.result(timeout=20) is True and second.result(timeout=20) is True


def test_an_idle_worker_blocks_instead_of_polling(make_handler, backend, monkeypatch):
    """With nothing to do, a worker waits on the backend until woken or until sleep_seconds
    pass: a second of idleness costs no round trip at all."""
    calls = []
    for method in ("wait", "exchange", "send_exchange"):
        def counted(*args, _real=getattr(backend, method), _name=method, **kwargs):
            calls.append(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(backend, method, counted)
    handler = make_handler(max_num_threads=2, sleep_seconds=5)
    assert handler.enqueue_task(Task(jobs.add, (1, 2))).result(timeout=10) == 3
    wait_for(lambda: calls and calls[-1] == "wait", what="the worker to wait")
    before = len(calls)
    time.sleep(1.0)  # the idleness under test
    assert calls[before:] == []
    assert handler.enqueue_task(Task(jobs.add, (1, 2))).result(timeout=10) == 3  # and it still wakes for work


class ExchangeTrace:
    """Every exchange a worker of one queue sends from now on (it sends them all with
    send_exchange): `sent` holds (settlements, claims wanted) of each; `events` holds ("send", n)
    for each and ("read", n) when its reply is read."""

    def __init__(self, backend, monkeypatch):
        self.sent: list[tuple[int, int]] = []
        self.events: list[tuple[str, int]] = []
        self.lock = threading.Lock()
        send = backend.send_exchange

        def traced(request: Exchange):
            with self.lock:
                number = len(self.sent)
                self.sent.append((len(request.settlements), request.want))
                self.events.append(("send", number))
            read = send(request)

            def reader():
                with self.lock:
                    self.events.append(("read", number))
                return read()

            return reader

        monkeypatch.setattr(backend, "send_exchange", traced)


def test_a_capped_worker_settles_and_claims_in_one_round_trip_per_task(make_handler, backend, monkeypatch):
    """Each round trip settles the finished task and claims the next into its freed slot."""
    backend.set_max_concurrency("default", 1)
    backend.enqueue("default", [NewTask(Task(jobs.sleep_for, (0.02,)).encode()) for _ in range(12)])
    exchanges = ExchangeTrace(backend, monkeypatch)
    handler = make_handler(max_num_threads=1, allow=["tests.jobs"])
    assert handler.join(timeout=30)
    handler.close(timeout=10)
    assert backend.counts("default").pending == 0
    assert len(exchanges.sent) <= 12 + 3, exchanges.sent  # settling and claiming apart would take about 24


def test_short_tasks_share_round_trips_and_every_reply_is_read_once_in_order(make_handler, backend, monkeypatch):
    """While prefetched work remains, settlements gather so that a round trip carries several;
    replies of exchanges kept in flight are each read once, in the order sent."""
    backend.enqueue("default", [NewTask(Task(jobs.sleep_for, (0.001,)).encode()) for _ in range(400)])
    exchanges = ExchangeTrace(backend, monkeypatch)
    handler = make_handler(max_num_threads=8, allow=["tests.jobs"])
    assert handler.join(timeout=60)
    handler.close(timeout=10)
    assert backend.counts("default").pending == 0
    settled = [count for count, _ in exchanges.sent if count]
    assert sum(settled) == 400
    assert len(settled) <= 400 / 3, exchanges.sent  # one round trip per one or two tasks without gathering
    sends = [number for kind, number in exchanges.events if kind == "send"]
    assert [number for kind, number in exchanges.events if kind == "read"] == sends


def test_a_task_finishing_beside_prefetched_ones_is_settled_at_once(make_handler, key):
    """Its result does not wait for the tasks held beside it (the worker would not look again
    for sleep_seconds)."""
    handler = make_handler(max_num_threads=2, allow=["tests.jobs"], sleep_seconds=60)
    handler.enqueue_tasks([Task(jobs.add, (1, 1))] * 100)
    assert handler.join(timeout=30)  # short tasks: the worker now prefetches
    gated = handler.enqueue_task(Task(jobs.wait_gate, (key,)))
    wait_for(lambda: jobs.calls[key] == ["started"], what="gated task start")
    quick, *rest = handler.enqueue_tasks([Task(jobs.add, (2, 3))] + [Task(jobs.wait_gate, (key,))] * 6)
    try:
        assert quick.result(timeout=20) == 5
    finally:
        jobs.gates[key].set()
    assert gated.result(timeout=10) == "released" and all(ref.result(timeout=10) == "released" for ref in rest)


def test_a_task_whose_module_exits_when_imported_fails_and_the_worker_goes_on(make_handler):
    handler = make_handler(max_num_threads=1, allow=["tests.exits_on_import"])
    doomed = handler.enqueue_task(Task("tests.exits_on_import:never"))
    fine = handler.enqueue_task(Task(jobs.add, (1, 2)))
    try:
        doomed.result(timeout=10)
        raise AssertionError("a task whose module exits ran")
    except TaskFailed as failure:
        assert "SystemExit" in str(failure)
    assert fine.result(timeout=10) == 3


def test_a_heartbeat_renews_every_queue_and_registers_when_one_queue_is_refused():
    renewed, registered = [], []

    class Backend:
        def renew(self, queue, leases, lease):
            renewed.append(queue)
            if queue == "broken":
                raise BrokerError("WRONGTYPE (injected)")
            return []

        def register_worker(self, consumer, info, ttl):
            registered.append(consumer)

    ledger = ClaimLedger(2, 30.0, 2.0, ("broken", "fine"))
    plan = ledger.plan()
    ledger.asked(plan.want)
    ledger.replied("broken", [], [], plan.want, [Claim("broken", "e-1", "t1", b"", 0, 0),
                                                  Claim("fine", "e-2", "t2", b"", 0, 0)], 0.0, None, False)
    Heartbeat(Backend(), ledger, "me", 30.0, dict).beat()  # type: ignore[arg-type]
    assert sorted(renewed) == ["broken", "fine"] and registered == ["me"]
