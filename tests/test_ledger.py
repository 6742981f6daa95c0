"""The claim ledger alone: no threads, no broker, a clock the test moves."""

from __future__ import annotations

from taskutils.backends.records import Claim, Ending, Settlement
from taskutils.worker.ledger import GATHER_SECONDS, ClaimLedger
from taskutils.worker.ledger_records import Start


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.time = 0.0

    def now(self) -> float:
        return self.time


def claims(count: int, queue: str = "q", first: int = 1) -> list[Claim]:
    return [Claim(queue, f"e-{n:x}", f"t{n}", b"body", 0, 0) for n in range(first, first + count)]


def ledger_holding(held: list[Claim], threads: int = 4, capped: bool = False, clock: Clock | None = None) -> ClaimLedger:
    """A ledger that asked for and got `held`."""
    ledger = ClaimLedger(threads, lease=30.0, sleep_seconds=2.0, queues=("q",), clock=clock or Clock())
    plan = ledger.plan()
    ledger.asked(plan.want)
    ledger.replied("q", [], [], plan.want, held, ledger.clock.now(), None, capped)
    return ledger


def run(ledger: ClaimLedger, claim: Claim, seconds: float = 0.001) -> bool:
    assert ledger.take(claim) is Start.RUN
    return ledger.finished(Settlement(claim, Ending.DONE), seconds)


def test_a_new_ledger_asks_for_one_claim_per_thread():
    plan = ClaimLedger(4, 30.0, 2.0, ("q",), Clock()).plan()
    assert plan.send and plan.want == 4 and plan.settle == []


def test_short_tasks_on_an_uncapped_queue_are_prefetched_one_more_per_thread():
    ledger = ledger_holding(claims(40), capped=False)  # tasks count as long until shown short
    for claim in claims(40):
        run(ledger, claim, seconds=0.001)
    assert ledger.plan().want == 8  # the settled free their slots, and four more wait ahead


def test_long_tasks_and_capped_queues_are_not_prefetched():
    long = ledger_holding(claims(40), capped=False)
    for claim in claims(40):
        run(long, claim, seconds=0.2)
    assert long.plan().want == 4
    capped = ledger_holding(claims(40), capped=True)
    for claim in claims(40):
        run(capped, claim, seconds=0.001)
    assert capped.plan().want == 4


def test_a_settlement_waits_for_others_to_share_its_round_trip_but_not_long():
    clock = Clock()
    ledger = ledger_holding(claims(8), threads=4, clock=clock)
    first, second, *waiting = claims(8)
    assert run(ledger, first) is True  # the first of a batch: the exchanger starts counting
    plan = ledger.plan()
    assert not plan.send and plan.wait == GATHER_SECONDS  # five claims still wait for the runners
    clock.time += GATHER_SECONDS
    plan = ledger.plan()
    assert [s.claim for s in plan.settle] == [first] and plan.want == 0  # it holds more than its threads


def test_a_batch_goes_out_once_each_thread_has_a_settlement():
    ledger = ledger_holding(claims(8), threads=2)
    first, second, *_ = claims(8)
    run(ledger, first)
    assert run(ledger, second) is True
    assert [s.claim for s in ledger.plan().settle] == [first, second]


def test_settlements_in_flight_free_their_slots_before_the_reply():
    ledger = ledger_holding(claims(2), threads=2, capped=True)
    for claim in claims(2):
        run(ledger, claim)
    plan = ledger.plan()
    assert len(plan.settle) == 2 and plan.want == 2  # one round trip settles both and claims two more
    ledger.asked(plan.want)
    assert ledger.plan().want == 0  # the claims asked for are counted until the reply
    refused = ledger.replied("q", plan.settle, [True, None], plan.want, claims(2, first=9), 0.0, None, True).refused
    assert [(s.claim.task_id, applied) for s, applied in refused] == [("e-2", None)]


def test_a_starved_ledger_blocks_for_new_work_until_the_next_due_time():
    ledger = ClaimLedger(2, 30.0, 2.0, ("q",), Clock())
    plan = ledger.plan()
    ledger.asked(plan.want)
    ledger.replied("q", [], [], plan.want, [], 0.0, 0.5, False)
    plan = ledger.plan()
    assert plan.block and plan.wait == 0.5 and not plan.send
    ledger.woken()
    assert ledger.plan().want == 2


def test_a_claim_that_waited_past_half_its_lease_is_confirmed_before_it_starts():
    clock = Clock()
    ledger = ledger_holding(claims(2), clock=clock)
    fresh, stale = claims(2)
    assert ledger.take(fresh) is Start.RUN
    clock.time += 16  # a stall: more than half the 30 s lease since the claim
    assert ledger.take(stale) is Start.CONFIRM
    assert ledger.confirmations() == [stale] and ledger.confirmations() == []
    assert ledger.confirmed([stale], [], clock.time) == [stale]
    assert ledger.take(stale) is Start.RUN  # confirmed just now


