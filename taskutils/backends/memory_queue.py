"""The state of one queue of the embedded backend (memory.py): its tasks, leases and outcomes."""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field

from .records import QUEUED, SCHEDULED, RecurrentRecord

@dataclass
class Entry:
    """A task as the embedded backend keeps it."""

    task_id: str
    body: bytes
    failures: int = 0
    crashes: int = 0


@dataclass
class Lease:
    """A running task's lease: until when, under which token, and what to put back."""

    deadline: float
    token: str
    level: float
    entry: Entry


@dataclass
class QueueState:
    """Everything the embedded backend keeps of one queue."""

    ready: dict[float, deque[Entry]] = field(default_factory=dict)
    scheduled: list[tuple[float, int, float, Entry]] = field(default_factory=list)
    state: dict[str, str] = field(default_factory=dict)
    leases: dict[str, Lease] = field(default_factory=dict)
    outcomes: dict[str, tuple[float, bytes]] = field(default_factory=dict)
    failed: dict[str, tuple[float, Entry, bytes]] = field(default_factory=dict)
    recurrent: dict[str, RecurrentRecord] = field(default_factory=dict)
    max_concurrency: int | None = None

    def lease_of(self, task_id: str, token: str) -> Lease | None:
        """The lease of `task_id` if `token` still holds it."""
        held = self.leases.get(task_id)
        return held if held is not None and held.token == token else None

    def put(self, level: float, entry: Entry, due: float | None, order: int, front: bool = False) -> None:
        """Make a task ready (at the back of its level, or the front), or schedule it for `due`."""
        if due is not None:
            heapq.heappush(self.scheduled, (due, order, level, entry))
            self.state[entry.task_id] = SCHEDULED
            return
        ready = self.ready.setdefault(level, deque())
        ready.appendleft(entry) if front else ready.append(entry)
        self.state[entry.task_id] = QUEUED
