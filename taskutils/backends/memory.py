"""The embedded backend: every queue in this process's memory, one lock, same semantics as Redis."""

from __future__ import annotations

import heapq
import itertools
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

from ..recurrent import next_run
from .base import (
    FAIL_KIND,
    HAND_BACK_KIND,
    QUEUED,
    RETRY_KIND,
    RUNNING,
    SCHEDULED,
    Backend,
    Claim,
    ClaimBatch,
    Counts,
    NewTask,
    RecurrentRecord,
    Settlement,
)

TOP = float("inf")  # the level recurrent runs are queued at, above every priority


@dataclass
class _Entry:
    task_id: str
    body: bytes
    failures: int = 0
    crashes: int = 0


@dataclass
class _Lease:
    deadline: float
    token: int
    level: float
    entry: _Entry
    ahead: bool = False  # claimed ahead on a capped queue: not counted by the cap until it starts


@dataclass
class _Queue:
    ready: dict[float, deque[_Entry]] = field(default_factory=dict)
    scheduled: list[tuple[float, int, float, _Entry]] = field(default_factory=list)
    state: dict[str, str] = field(default_factory=dict)
    leases: dict[str, _Lease] = field(default_factory=dict)
    outcomes: dict[str, tuple[float, bytes]] = field(default_factory=dict)
    failed: dict[str, tuple[float, _Entry, bytes]] = field(default_factory=dict)
    recurrent: dict[str, RecurrentRecord] = field(default_factory=dict)
    max_concurrency: int | None = None
    ahead: int = 0  # leases held ahead

    def lease_of(self, task_id: str, token: int) -> _Lease | None:
        """The lease of `task_id` if `token` still holds it."""
        held = self.leases.get(task_id)
        return held if held is not None and held.token == token else None

    def release(self, task_id: str) -> _Lease:
        """End the lease of `task_id` (which must be held)."""
        held = self.leases.pop(task_id)
        self.ahead -= held.ahead
        return held


