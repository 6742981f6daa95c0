"""Failed store, quarantine, hand-back and limits, on every backend."""

from __future__ import annotations

import threading
import time

import pytest

from taskutils import PayloadError, Task, TaskHandler
from taskutils.backends.base import DONE_KIND, HAND_BACK_KIND, NewTask, Settlement
from taskutils.config import Settings
from taskutils.pacing import STALL_SECONDS
from taskutils.worker import Worker, allow_all

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
    body = Task(jobs.add, (1, 1)).encode()
    backend.enqueue("default", [NewTask(body)])
    for _ in range(3):  # three workers claim it and die: each lease expires
        wait_for(lambda: backend.claim("default", "dying", 1, 0.05).claims, what="(re)delivery")
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
    with pytest.raises(PayloadError, match="over max_payload=1000"):
        handler.enqueue_task(Task(jobs.echo, ("x" * 2000,)))
    assert backend.counts("default").pending == 0


def test_oversized_payload_found_in_the_queue_fails(make_handler, backend):
    backend.enqueue("default", [NewTask(Task(jobs.echo, ("x" * 2000,)).encode())])
    make_handler(max_payload=1000)
    wait_for(lambda: backend.counts("default").failed == 1, what="failure")
    (record,) = make_handler(max_num_threads=0).failed_tasks()
    assert "over max_payload=1000" in record.error


def test_close_hands_unfinished_tasks_back_at_once(make_handler, backend, key):
    handler = make_handler(max_num_threads=1)
    ref = handler.enqueue_task(Task(jobs.wait_gate, (key,)))
    wait_for(lambda: jobs.calls[key] == ["started"], what="task start")
    assert handler.close(timeout=0.1) is False
    assert ref.status() == "queued" and backend.counts("default").running == 0
    jobs.gates[key].set()
    assert make_handler(allow=["tests"]).enqueue_task(Task(jobs.add, (1, 1))).result(timeout=10) == 2
    assert ref.result(timeout=10) == "released"
    assert jobs.calls[key] == ["started", "started"]


def test_live_workers_are_registered(make_handler, backend):
    handler = make_handler(max_num_threads=2)
    (worker,) = backend.workers()
    assert worker["threads"] == "2" and worker["queues"] == "default" and worker["consumer"] == handler._worker.consumer
    handler.close(timeout=10)
    assert backend.workers() == []


class ExchangeTrace:
    """Every exchange the backend is sent from now on: `sent` holds (settlements, claims wanted) of
    each; `events` holds ("send", n) for each and ("read", n) when its result is read."""

    def __init__(self, backend):
        self.sent: list[tuple[int, int]] = []
        self.events: list[tuple[str, int]] = []
        self.slots_passed: list[str] = []  # claims held ahead that started in a finished task's slot
        self.exchange_later = backend.exchange_later
        backend.exchange_later = self.traced

    def traced(self, queue, consumer, settlements, want, *options, ahead=0):
        number = len(self.sent)
        self.sent.append((len(settlements), want + ahead))
        self.slots_passed += [settled.passes_slot_to for settled in settlements if settled.passes_slot_to]  # claims
        self.events.append(("send", number))
        result = self.exchange_later(queue, consumer, settlements, want, *options, ahead=ahead)

        def read():
            self.events.append(("read", number))
            return result()

        return read


def test_a_long_task_handed_to_an_idle_worker_does_not_hold_up_the_next(make_handler, backend, key, monkeypatch):
    """On an idle worker a runner waits on the backend and runs what an enqueue hands it on the spot;
    the broker thread must still claim what comes while that task runs."""
    waiters: set[str] = set()  # names of the threads that called backend.wait
    wait = backend.wait

    def tracked_wait(*args, **kwargs):
        waiters.add(threading.current_thread().name)
        return wait(*args, **kwargs)

    monkeypatch.setattr(backend, "wait", tracked_wait)
    handler = make_handler(max_num_threads=2)
    wait_for(lambda: any(name.startswith("taskutils-runner") for name in waiters), what="a runner to take over the wait")
    first = handler.enqueue_task(Task(jobs.meet, (key, 2)))  # returns only once both run at once
    wait_for(lambda: first.status() == "running", what="the first task to start")
    second = handler.enqueue_task(Task(jobs.meet, (key, 2)))
    assert first.result(timeout=20) is True
    assert second.result(timeout=20) is True


