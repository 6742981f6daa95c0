"""The state of one queue of the embedded backend (memory.py): its tasks, leases and outcomes."""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Sequence

from ..limits import Limit
from .memory_lanes import Lanes
from .memory_unique import UniqueValues
from .records import QUEUED, SCHEDULED, RecurrentRecord

HISTORY_MINUTES = 25 * 60  # per-minute counts are kept this long (as Redis keeps its hourly keys)


@dataclass
class Entry:
    """A task as the embedded backend keeps it."""

    task_id: str
    body: bytes
    failures: int = 0
    crashes: int = 0
    key: str | None = None


@dataclass
class Lease:
    """A running task's lease: until when, under which token, and what to put back."""

    deadline: float
    token: str
    level: float
    entry: Entry
    holds_slot: bool = False  # one of its key's slots (the key had a limit when it started)
    consumer: str = ""  # the worker that claimed it


@dataclass
class QueueState:
    """Everything the embedded backend keeps of one queue."""

    lanes: Lanes = field(init=False)
    scheduled: list[tuple[float, int, float, Entry]] = field(default_factory=list)
    state: dict[str, str] = field(default_factory=dict)
    leases: dict[str, Lease] = field(default_factory=dict)
    outcomes: dict[str, tuple[float, bytes]] = field(default_factory=dict)
    failed: dict[str, tuple[float, Entry, bytes]] = field(default_factory=dict)
    recurrent: dict[str, RecurrentRecord] = field(default_factory=dict)
    max_concurrency: int | None = None
    paused: bool = False  # across the fleet (set_paused): claims take nothing
    limits: dict[str, Limit] = field(default_factory=dict)
    default_limit: Limit | None = None
    unique: UniqueValues = field(default_factory=UniqueValues)
    cancel_run: set[str] = field(default_factory=set)  # running tasks asked to stop
    history: dict[int, list[int]] = field(default_factory=dict)  # minute -> [done, failed, retried], a day

    def __post_init__(self) -> None:
        self.lanes = Lanes(self.limit_of)

    @property
    def capped(self) -> bool:
        """A concurrency cap or key limits: claims should start when made (no prefetch)."""
        return self.max_concurrency is not None or bool(self.limits) or self.default_limit is not None

    def limit_of(self, key: str) -> Limit | None:
        """The limit of a task key: its own, else the default; the unkeyed lane has none."""
        if not key:
            return None
        return self.limits.get(key, self.default_limit)

    def lease_of(self, task_id: str, token: str) -> Lease | None:
        """The lease of `task_id` if `token` still holds it."""
        held = self.leases.get(task_id)
        return held if held is not None and held.token == token else None

    def add_tally(self, tally: Sequence[tuple[int, int, int, int]], now: float) -> None:
        """Add a worker's per-minute counts (Exchange.tally); forget minutes over a day old."""
        for minute, *counts in tally:
            kept = self.history.setdefault(minute, [0, 0, 0])
            for kind, count in enumerate(counts):
                kept[kind] += count
        oldest = int(now // 60) - HISTORY_MINUTES
        for minute in [minute for minute in self.history if minute < oldest] if tally else ():
            del self.history[minute]

    def put(self, level: float, entry: Entry, due: float | None, order: int, now: float, front: bool = False) -> None:
        """Make a task ready in its lane (at the back of its level, or the front), or schedule it for `due`."""
        if due is not None:
            heapq.heappush(self.scheduled, (due, order, level, entry))
            self.state[entry.task_id] = SCHEDULED
            return
        self.lanes.push(level, entry, now, front)
        self.state[entry.task_id] = QUEUED

    def remove_waiting(self, task_id: str) -> bool:
        """Take a scheduled or queued task out; False if it is neither."""
        state = self.state.get(task_id)
        if state == SCHEDULED:
            self.scheduled = [item for item in self.scheduled if item[3].task_id != task_id]
            heapq.heapify(self.scheduled)
        elif state != QUEUED or not self.lanes.remove(task_id):
            return False
        del self.state[task_id]
        return True
