"""The exchanger driven step by step, against a broker that records what it is sent, on a clock
the test moves: no threads, no Redis, no sleeping."""

from __future__ import annotations

import logging
import math
import threading
from typing import Callable, Mapping, Sequence

import pytest

from taskutils.backends.base import Broker
from taskutils.backends.records import Claim, Ending, Exchange, ExchangeReply, NewTask, Settlement
from taskutils.config import Settings
from taskutils.errors import BackendUnavailable, BrokerError
from taskutils.task import allow_all
from taskutils.worker.execution import TaskExecutor
from taskutils.worker.exchanger import BROKER_TIMER_SLACK, Exchanger
from taskutils.worker.ledger import ClaimLedger
from taskutils.worker.ledger_records import Start
from taskutils.worker.refusals import BROKEN_FIRST_DELAY, BROKEN_MAX_DELAY


class Clock:
    """A clock the test moves; waiting moves it by the whole timeout unless the event is set."""

    def __init__(self) -> None:
        self.time = 0.0

    def now(self) -> float:
        return self.time

    def wait(self, event: threading.Event, timeout: float) -> bool:
        if event.is_set():
            return True
        self.time += timeout
        return False


class RecordingBroker(Broker):
    """Hands out claims from `ready` and records every call in `events`."""

    def __init__(self, clock: Clock, ready: int = 0, capped: bool = False):
        self.clock, self.capped = clock, capped
        self.ready = [Claim("q", f"e-{n:x}", f"t{n}", b"", 0, 0) for n in range(1, ready + 1)]
        self.events: list[tuple] = []
        self.sent: list[Exchange] = []
        self.refuse = 0  # refuse this many exchanges with an error reply
        self.lost: set[str] = set()

    def exchange(self, request: Exchange) -> ExchangeReply:
        return self.send_exchange(request)()

    def send_exchange(self, request: Exchange) -> Callable[[], ExchangeReply]:
        number = len(self.sent)
        self.sent.append(request)
        self.events.append(("send", number))
        if self.refuse:
            self.refuse -= 1
            raise BrokerError("WRONGTYPE Operation against a key holding the wrong kind of value")
        claims, self.ready = self.ready[: request.want], self.ready[request.want :]
        next_due = 1.0 if len(claims) < request.want else None  # a task delayed by 1 s, say
        reply = ExchangeReply([True] * len(request.settlements), claims, next_due, self.capped)

        def read() -> ExchangeReply:
            self.events.append(("read", number))
            return reply

        return read

    def wait(self, queues: Sequence[str], consumer: str, timeout: float) -> str | None:
        self.events.append(("wait", timeout))
        self.clock.time += timeout
        return None

    def interrupt(self, queues: Sequence[str], consumer: str) -> None:
        self.events.append(("interrupt",))

    def renew(self, queue: str, leases: Mapping[str, str], lease: float) -> list[str]:
        self.events.append(("renew", sorted(leases)))
        return [task_id for task_id in leases if task_id in self.lost]

    def rest(self, queues: Sequence[str], consumer: str) -> None:
        pass

    def enqueue(self, queue: str, tasks: Sequence[NewTask]) -> list[str]:
        raise NotImplementedError


class Rig:
    """A ledger and an exchanger on a recording broker; `inbox` holds what the exchanger handed out."""

    def __init__(self, threads: int = 4, ready: int = 0, capped: bool = False, queues: tuple[str, ...] = ("q",)):
        self.clock = Clock()
        self.broker = RecordingBroker(self.clock, ready, capped)
        self.ledger = ClaimLedger(threads, lease=30.0, sleep_seconds=2.0, queues=queues, clock=self.clock)
        self.inbox: list[Claim] = []
        settings = Settings.build({}, threads=threads, queues=queues, sleep_seconds=2.0)
        refused = TaskExecutor(settings, allow_all, "me").follow_ups_refused
        self.exchanger = Exchanger(self.broker, self.ledger, settings, "me", self.inbox.extend, refused, self.clock)

    def run_next(self, seconds: float = 0.001) -> Claim:
        """A runner takes the next claim and finishes it."""
        claim = self.inbox.pop(0)
        assert self.ledger.take(claim) is Start.RUN
        self.ledger.finished(Settlement(claim, Ending.DONE), seconds)
        return claim


