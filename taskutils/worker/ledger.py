"""The claim ledger: what one worker holds, how many more claims it may ask for, and when to send.

Pure bookkeeping under one lock, with an injectable clock: no threads and no broker here. The
runners, the exchanger and the heartbeat record what they do in it; the exchanger asks it what
to do next (`plan`). The prefetch rule: a worker holds at most `threads` claims, plus another
`threads` waiting when its tasks are short (under SHORT_TASK_SECONDS on average) and the queue
has no concurrency cap. So a round trip carries many short tasks, a long task never waits in one
worker when another could start it, and on a capped queue every held claim is a running task.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from ..backends.records import Claim, Ending, Settlement
from .clock import Clock
from .ledger_leases import LeaseBook
from .ledger_records import HeldClaim, Plan, Replied, Start, key_of

SHORT_TASK_SECONDS = 0.05  # tasks shorter than this on average are prefetched
GATHER_SECONDS = 0.005  # longest a settlement waits for others to share its round trip
STALE_SHARE = 0.5  # a claim whose lease was last confirmed this share of the lease ago is confirmed before it starts


class ClaimLedger(LeaseBook):
    """Every claim one worker holds, from its claim to the reply that settles it."""

    def __init__(
        self, threads: int, lease: float, sleep_seconds: float, queues: Sequence[str] = ("default",),
        clock: Clock | None = None,
    ):
        self.threads, self.lease, self.sleep_seconds, self.queues = threads, lease, sleep_seconds, tuple(queues)
        self.clock = clock or Clock()
        self._lock = threading.Lock()
        self._held: dict[tuple[str, str, str], HeldClaim] = {}
        self._waiting = 0  # claims handed to the runners and not taken yet
        self._unsent: list[Settlement] = []
        self._unsent_since = 0.0
        self._asked = 0  # claims asked for by exchanges whose reply is not read yet
        self._to_confirm: list[Claim] = []
        self._seconds_per_task = 1.0  # running average: decides the prefetch
        self._capped: dict[str, bool] = {}  # per queue, from its last reply (a queue not heard from counts as capped)
        self._starved = False  # the last ask got nothing: wait for new work before asking again
        self._due_at: float | None = None  # from that reply: when (clock time) the queue's next due time comes
        self._work_at: float | None = None  # and when work next becomes startable (lease deadlines left out)
        self._paused = False
        self._paused_queues: set[str] = set()  # paused across the fleet, from their last replies
        self._stopping = False
        self._rest_due = False  # paused or stopping, and the broker not told yet

    # -- what the exchanger asks ---------------------------------------------------------------

    def plan(self) -> Plan:
        """Send when a batch of settlements is ready (one per thread, or the oldest waited
        GATHER_SECONDS, or the runners are about to run out of claims, or one is a throttle: its
        key must stop starting tasks at once), or when there is room and the runners are about
        to run out; block on the broker when starved; else wait. Runners about to run out do not
        hurry a settlement while the queues told of nothing due before a later time (keys waiting
        for their rates): a claim sent earlier would come back empty, so the settlement waits
        for company up to GATHER_SECONDS, or for that time, and rides with the claim made then."""
        now = self.clock.now()
        with self._lock:
            due_later = self._starved and self._work_at is not None and self._work_at > now
            low = self._waiting <= self.threads // 2
            want = self._room()
            gathered = now - self._unsent_since if self._unsent else 0.0
            batch_ready = bool(self._unsent) and (
                len(self._unsent) >= self.threads or gathered >= GATHER_SECONDS or (low and not due_later)
                or self._stopping or self._paused or any(s.ending is Ending.THROTTLE for s in self._unsent)
            )
            if batch_ready or (want > 0 and low and not self._starved):
                settle, self._unsent = self._unsent, []
                for settlement in settle:
                    held = self._held.get(key_of(settlement.claim))
                    if held is not None:  # else it is sent all the same: the broker applies or refuses it
                        held.settling = True
                return Plan(settle, want)
            if self._unsent:
                wait = GATHER_SECONDS - gathered
                return Plan([], 0, min(wait, self._work_at - now) if due_later else wait)
            if want > 0 and self._starved:  # the queues had nothing more to give: wait for new work
                due = self.sleep_seconds if self._due_at is None else min(max(self._due_at - now, 0.0), self.sleep_seconds)
                return Plan([], 0, due, block=True)
            return Plan([], 0, self.sleep_seconds)  # for the runners

    def _room(self) -> int:
        """Claims to ask for: threads, plus the prefetch, less the claims not finished yet."""
        if self._paused or self._stopping:
            return 0
        uncapped = all(self._capped.get(queue) is False for queue in self.queues)
        prefetch = self.threads if uncapped and self._seconds_per_task < SHORT_TASK_SECONDS else 0
        holding = sum(not held.finished for held in self._held.values()) + self._asked
        return max(self.threads + prefetch - holding, 0)

    def asked(self, want: int) -> None:
        """An exchange asking for `want` claims was sent."""
        with self._lock:
            self._asked += want

    def replied(
        self, queue: str, settled: Sequence[Settlement], applied: Sequence[bool | None], want: int,
        claims: Sequence[Claim], sent_at: float, next_due: float | None, capped: bool, paused: bool = False,
        work_due: float | None = None,
    ) -> Replied:
        """Record an exchange's reply. Claims that arrive once the worker pauses or stops go
        back unstarted; the others are for the runners. A queue the reply says is paused across
        the fleet starts none of the claims this worker holds: each goes back as a runner takes it."""
        with self._lock:
            for settlement in settled:
                self._held.pop(key_of(settlement.claim), None)
            self._asked -= want
            for claim in claims:
                self._held[key_of(claim)] = HeldClaim(claim, sent_at)
            if self._paused or self._stopping:
                for claim in claims:
                    self._hand_back(claim)
                claims = []
            self._waiting += len(claims)
            if want > 0:  # whether the queue is paused; fewer than asked: it had no more to give, wait for new work
                (self._paused_queues.add if paused else self._paused_queues.discard)(queue)
                self._starved = len(claims) < want
                self._due_at = None if next_due is None else self.clock.now() + next_due
                self._work_at = None if work_due is None else self.clock.now() + work_due
                self._capped[queue] = capped
        refused = [(settlement, done) for settlement, done in zip(settled, applied) if not done]
        return Replied(refused, list(claims))

    def unsent_again(self, settled: Sequence[Settlement], want: int) -> None:
        """An exchange failed before it was applied: its settlements go out again later."""
        with self._lock:
            self._not_sent(settled, want)
            if settled and not self._unsent:
                self._unsent_since = self.clock.now()
            self._unsent = [*settled, *self._unsent]

    def settle_again(self, settlements: Sequence[Settlement]) -> None:
        """Claims whose settlement the broker did not apply (their follow-up tasks were refused),
        still held, to be settled as `settlements` say instead."""
        with self._lock:
            for settlement in settlements:
                held = self._held.get(key_of(settlement.claim))
                if held is not None:
                    held.settling = False
                self._add_unsent(settlement)

    def set_aside(self, settled: Sequence[Settlement], want: int) -> None:
        """The broker refused an exchange: its settlements wait apart (the exchanger gives them
        back with `unsent_again` when it tries that queue again); their leases are still renewed."""
        with self._lock:
            self._not_sent(settled, want)

    def _not_sent(self, settled: Sequence[Settlement], want: int) -> None:
        for settlement in settled:
            held = self._held.get(key_of(settlement.claim))
            if held is not None:
                held.settling = False
        self._asked -= want

    def woken(self) -> None:
        """The wait for new work ended: ask again."""
        with self._lock:
            self._starved = False

    def has_unsent(self) -> bool:
        with self._lock:
            return bool(self._unsent)

    def work_ahead(self) -> bool:
        """The runners have claims enough that the reply of an exchange just sent can wait."""
        with self._lock:
            return self._waiting > self.threads // 2 and not (self._stopping or self._paused)

    # -- what the runners record ---------------------------------------------------------------

    def take(self, claim: Claim) -> Start:
        """A runner takes a claim from its inbox."""
        now = self.clock.now()
        with self._lock:
            self._waiting -= 1
            held = self._held.get(key_of(claim))
            if held is None:
                return Start.DROP
            if self._stopping or claim.queue in self._paused_queues:
                self._hand_back(claim)
                return Start.HAND_BACK
            if now - held.confirmed_at > self.lease * STALE_SHARE:
                self._to_confirm.append(claim)
                return Start.CONFIRM
            held.running = True
            return Start.RUN

    def finished(self, settlement: Settlement, seconds: float) -> bool:
        """A runner finished a claim it started; True if the exchanger should look now: a batch
        is ready, or this is the first settlement of one (its GATHER_SECONDS start now)."""
        with self._lock:
            self._seconds_per_task += (seconds - self._seconds_per_task) * 0.1
            held = self._held.get(key_of(settlement.claim))
            if held is None:  # handed back meanwhile (the worker stopped without waiting for it)
                return False
            held.running, held.finished = False, True
            self._add_unsent(settlement)
            return (
                len(self._unsent) in (1, self.threads) or self._waiting <= self.threads // 2
                or self._stopping or self._paused
            )

    def _hand_back(self, claim: Claim) -> None:
        self._held[key_of(claim)].finished = True
        self._add_unsent(Settlement(claim, Ending.HAND_BACK))

    def _add_unsent(self, settlement: Settlement) -> None:
        if not self._unsent:
            self._unsent_since = self.clock.now()
        self._unsent.append(settlement)

    # -- the worker's lifecycle ----------------------------------------------------------------

    def pause(self, paused: bool) -> None:
        with self._lock:
            self._paused = paused
            self._starved = False
            self._rest_due = paused and not self._stopping

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._rest_due = True

    @property
    def stopping(self) -> bool:
        return self._stopping

    def rest_due(self) -> bool:
        """The worker paused or stopped since the exchanger last told the broker it waits for no work."""
        with self._lock:
            return self._rest_due

    def rested(self) -> None:
        with self._lock:
            self._rest_due = False

    def abandon(self) -> list[Settlement]:
        """Give up every claim not being settled, at once (the process is about to end): the
        settlements made and not sent yet as they are, and a hand-back for each claim not
        finished. Settlements set aside for a refused queue stay where they are."""
        with self._lock:
            out, self._unsent = self._unsent, []
            for settlement in out:
                self._held.pop(key_of(settlement.claim), None)
            for key, held in list(self._held.items()):
                if not held.settling and not held.finished:
                    out.append(Settlement(held.claim, Ending.HAND_BACK))
                    del self._held[key]
            return out

    def drained(self) -> bool:
        """Stopping, and nothing is held or asked for any more."""
        with self._lock:
            return self._stopping and not self._held and not self._asked

    @property
    def running(self) -> int:
        with self._lock:
            return sum(held.running for held in self._held.values())
