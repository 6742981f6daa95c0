"""The embedded backend: every queue in this process's memory, one lock, the same semantics as Redis."""

from __future__ import annotations

import heapq
import itertools
import os
import threading
import time
from typing import Callable, Mapping, Sequence

from ..recurrent import fire
from .base import Backend
from .local_lock import LocalLock
from .memory_admin import MemoryAdmin
from .memory_browse import MemoryBrowse
from .memory_queue import Entry, Lease, QueueState
from .records import (
    RUNNING, Claim, Ending, Exchange, ExchangeReply, NewTask, Settlement,
)

TOP = float("inf")  # the level recurrent runs are queued at, above every priority


class MemoryBackend(MemoryAdmin, MemoryBrowse, Backend):
    """All state in dicts and heaps behind one condition variable."""

    in_process = True

    def __init__(self, clock: Callable[[], float] = time.time):
        self._clock = clock
        self._changed = threading.Condition()
        self._generation = 0  # bumped on every change a waiting consumer may care about
        self._seen: dict[str, int] = {}  # consumer -> generation at its last claim that found nothing
        self._queues: dict[str, QueueState] = {}
        self._workers: dict[str, tuple[float, dict[str, str]]] = {}
        self._counter = itertools.count(1)
        self._epoch = os.urandom(4).hex()

    def _notify(self) -> None:
        self._generation += 1
        self._changed.notify_all()

    def _queue(self, name: str) -> QueueState:
        return self._queues.setdefault(name, QueueState())

    def _new_entry(self, body: bytes, key: str | None = None) -> Entry:
        return Entry(f"{self._epoch}-{next(self._counter):x}", body, key=key)

    def now(self) -> float:
        return self._clock()

    def enqueue(self, queue: str, tasks: Sequence[NewTask]) -> list[str]:
        with self._changed:
            ids = self._put_new(self._queue(queue), tasks, self.now())
            self._notify()
            return ids

    def _put_new(self, q: QueueState, tasks: Sequence[NewTask], now: float) -> list[str]:
        """Store new tasks (each whose unique value is held gets the holder's id instead)."""
        ids = []
        for task in tasks:
            holder = q.unique.holder(task.unique, now) if task.unique else None
            if holder is not None:
                ids.append(holder)
                continue
            entry = self._new_entry(task.body, task.key)
            if task.unique:
                q.unique.hold(task.unique, task.unique_for, entry.task_id)
            q.put(task.priority, entry, now + task.delay if task.delay > 0 else None, next(self._counter), now)
            ids.append(entry.task_id)
        return ids

    def exchange(self, request: Exchange) -> ExchangeReply:
        with self._changed:
            q, now = self._queue(request.queue), self.now()
            self._put_follow_ups(q, request.settlements, now)
            applied: list[bool | None] = [
                self._settle(q, settlement, request.result_ttl, now) for settlement in request.settlements
            ]
            if any(applied):
                self._notify()
            q.add_tally(request.tally, now)
            if request.want <= 0:
                return ExchangeReply(applied, [], None, q.capped)
            self._promote(q, now)
            q.unique.expire(now)
            if q.paused:  # nothing starts; resuming wakes the consumer (set_paused notifies)
                self._seen.setdefault(request.consumer, self._generation)
                return ExchangeReply(applied, [], None, q.capped, True)
            want = request.want
            if q.max_concurrency is not None:
                want = min(want, q.max_concurrency - len(q.leases))
            claims = self._take(q, request.queue, want, now, request.consumer)
            for claim in claims:
                q.leases[claim.task_id].deadline = now + request.lease
            if len(claims) < request.want:  # it took all it could: it waits for a change next
                self._seen.setdefault(request.consumer, self._generation)
            else:
                self._seen.pop(request.consumer, None)
            if len(claims) >= request.want:
                return ExchangeReply(applied, claims, None, q.capped)
            next_due, work_due = self._next_due(q, now)
            return ExchangeReply(applied, claims, next_due, q.capped, False, work_due)

    def _put_follow_ups(self, q: QueueState, settlements: Sequence[Settlement], now: float) -> None:
        """The follow-ups of the done settlements that will apply (the first of each claim that
        holds its lease), stored before any of them settles, as on Redis: while every settling
        task still holds its unique value."""
        seen = set()
        for settlement in settlements:
            claim = settlement.claim
            if claim.task_id in seen or q.lease_of(claim.task_id, claim.token) is None:
                continue
            seen.add(claim.task_id)
            if settlement.ending is Ending.DONE and settlement.follow_ups:
                self._put_new(q, settlement.follow_ups, now)

    def _take(self, q: QueueState, queue: str, limit: int, now: float, consumer: str) -> list[Claim]:
        """Lease up to `limit` ready tasks, lane by lane in turns (memory_lanes.py)."""
        claims: list[Claim] = []
        for level, entry, holds_slot in q.lanes.take(limit, now):
            token = str(next(self._counter))
            q.leases[entry.task_id] = Lease(now, token, level, entry, holds_slot, consumer)
            q.state[entry.task_id] = RUNNING
            claims.append(Claim(queue, entry.task_id, token, entry.body, entry.failures, entry.crashes, entry.key))
        return claims

    def _promote(self, q: QueueState, now: float) -> None:
        """Due delayed tasks and recurrent runs become ready; tasks of expired leases go back."""
        while q.scheduled and q.scheduled[0][0] <= now:
            _, _, level, entry = heapq.heappop(q.scheduled)
            q.put(level, entry, None, 0, now)
        for name, record in sorted(q.recurrent.items(), key=lambda item: item[1].next_run):
            if record.next_run > now:
                continue
            del q.recurrent[name]
            if record.stop is not None and record.next_run > record.stop:
                continue
            runs, after = fire(record, now)
            for _ in range(runs):
                q.put(TOP, self._new_entry(record.body), None, 0, now)
            if after is not None:
                q.recurrent[name] = after
        expired = sorted((held.deadline, task_id) for task_id, held in q.leases.items() if held.deadline <= now)
        for _, task_id in reversed(expired):  # each to the front: the last first, so they keep their order
            held = q.leases.pop(task_id)
            q.cancel_run.discard(task_id)
            held.entry.crashes += 1
            q.put(held.level, held.entry, None, 0, now, front=True)
            if held.holds_slot:
                q.lanes.released(held.entry.key or "", now)

    @staticmethod
    def _next_due(q: QueueState, now: float) -> tuple[float | None, float | None]:
        """Seconds until the next due time, and until work next becomes startable (lease
        deadlines left out); None for none."""
        times = [q.scheduled[0][0]] if q.scheduled else []
        times += [record.next_run for record in q.recurrent.values()]
        later = q.lanes.next_time()
        times += [later] if later is not None else []
        first = min(times + [held.deadline for held in q.leases.values()], default=None)
        work = min(times, default=None)
        return (None if first is None else max(first - now, 0.0)), (None if work is None else max(work - now, 0.0))

    def _settle(self, q: QueueState, settlement: Settlement, result_ttl: float, now: float) -> bool:
        claim = settlement.claim
        held = q.lease_of(claim.task_id, claim.token)
        if held is None:
            return False
        del q.leases[claim.task_id]
        q.state.pop(claim.task_id, None)
        q.cancel_run.discard(claim.task_id)
        key = held.entry.key
        if settlement.ending is Ending.RETRY:
            held.entry.failures += 1
            due = now + settlement.delay if settlement.delay > 0 else None
            q.put(held.level, held.entry, due, next(self._counter), now)
        elif settlement.ending is Ending.HAND_BACK:
            q.put(held.level, held.entry, None, 0, now, front=True)
        elif settlement.ending is Ending.THROTTLE:
            if key:
                q.lanes.throttled(key, settlement.delay, now)
            due = now + settlement.delay if settlement.delay > 0 and not key else None
            q.put(held.level, held.entry, due, next(self._counter), now, front=True)
        else:
            if settlement.ending is Ending.FAILED:
                q.failed[claim.task_id] = (held.level, held.entry, settlement.record)
            elif key:
                q.lanes.succeeded(key)
            q.unique.release(claim.task_id, now)
            self._keep_outcome(q, claim.task_id, settlement.outcome, result_ttl, now)
        if held.holds_slot:
            q.lanes.released(key or "", now)
        return True

    @staticmethod
    def _keep_outcome(q: QueueState, task_id: str, outcome: bytes, result_ttl: float, now: float) -> None:
        while q.outcomes:  # oldest first: drop the expired ones at the front
            oldest = next(iter(q.outcomes))
            if q.outcomes[oldest][0] > now:
                break
            del q.outcomes[oldest]
        if result_ttl > 0:
            q.outcomes[task_id] = (now + result_ttl, outcome)

    def wait(self, queues: Sequence[str], consumer: str, timeout: float) -> str | None:
        """Every waiting consumer sees every change; a wait that follows a claim that got fewer
        tasks than it asked for returns as soon as anything changed since that claim."""
        deadline = time.monotonic() + timeout
        with self._changed:
            seen = self._seen.pop(consumer, self._generation)
            while seen == self._generation and time.monotonic() < deadline:
                self._changed.wait(deadline - time.monotonic())
            if seen == self._generation:  # nothing changed: a wait that follows this one blocks too
                self._seen[consumer] = seen
        return None

    def interrupt(self, queues: Sequence[str], consumer: str) -> None:
        with self._changed:
            self._notify()

    def rest(self, queues: Sequence[str], consumer: str) -> None:
        with self._changed:
            self._seen.pop(consumer, None)
            self._notify()

    def renew(self, queue: str, leases: Mapping[str, str], lease: float) -> list[str]:
        with self._changed:
            q, now = self._queue(queue), self.now()
            lost = []
            for task_id, token in leases.items():
                held = q.lease_of(task_id, token)
                if held is None:
                    lost.append(task_id)
                else:
                    held.deadline = now + lease
            return lost

    def lock(self, name: str, lease: float) -> LocalLock:
        return LocalLock(name)