def test_with_work_in_hand_the_next_exchange_goes_out_before_the_last_is_read():
    rig = Rig(threads=4, ready=200)
    done = 0
    while done < 200:  # short tasks: the worker comes to prefetch
        rig.exchanger.step()
        for _ in range(min(4, len(rig.inbox))):  # the four runners each finish one
            rig.run_next()
            done += 1
    rig.exchanger.step()  # reads whatever is still in flight
    events, sent = rig.broker.events, len(rig.broker.sent)
    assert [number for kind, number in events if kind == "read"] == list(range(sent))  # each once, in order
    overlapped = [n for n in range(sent - 1) if events.index(("send", n + 1)) < events.index(("read", n))]
    assert overlapped, events  # the broker served one exchange while the worker handled the last


def test_a_worker_that_got_less_than_it_asked_for_waits_on_the_broker_until_the_next_due_time():
    rig = Rig(threads=2, ready=1)
    rig.exchanger.step()  # asks for two, gets the one there is: nothing more to ask for now
    assert len(rig.inbox) == 1 and len(rig.broker.sent) == 1
    started = rig.clock.time
    rig.exchanger.step()
    # the broker may end a blocking wait up to BROKER_TIMER_SLACK late: the worker waits out
    # the last of it on its own clock, so the due time is met, not passed
    assert rig.broker.events[-1] == ("wait", 1.0 - BROKER_TIMER_SLACK) and len(rig.broker.sent) == 1
    assert rig.clock.time - started == pytest.approx(1.0)
    rig.exchanger.step()  # the wait is over: it asks again
    assert len(rig.broker.sent) == 2 and rig.broker.sent[-1].want == 1


def test_a_refused_queue_is_retried_with_growing_delays_and_its_settlements_are_kept():
    rig = Rig(threads=2, ready=2)
    rig.exchanger.step()
    done = [rig.run_next(), rig.run_next()]
    rig.broker.refuse = 5
    for _ in range(60):
        rig.exchanger.step()
        if rig.broker.events[-1][0] == "read":  # an exchange the broker took
            break
    refused = rig.broker.sent[1:6]
    assert all([s.claim for s in request.settlements] == done for request in refused)
    sent_at = [rig.broker.events.index(("send", n)) for n in range(1, 7)]
    assert sent_at == sorted(sent_at) and len(rig.broker.sent) == 7  # no retry in between: no spin
    assert [s.claim for s in rig.broker.sent[6].settlements] == done  # sent again once the queue took them
    assert rig.clock.time >= sum(min(BROKEN_FIRST_DELAY * 2**n, BROKEN_MAX_DELAY) for n in range(5))


def test_a_refused_queue_does_not_hold_up_the_others():
    rig = Rig(threads=2, queues=("broken", "fine"))
    broker = rig.broker
    broker.ready = [Claim("fine", f"e-{n}", f"t{n}", b"", 0, 0) for n in range(1, 5)]
    real_send = broker.send_exchange

    def send(request: Exchange):
        if request.queue == "broken":
            broker.events.append(("refused", request.queue))
            raise BrokerError("WRONGTYPE")
        return real_send(request)

    broker.send_exchange = send  # type: ignore[method-assign]
    for _ in range(40):
        rig.exchanger.step()
        while rig.inbox:
            rig.run_next()
    fine = [request for request in broker.sent if request.queue == "fine"]
    assert sum(len(request.settlements) for request in fine) == 4
    tries = broker.events.count(("refused", "broken"))  # at 0, 0.1, 0.3, 0.7, ... seconds
    assert 2 <= tries <= 2 + math.log2(rig.clock.time / BROKEN_FIRST_DELAY + 1), (tries, rig.clock.time)