class MemoryBackend(Backend):
    """All state in dicts and heaps behind one condition variable."""

    def __init__(self, clock: Callable[[], float] = time.time):
        self._clock = clock
        self._changed = threading.Condition()
        self._generation = 0  # bumped on every change a waiting consumer may care about
        self._seen: dict[str, int] = {}  # consumer -> generation at its last empty claim
        self._queues: dict[str, _Queue] = {}
        self._workers: dict[str, tuple[float, dict[str, str]]] = {}
        self._ids = itertools.count(1)

    def _notify(self) -> None:
        self._generation += 1
        self._changed.notify_all()

    def _queue(self, name: str) -> _Queue:
        return self._queues.setdefault(name, _Queue())

    def now(self) -> float:
        return self._clock()

    def enqueue(self, queue: str, tasks: Sequence[NewTask]) -> list[str]:
        with self._changed:
            q, now = self._queue(queue), self.now()
            ids = []
            for task in tasks:
                entry = _Entry(f"{next(self._ids):012x}", task.body)
                self._put(q, task.priority, entry, now + task.delay if task.delay > 0 else None)
                ids.append(entry.task_id)
            self._notify()
            return ids

    def _put(self, q: _Queue, level: float, entry: _Entry, due: float | None) -> None:
        if due is None:
            q.ready.setdefault(level, deque()).append(entry)
            q.state[entry.task_id] = QUEUED
        else:
            heapq.heappush(q.scheduled, (due, next(self._ids), level, entry))
            q.state[entry.task_id] = SCHEDULED

    def exchange(
        self,
        queue: str,
        consumer: str,
        settlements: Sequence[Settlement],
        want: int,
        lease: float,
        idle_for: float = 0.0,
        result_ttl: float = 0.0,
        ahead: int = 0,
    ) -> tuple[list[bool], ClaimBatch]:
        with self._changed:
            q, now = self._queue(queue), self.now()
            for settlement in settlements if q.ahead else ():
                passed = settlement.passes_slot_to
                started = q.lease_of(passed.task_id, passed.token) if passed is not None else None
                if started is not None and started.ahead:
                    started.ahead = False
                    q.ahead -= 1
                    q.state[passed.task_id] = RUNNING
            applied = [self._settle_one(q, settlement, result_ttl, now) for settlement in settlements]
            if any(applied):
                self._notify()
            if want <= 0 and ahead <= 0:
                return applied, ClaimBatch([], None, q.max_concurrency is not None)
            return applied, self._claim(q, queue, consumer, want, ahead, lease, now)

    def _claim(
        self, q: _Queue, queue: str, consumer: str, limit: int, ahead: int, lease: float, now: float
    ) -> ClaimBatch:
        self._promote(q, now)
        if q.max_concurrency is not None:
            limit = min(limit, q.max_concurrency - (len(q.leases) - q.ahead))
        else:
            limit, ahead = limit + ahead, 0
        claims: list[Claim] = []
        self._take(q, queue, limit, now + lease, False, claims)
        self._take(q, queue, ahead, now + lease, True, claims)
        if not claims:
            self._seen.setdefault(consumer, self._generation)
        return ClaimBatch(claims, None if claims else self._next_due(q, now), q.max_concurrency is not None)

    def _take(self, q: _Queue, queue: str, limit: int, deadline: float, ahead: bool, claims: list[Claim]) -> None:
        """Lease up to `limit` ready tasks by priority, FIFO within one, onto `claims`."""
        if limit <= 0:
            return
        taken = 0
        for level in sorted(q.ready, reverse=True):
            entries = q.ready[level]
            while entries and taken < limit:
                entry = entries.popleft()
                token = next(self._ids)
                q.leases[entry.task_id] = _Lease(deadline, token, level, entry, ahead)
                q.state[entry.task_id] = QUEUED if ahead else RUNNING
                claims.append(Claim(queue, entry.task_id, token, entry.body, entry.failures, entry.crashes, ahead))
                taken += 1
            if not entries:
                del q.ready[level]
        q.ahead += taken if ahead else 0

    def _promote(self, q: _Queue, now: float) -> None:
        """Move due delayed tasks, due recurrent runs and expired leases to ready."""
        while q.scheduled and q.scheduled[0][0] <= now:
            _, _, level, entry = heapq.heappop(q.scheduled)
            self._put(q, level, entry, None)
        for name, record in sorted(q.recurrent.items(), key=lambda item: item[1].next_run):
            if record.next_run > now:
                continue
            if record.stop is not None and record.next_run > record.stop:
                del q.recurrent[name]
                continue
            self._put(q, TOP, _Entry(f"{next(self._ids):012x}", record.body), None)
            upcoming = next_run(record.next_run, record.interval, now)
            repeats = record.repeats - 1 if record.repeats > 0 else record.repeats
            if repeats == 0 or (record.stop is not None and upcoming > record.stop):
                del q.recurrent[name]
            else:
                q.recurrent[name] = RecurrentRecord(record.body, record.interval, repeats, record.stop, upcoming)
        expired = sorted((held.deadline, task_id) for task_id, held in q.leases.items() if held.deadline <= now)
        for _, task_id in reversed(expired):  # each to the front: the last first, so they keep their order
            held = q.release(task_id)
            held.entry.crashes += 1
            q.ready.setdefault(held.level, deque()).appendleft(held.entry)
            q.state[task_id] = QUEUED

    @staticmethod
    def _next_due(q: _Queue, now: float) -> float | None:
        times = [q.scheduled[0][0]] if q.scheduled else []
        times += [record.next_run for record in q.recurrent.values()]
        times += [held.deadline for held in q.leases.values()]
        return max(min(times) - now, 0.0) if times else None

    def wait(self, queues: Sequence[str], consumer: str, timeout: float) -> str | Claim | None:
        deadline = time.monotonic() + timeout
        with self._changed:
            seen = self._seen.pop(consumer, None)
            while seen == self._generation and time.monotonic() < deadline:
                self._changed.wait(deadline - time.monotonic())
            if seen == self._generation:  # nothing changed: a wait that follows this one blocks too
                self._seen[consumer] = seen
        return None  # every waiting consumer sees every change: there is no token to pass on

    def nudge(self, queue: str) -> None:
        with self._changed:
            self._notify()

    def interrupt(self, queues: Sequence[str], consumer: str) -> None:
        with self._changed:
            self._notify()

    def renew(self, queue: str, leases: Mapping[str, int], lease: float) -> list[str]:
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

    def _settle_one(self, q: _Queue, settlement: Settlement, result_ttl: float, now: float) -> bool:
        claim = settlement.claim
        held = q.lease_of(claim.task_id, claim.token)
        if held is None:
            return False
        q.release(claim.task_id)
        q.state.pop(claim.task_id, None)
        if settlement.kind == RETRY_KIND:
            held.entry.failures += 1
            self._put(q, held.level, held.entry, now + settlement.delay if settlement.delay > 0 else None)
        elif settlement.kind == HAND_BACK_KIND:
            q.ready.setdefault(held.level, deque()).appendleft(held.entry)
            q.state[claim.task_id] = QUEUED
        else:
            if settlement.kind == FAIL_KIND:
                q.failed[claim.task_id] = (held.level, held.entry, settlement.record)
            self._keep_outcome(q, claim.task_id, settlement.outcome, result_ttl, now)
        return True

    @staticmethod
    def _keep_outcome(q: _Queue, task_id: str, outcome: bytes, result_ttl: float, now: float) -> None:
        while q.outcomes:  # oldest first: drop the expired ones at the front
            oldest = next(iter(q.outcomes))
            if q.outcomes[oldest][0] > now:
                break
            del q.outcomes[oldest]
        if result_ttl > 0:
            q.outcomes[task_id] = (now + result_ttl, outcome)

    def status(self, queue: str, task_id: str) -> tuple[str | None, bytes | None]:
        with self._changed:
            q = self._queue(queue)
            kept = q.outcomes.get(task_id)
            outcome = kept[1] if kept and kept[0] > self.now() else None
            return q.state.get(task_id), outcome

    def counts(self, queue: str) -> Counts:
        with self._changed:
            q = self._queue(queue)
            queued = sum(len(entries) for entries in q.ready.values())
            return Counts(len(q.scheduled), queued + q.ahead, len(q.leases) - q.ahead, len(q.failed))

    def failed(self, queue: str) -> dict[str, bytes]:
        with self._changed:
            return {task_id: record for task_id, (_, _, record) in self._queue(queue).failed.items()}

    def requeue_failed(self, queue: str, task_ids: Sequence[str]) -> list[str]:
        with self._changed:
            q, requeued = self._queue(queue), []
            for task_id in task_ids:
                if task_id in q.failed:
                    level, entry, _ = q.failed.pop(task_id)
                    q.outcomes.pop(task_id, None)
                    self._put(q, level, _Entry(entry.task_id, entry.body), None)
                    requeued.append(task_id)
            self._notify()
            return requeued

    def purge_failed(self, queue: str, task_ids: Sequence[str] | None) -> int:
        with self._changed:
            q = self._queue(queue)
            doomed = list(q.failed) if task_ids is None else [i for i in task_ids if i in q.failed]
            for task_id in doomed:
                del q.failed[task_id]
            return len(doomed)

    def queues(self) -> list[str]:
        with self._changed:
            return sorted(self._queues)

    def register_worker(self, consumer: str, info: Mapping[str, str], ttl: float) -> None:
        with self._changed:
            now = self.now()
            self._workers[consumer] = (now + ttl, dict(info, heartbeat=repr(now)))

    def unregister_worker(self, consumer: str) -> None:
        with self._changed:
            self._workers.pop(consumer, None)

    def workers(self) -> list[dict[str, str]]:
        with self._changed:
            now = self.now()
            return [
                dict(info, consumer=consumer)
                for consumer, (expires, info) in sorted(self._workers.items())
                if expires > now
            ]

    def set_max_concurrency(self, queue: str, limit: int | None) -> None:
        with self._changed:
            self._queue(queue).max_concurrency = limit

    def recurrent_put(self, queue: str, name: str, record: RecurrentRecord) -> None:
        with self._changed:
            self._queue(queue).recurrent[name] = record
            self._notify()

    def recurrent_get(self, queue: str, name: str) -> RecurrentRecord | None:
        with self._changed:
            return self._queue(queue).recurrent.get(name)

    def recurrent_delete(self, queue: str, name: str) -> bool:
        with self._changed:
            return self._queue(queue).recurrent.pop(name, None) is not None

    def recurrent_names(self, queue: str) -> list[str]:
        with self._changed:
            return sorted(self._queue(queue).recurrent)

    def lock(self, name: str, lease: float) -> threading.Lock:
        return local_lock(name)


_LOCAL_LOCKS: "weakref.WeakValueDictionary[str, threading.Lock]" = weakref.WeakValueDictionary()
_LOCAL_LOCKS_GUARD = threading.Lock()


def local_lock(name: str) -> threading.Lock:
    """The one in-process lock of this name, shared while anyone holds a reference to it."""
    with _LOCAL_LOCKS_GUARD:
        found = _LOCAL_LOCKS.get(name)
        if found is None:
            found = _LOCAL_LOCKS[name] = threading.Lock()
        return found