@pytest.mark.parametrize("connect", ["fakeredis", "redis"], indirect=True)  # embedded, nothing is handed off:
def test_a_task_handed_to_a_waiting_runner_wakes_no_other_thread(make_handler, backend, key, monkeypatch):  # all wake
    """The broker thread waits beside the runner that took over an idle worker's wait, under its
    own name: a task handed to the runner starts there, and the broker thread goes on waiting
    (no round trip) until that task ends."""
    exchanges: list[str] = []  # the thread of each exchange
    handed: list[tuple[str, int]] = []  # the thread each handed task reached, and how many exchanges came before
    for method in ("exchange", "exchange_later"):
        def traced(*args, _real=getattr(backend, method), **kwargs):
            exchanges.append(threading.current_thread().name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(backend, method, traced)
    wait = backend.wait

    def tracked_wait(*args, **kwargs):
        woken = wait(*args, **kwargs)
        if woken is not None and not isinstance(woken, str):
            handed.append((threading.current_thread().name, len(exchanges)))
        return woken

    monkeypatch.setattr(backend, "wait", tracked_wait)
    handler = make_handler(max_num_threads=2, sleep_seconds=5)
    worker = handler._worker
    wait_for(lambda: worker._blocked_as == worker._beside, what="the broker thread to wait beside a runner")
    before = len(exchanges)
    ref = handler.enqueue_task(Task(jobs.wait_gate, (key,)))
    wait_for(lambda: jobs.calls[key] == ["started"], what="the handed task to start")
    second = handler.enqueue_task(Task(jobs.add, (1, 2)))  # handed to the broker thread, waiting beside
    wait_for(lambda: len(handed) == 2, what="the next task to be handed over")
    (first_to, _), (second_to, exchanges_by_then) = handed
    assert first_to.startswith("taskutils-runner") and second_to == "taskutils-broker", handed
    assert exchanges[before:exchanges_by_then] == []  # nothing woke the broker thread between the two
    assert second.result(timeout=10) == 3
    jobs.gates[key].set()
    assert ref.result(timeout=10) == "released"


@pytest.mark.parametrize("threads, queues", [(1, ("default",)), (2, ("default", "other"))])
def test_while_an_idle_worker_runs_a_handed_task_no_entry_of_it_holds_work_it_cannot_start(backend, key, threads, queues):
    """With no other runner free, the broker thread does not wait beside (what it took would wait
    for the runner); with several queues, it does not either (the worker's entries on the other
    queues would outlast its own): the next task stays free for others, or starts here at once."""
    worker = Worker(backend, Settings.build(threads=threads, sleep_seconds=30, queues=queues, allow=("tests",)), allow_all)
    worker.start()
    try:
        wait_for(lambda: worker._runner_listening, what="a runner to take over the wait")
        first = backend.enqueue("default", [NewTask(Task(jobs.wait_gate, (key,)).encode())])[0]
        wait_for(lambda: jobs.calls[key] == ["started"], what="the first task to start")
        second = backend.enqueue(queues[-1], [NewTask(Task(jobs.add, (1, 2)).encode())])[0]
        if threads == 1:  # an enqueue hands a task over in the enqueue itself: no waiting needed
            assert backend.status(queues[-1], second)[0] == "queued"  # not held here behind the first
        else:
            wait_for(lambda: backend.status(queues[-1], second)[1] is not None, what="the task on the other queue to run")
        jobs.gates[key].set()
        wait_for(lambda: backend.status("default", first)[1] is not None, what="the first task to finish")
    finally:
        jobs.gates[key].set()
        worker.stop(timeout=10)


def test_an_idle_worker_blocks_instead_of_polling(make_handler, backend, monkeypatch):
    """With nothing to do, a worker's threads wait on the backend until woken or until
    sleep_seconds pass: a second of idleness costs a few waits, not one every 50 ms."""
    waits = []
    wait = backend.wait

    def counted_wait(*args, **kwargs):
        waits.append(threading.current_thread().name)
        return wait(*args, **kwargs)

    monkeypatch.setattr(backend, "wait", counted_wait)
    handler = make_handler(max_num_threads=2, sleep_seconds=5)
    wait_for(lambda: any(name.startswith("taskutils-runner") for name in waits), what="a runner to take over the wait")
    before = len(waits)
    time.sleep(1.0)  # the idleness under test
    assert len(waits) - before <= 2, waits[before:]
    assert handler.enqueue_task(Task(jobs.add, (1, 2))).result(timeout=10) == 3  # and it still wakes for work


def test_a_capped_worker_settles_and_claims_in_one_round_trip_per_task(make_handler, backend):
    """Each round trip settles the finished task and claims the next into its freed slot (tasks
    of 60 ms: too long to claim ahead)."""
    backend.set_max_concurrency("default", 1)
    backend.enqueue("default", [NewTask(Task(jobs.sleep_for, (0.06,)).encode()) for _ in range(12)])
    exchanges = ExchangeTrace(backend)
    handler = make_handler(max_num_threads=1, allow=["tests.jobs"])
    assert handler.join(timeout=30)
    handler.close(timeout=10)
    assert backend.counts("default").pending == 0
    assert not exchanges.slots_passed
    assert len(exchanges.sent) <= 12 + 3, exchanges.sent  # settling and claiming apart would take about 24


def test_short_tasks_on_a_capped_queue_start_claims_held_ahead_in_the_slots_they_free(make_handler, backend, key):
    """The worker claims ahead of a cap too; a claim ahead starts only when a task here finishes,
    in its slot, so the cap holds while each round trip carries more tasks."""
    backend.set_max_concurrency("default", 2)
    exchanges = ExchangeTrace(backend)
    handler = make_handler(max_num_threads=6, allow=["tests.jobs"])
    handler.enqueue_tasks([Task(jobs.probe, (key, 0.001)) for _ in range(400)])
    assert handler.join(timeout=60)
    assert backend.counts("default").pending == 0
    assert jobs.peaks[key] == 2
    assert len(exchanges.slots_passed) > 100, exchanges.sent


def test_claims_ahead_go_back_when_no_task_here_would_free_a_slot_soon(backend):
    """Held ahead with nothing running or about to start here, they would wait for good; behind
    a long task, for as long as it runs."""
    backend.set_max_concurrency("default", 1)
    backend.enqueue("default", [NewTask(Task(jobs.add, (1, 2)).encode()) for _ in range(4)])
    worker = Worker(backend, Settings.build(threads=2, sleep_seconds=0.5), allow_all)
    slot, first, second, third = backend.exchange("default", worker.consumer, [], 1, 30, ahead=3)[1].claims
    worker._hand_out([slot, first, second, third])
    assert worker._inbox.get() == slot
    assert worker._startable(worker._inbox.get()) is None and [c for _, c in worker._ahead] == [first]  # slot will start
    settlement, _ = worker._execute(0, slot)  # the runner that ran it took no successor (say it parked)
    worker._unstick()
    assert worker._startable(worker._inbox.get()) is None and not worker._ahead
    assert [worker._settled.get_nowait().claim for _ in range(2)] == [first, second]  # handed back
    worker._pacer.started(0, time.monotonic())  # a task runs here, and goes on running
    assert worker._startable(worker._inbox.get()) is None and worker._settled.empty()  # waits for its slot ...
    worker._ahead[0] = (time.monotonic() - STALL_SECONDS, third)
    worker._unstick()
    assert worker._settled.get_nowait().claim == third and not worker._ahead  # ... for STALL_SECONDS at most
    back = [Settlement(claim, HAND_BACK_KIND) for claim in (first, second, third)]
    applied, _ = backend.exchange("default", worker.consumer, [settlement, *back], 0, 30)
    assert applied == [True] * 4 and backend.counts("default").queued == 3


def test_a_wake_token_a_worker_cannot_use_goes_on_to_another(backend, monkeypatch):
    """A worker with every thread busy (claims ahead aside) passes it on instead of swallowing it."""
    backend.set_max_concurrency("default", 4)
    backend.enqueue("default", [NewTask(Task(jobs.add, (1, 2)).encode()) for _ in range(2)])
    worker = Worker(backend, Settings.build(threads=2, sleep_seconds=0.5), allow_all)
    worker._capped, worker._seconds_per_task = True, 0.001  # short tasks: it would claim ahead
    worker._hand_out(backend.claim("default", worker.consumer, 2, 30).claims)
    nudged = []
    monkeypatch.setattr(backend, "nudge", nudged.append)
    assert worker._room()[0] == 0 and worker._room()[1] > 0
    assert worker._taken("default") is None and nudged == ["default"]


def test_after_a_runner_is_handed_a_task_the_worker_asks_again_before_waiting_as_itself(backend, monkeypatch):
    """The enqueue that handed a runner its task used this worker's idle entry up: a broker thread
    that was not waiting beside then registers again (an exchange) before it waits as the worker,
    or later tasks would find nobody to hand them to."""
    backend.enqueue("default", [NewTask(Task(jobs.add, (1, 2)).encode())])
    (handed,) = backend.claim("default", "an enqueue's hand-off", 1, 30).claims
    worker = Worker(backend, Settings.build(threads=2, sleep_seconds=0.5), allow_all)
    waits: list[str] = []

    def wait(queues, consumer, timeout):
        waits.append(consumer)
        return handed if consumer == worker.consumer and len(waits) == 1 else None

    monkeypatch.setattr(backend, "wait", wait)
    worker._exchange_queues(2, 0)  # asks for work: registered
    worker._runner_listening = True
    assert worker._listen(5) == handed and worker._held
    assert worker._wakeup.is_set()  # the broker thread was not waiting beside: woken
    worker._block(5)
    assert waits == [worker.consumer]  # it did not wait: it asks again first
    worker._exchange_queues(1, 0)
    worker._block(0.01)
    assert waits == [worker.consumer, worker.consumer]
    assert backend.exchange("default", "x", [Settlement(handed, DONE_KIND, b"")], 0, 30)[0] == [True]


def test_short_tasks_finishing_one_by_one_share_round_trips(make_handler, backend):
    """While prefetched work remains, settlements gather so a round trip carries several."""
    backend.enqueue("default", [NewTask(Task(jobs.sleep_for, (0.001,)).encode()) for _ in range(400)])
    exchanges = ExchangeTrace(backend).sent
    handler = make_handler(max_num_threads=8, allow=["tests.jobs"])
    assert handler.join(timeout=60)
    assert backend.counts("default").pending == 0
    settled = [count for count, _ in exchanges if count]
    assert sum(settled) == 400
    assert len(settled) <= 400 / 5, exchanges  # one round trip per one or two tasks without gathering


def test_a_task_finishing_beside_prefetched_ones_is_settled_at_once(make_handler, backend, key):
    """Its result does not wait for the next batch (the broker would sleep sleep_seconds)."""
    handler = make_handler(max_num_threads=2, allow=["tests.jobs"], sleep_seconds=60)
    handler.enqueue_tasks([Task(jobs.add, (1, 1))] * 100)
    assert handler.join(timeout=30)  # short tasks: the worker now claims ahead
    gated = handler.enqueue_task(Task(jobs.wait_gate, (key,)))
    wait_for(lambda: jobs.calls[key] == ["started"], what="gated task start")
    quick, *rest = handler.enqueue_tasks([Task(jobs.add, (2, 3))] + [Task(jobs.wait_gate, (key,))] * 6)
    try:
        assert quick.result(timeout=20) == 5
    finally:
        jobs.gates[key].set()
    assert gated.result(timeout=10) == "released" and all(ref.result(timeout=10) == "released" for ref in rest)


def test_every_exchange_result_is_read_once_in_the_order_sent(make_handler, backend):
    backend.enqueue("default", [NewTask(Task(jobs.sleep_for, (0.001,)).encode()) for _ in range(400)])
    events = ExchangeTrace(backend).events
    handler = make_handler(max_num_threads=8, allow=["tests.jobs"])
    assert handler.join(timeout=60)
    handler.close(timeout=10)
    sends = [number for kind, number in events if kind == "send"]
    assert [number for kind, number in events if kind == "read"] == sends
    assert backend.counts("default").pending == 0


def test_with_work_in_hand_the_next_exchange_goes_out_before_the_last_is_read(backend):
    """The backend serves one exchange while the worker handles the other (driven step by step)."""
    backend.enqueue("default", [NewTask(Task(jobs.add, (1, 2)).encode()) for _ in range(20)])
    worker = Worker(backend, Settings.build(threads=2, sleep_seconds=0.5), allow_all)
    worker._capped, worker._seconds_per_task = False, 0.001  # short tasks on an uncapped queue: claim ahead
    for _ in range(4):
        worker._inbox.put(None)  # claims the runners have not taken yet (no runner threads here)
    finished = backend.claim("default", worker.consumer, 4, 30).claims
    worker._held.update({(claim.queue, claim.task_id): claim for claim in finished})
    events = ExchangeTrace(backend).events
    worker.exchange_once()  # claims ahead, and keeps that exchange in flight
    assert events == [("send", 0)] and len(worker._held) == 4
    for claim in finished:
        worker._settled.put(Settlement(claim, DONE_KIND))
    worker.exchange_once()  # two threads' worth settled: sends them, then reads the first exchange
    assert events == [("send", 0), ("send", 1), ("read", 0)] and len(worker._held) == 4 + 4
    while not worker._inbox.empty():
        worker._inbox.get()  # the runners took everything: the exchange in flight is read now
    worker.exchange_once()
    assert events[3:] == [("read", 1)] and len(worker._held) == 8
    assert backend.counts("default").running == 8