def test_a_claim_whose_lease_was_lost_is_dropped_unstarted():
    clock = Clock()
    ledger = ledger_holding(claims(3), clock=clock)
    first, second, third = claims(3)
    clock.time += 16
    assert ledger.take(first) is Start.CONFIRM
    assert ledger.confirmed([first], [first.task_id], clock.time) == []
    assert ledger.take(first) is Start.DROP  # handed to the runners again by mistake: still dropped
    assert ledger.renewed("q", {second.task_id: second.token}, [second.task_id], clock.time) == []  # not started: no loss
    assert ledger.take(second) is Start.DROP


def test_the_heartbeat_renews_what_is_held_but_not_what_is_being_settled():
    ledger = ledger_holding(claims(3), threads=3)
    first, second, third = claims(3)
    run(ledger, first)
    assert ledger.take(second) is Start.RUN
    plan = ledger.plan()
    assert [s.claim for s in plan.settle] == [first]
    assert ledger.renewals() == {"q": {second.task_id: second.token, third.task_id: third.token}}
    lost_running = ledger.renewed("q", {second.task_id: second.token}, [second.task_id], 0.0)
    assert lost_running == [second]  # lost while it ran here: the warning is true


def test_stopping_hands_back_claims_not_started_and_drains():
    ledger = ledger_holding(claims(2))
    first, second = claims(2)
    assert ledger.take(first) is Start.RUN
    ledger.stop()
    assert ledger.take(second) is Start.HAND_BACK
    ledger.finished(Settlement(first, Ending.DONE), 0.01)
    plan = ledger.plan()
    assert plan.want == 0 and [(s.claim, s.ending) for s in plan.settle] == [(second, Ending.HAND_BACK), (first, Ending.DONE)]
    assert not ledger.drained()
    ledger.replied("q", plan.settle, [True, True], 0, [], 0.0, None, False)
    assert ledger.drained()


def test_claims_that_arrive_after_a_pause_go_back_unstarted():
    ledger = ClaimLedger(2, 30.0, 2.0, ("q",), Clock())
    plan = ledger.plan()
    ledger.asked(plan.want)
    ledger.pause(True)  # while that exchange was in flight
    assert ledger.rest_due()
    assert ledger.replied("q", [], [], plan.want, claims(2), 0.0, None, False).claims == []
    back = ledger.plan().settle
    assert [(s.claim.task_id, s.ending) for s in back] == [("e-1", Ending.HAND_BACK), ("e-2", Ending.HAND_BACK)]
    ledger.rested()
    ledger.pause(False)
    assert not ledger.rest_due() and ledger.plan().want == 2


def test_abandon_gives_up_every_claim_not_being_settled():
    ledger = ledger_holding(claims(3), threads=3)
    first, second, third = claims(3)
    run(ledger, first)
    assert ledger.take(second) is Start.RUN
    plan = ledger.plan()
    ledger.asked(plan.want)
    assert {(s.claim, s.ending) for s in ledger.abandon()} == {(second, Ending.HAND_BACK), (third, Ending.HAND_BACK)}
    assert ledger.finished(Settlement(second, Ending.DONE), 1.0) is False  # abandoned: not sent
    ledger.stop()
    ledger.replied("q", plan.settle, [True], plan.want, [], 0.0, None, False)
    assert ledger.drained()


def test_a_refused_exchange_sets_its_settlements_aside_until_given_back():
    ledger = ledger_holding(claims(2), threads=2)
    for claim in claims(2):
        run(ledger, claim)
    plan = ledger.plan()
    ledger.asked(plan.want)
    ledger.set_aside(plan.settle, plan.want)
    assert not ledger.has_unsent() and ledger.plan().want == 2  # finished: their threads are free
    assert set(ledger.renewals()["q"]) == {"e-1", "e-2"}  # and their leases are kept
    ledger.unsent_again(plan.settle, 0)
    assert [s.claim.task_id for s in ledger.plan().settle] == ["e-1", "e-2"]


def test_a_task_claimed_again_while_its_first_claim_still_runs_is_another_claim():
    """This worker stalled, the first lease expired, and its own next exchange claimed the task
    again under a new token: the two are kept apart, and each settles on its own."""
    ledger = ledger_holding(claims(1), threads=2)
    (first,) = claims(1)
    assert ledger.take(first) is Start.RUN
    again = first._replace(token="t-new")
    plan = ledger.plan()
    ledger.asked(plan.want)
    ledger.replied("q", [], [], plan.want, [again], 0.0, None, False)
    assert ledger.take(again) is Start.RUN
    ledger.finished(Settlement(first, Ending.DONE), 0.01)  # the stale run ends first
    ledger.finished(Settlement(again, Ending.DONE), 0.01)
    assert [s.claim.token for s in ledger.plan().settle] == ["t1", "t-new"]
    assert ledger.renewals() == {}