def test_claims_found_stale_are_confirmed_before_they_start_and_lost_ones_never_start():
    rig = Rig(threads=2, ready=2)
    rig.exchanger.step()
    first, second = rig.inbox
    rig.inbox.clear()
    rig.clock.time += 20  # the worker stalled past half the lease
    rig.broker.lost = {second.task_id}
    assert rig.ledger.take(first) is Start.CONFIRM and rig.ledger.take(second) is Start.CONFIRM
    rig.exchanger.step()
    assert ("renew", [first.task_id, second.task_id]) in rig.broker.events
    assert rig.inbox == [first]
    assert rig.ledger.take(first) is Start.RUN


def test_a_refusal_after_a_lost_reply_is_logged_as_most_likely_settled_and_a_lost_lease_as_a_warning(caplog):
    rig = Rig(threads=2, ready=2)
    rig.exchanger.step()
    first, second = rig.run_next(), rig.run_next()
    send = rig.broker.send_exchange

    def refusing(request: Exchange):
        read = send(request)
        return lambda: read()._replace(applied=[None, False])

    rig.broker.send_exchange = refusing  # type: ignore[method-assign]
    with caplog.at_level(logging.INFO, logger="taskutils.worker"):
        rig.exchanger.step()
    logged = {record.levelname: record.getMessage() for record in caplog.records}
    assert "most likely the first attempt settled it" in logged["INFO"] and first.task_id in logged["INFO"]
    assert "its lease had moved on" in logged["WARNING"] and second.task_id in logged["WARNING"]


def test_an_outage_while_settling_several_queues_keeps_the_settlements_of_the_queues_not_reached():
    rig = Rig(threads=2, queues=("first", "second"))
    broker = rig.broker
    broker.ready = [Claim("first", "e-1", "t1", b"", 0, 0), Claim("second", "e-2", "t2", b"", 0, 0)]
    rig.exchanger.step()  # "first" gives one, "second" the other
    assert len(rig.inbox) == 2
    rig.run_next(), rig.run_next()
    real_send = broker.send_exchange

    def down(request: Exchange):
        if request.queue == "first":
            raise BackendUnavailable("Redis is unreachable (injected)")
        return real_send(request)

    broker.send_exchange = down  # type: ignore[method-assign]
    try:
        rig.exchanger.step()
        raise AssertionError("the outage went unnoticed")
    except BackendUnavailable:
        pass
    broker.send_exchange = real_send  # type: ignore[method-assign]
    rig.exchanger.step()
    settled = [(request.queue, s.claim.task_id) for request in broker.sent for s in request.settlements]
    assert sorted(settled) == [("first", "e-1"), ("second", "e-2")]


def test_a_confirmation_the_broker_refuses_is_tried_again_later_and_does_not_stop_the_rest():
    rig = Rig(threads=2, ready=2)
    rig.exchanger.step()
    first, second = rig.inbox
    rig.inbox.clear()
    rig.clock.time += 20
    assert rig.ledger.take(first) is Start.CONFIRM and rig.ledger.take(second) is Start.CONFIRM

    def refusing(queue, leases, lease):
        raise BrokerError("OOM command not allowed when used memory > 'maxmemory'")

    rig.broker.renew = refusing  # type: ignore[method-assign]
    rig.exchanger.step()  # refused: the queue waits, the claims stay to be confirmed
    assert rig.inbox == [] and not rig.ledger.drained()
    del rig.broker.renew
    for _ in range(5):
        rig.exchanger.step()
    assert sorted(claim.task_id for claim in rig.inbox) == [first.task_id, second.task_id]


def test_a_notice_that_comes_after_the_plan_keeps_the_exchanger_off_the_broker():
    rig = Rig(threads=2, ready=1)
    rig.exchanger.step()  # got one of two: it waits for new work next
    plan = rig.ledger.plan

    def plan_then_notified():
        planned = plan()
        rig.exchanger.notify()  # a runner, right after the plan
        return planned

    rig.ledger.plan = plan_then_notified  # type: ignore[method-assign]
    waits = len([event for event in rig.broker.events if event[0] == "wait"])
    rig.exchanger.step()
    assert len([event for event in rig.broker.events if event[0] == "wait"]) == waits