def test_a_finished_claim_whose_lease_is_reported_lost_still_sends_its_outcome():
    ledger = ledger_holding(claims(2), threads=4)
    first, second = claims(2)
    run(ledger, first)  # its outcome waits for a batch
    assert ledger.renewed("q", {first.task_id: first.token}, [first.task_id], 0.0) == []
    assert [s.claim for s in ledger.plan().settle] == [first]  # sent all the same: the broker decides


def test_a_worker_with_room_but_claims_still_waiting_waits_for_its_runners_not_for_new_work():
    """It is not registered as waiting for work: were it to wait in the broker, it would take
    wake tokens meant for workers that are."""
    ledger = ledger_holding(claims(40), threads=4, capped=False)
    for claim in claims(40)[:36]:
        run(ledger, claim)
    ledger.replied("q", ledger.plan().settle, [True] * 36, 0, [], 0.0, None, False)
    plan = ledger.plan()  # 4 claims wait for the runners; there is room for 4 more
    assert not plan.send and not plan.block


def test_abandon_sends_the_outcomes_already_made_and_hands_back_the_rest():
    ledger = ledger_holding(claims(3), threads=4)
    first, second, third = claims(3)
    run(ledger, first)  # done, its outcome not sent yet
    assert ledger.take(second) is Start.RUN
    given_up = {(s.claim, s.ending) for s in ledger.abandon()}
    assert given_up == {(first, Ending.DONE), (second, Ending.HAND_BACK), (third, Ending.HAND_BACK)}


def test_a_throttle_goes_out_at_once_without_waiting_for_a_batch():
    """A throttled key must stop starting tasks as soon as the server said so: its settlement
    does not wait GATHER_SECONDS for others to share its round trip."""
    ledger = ledger_holding(claims(8), threads=4)
    first, *_ = claims(8)
    assert ledger.take(first) is Start.RUN
    ledger.finished(Settlement(first, Ending.THROTTLE, delay=1.0), 0.01)
    plan = ledger.plan()
    assert [s.ending for s in plan.settle] == [Ending.THROTTLE]


def test_claims_of_a_queue_paused_across_the_fleet_go_back_unstarted_until_it_resumes():
    first, second, third = claims(3)
    ledger = ledger_holding([first, second])
    ledger.asked(2)
    ledger.replied("q", [], [], 2, [], 0.0, None, False, paused=True)  # a reply says: paused
    assert ledger.take(first) is Start.HAND_BACK
    assert [(s.claim, s.ending) for s in ledger.plan().settle] == [(first, Ending.HAND_BACK)]
    ledger.asked(2)
    ledger.replied("q", [], [], 2, [third], 0.0, None, False, paused=False)  # resumed
    assert ledger.take(second) is Start.RUN and ledger.take(third) is Start.RUN


def test_a_settlement_waits_for_the_next_due_time_when_nothing_is_due_before_it():
    """Keys waiting for their rates: claims sent before the queue's next due time come back
    empty, so a settlement waits for it (at most GATHER_SECONDS) and shares its round trip."""
    clock = Clock()
    (first,) = claims(1)
    ledger = ledger_holding([first], threads=4, clock=clock)  # got 1 of 4: starved
    ledger.asked(3)
    ledger.replied("q", [], [], 3, [], clock.now(), GATHER_SECONDS / 2, False, work_due=GATHER_SECONDS / 2)  # work due in half a gather
    run(ledger, first)
    plan = ledger.plan()
    assert not plan.send and plan.wait == GATHER_SECONDS / 2
    clock.time += GATHER_SECONDS / 2
    plan = ledger.plan()
    assert plan.send and [s.claim for s in plan.settle] == [first] and plan.want == 4


def test_a_settlement_goes_at_once_when_the_runners_run_out_and_work_may_be_ready():
    clock = Clock()
    (first,) = claims(1)
    ledger = ledger_holding([first], threads=4, clock=clock)  # starved, nothing due: new work wakes it
    run(ledger, first)
    assert ledger.plan().send
    clock.time = 0.0
    later = ledger_holding([first], threads=4, clock=clock)
    later.asked(3)
    later.replied("q", [], [], 3, [], 0.0, 10 * GATHER_SECONDS, False, work_due=10 * GATHER_SECONDS)  # due long after a gather
    run(later, first)
    assert not later.plan().send
    clock.time += GATHER_SECONDS
    assert later.plan().send


def test_a_lease_deadline_is_no_reason_to_hold_a_settlement():
    """A queue whose only due time is a lease's deadline (a task running somewhere) has no work
    coming at a known time: new work comes by enqueue, so the settlement goes at once (holding it
    cost every idle queue 5 ms of latency)."""
    clock = Clock()
    (first,) = claims(1)
    ledger = ledger_holding([first], threads=4, clock=clock)
    ledger.asked(3)
    ledger.replied("q", [], [], 3, [], 0.0, 30.0, False, work_due=None)  # next due: a lease, in 30 s
    run(ledger, first)
    assert ledger.plan().send
