"""The lanes of one queue of the embedded backend: ready tasks by key, served in turns under the
keys' limits, as lua/_lanes.lua does it on Redis (its header explains the rules)."""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from ..limits import Limit

if TYPE_CHECKING:
    from .memory_queue import Entry

UNKEYED = ""  # the lane of tasks without a key


@dataclass
class Lane:
    """One key's ready tasks (level -> FIFO) and its state."""

    ready: dict[float, deque[Entry]] = field(default_factory=dict)
    running: int = 0
    tat: float = 0.0  # GCRA theoretical arrival time
    until: float = 0.0  # throttled until
    rate: float | None = None  # an adaptive limit's lowered rate
    starts: deque[float] = field(default_factory=deque)  # newest first, for burst > 1

    def queued(self) -> int:
        return sum(len(entries) for entries in self.ready.values())

    def next_start(self, limit: Limit | None) -> float | None:
        """When its next task may start, or None while at its concurrency limit."""
        if limit is not None and limit.concurrency is not None and self.running >= limit.concurrency:
            return None
        at = self.until
        if limit is not None and limit.rate is not None:
            interval = limit.per / (self.rate or limit.rate)
            at = max(at, self.tat - (limit.burst - 1) * interval)
            window = math.floor(limit.rate)
            if limit.burst > 1 and len(self.starts) >= window:
                at = max(at, self.starts[window - 1] + limit.per)
        return at

    def started(self, limit: Limit | None, count: int, now: float) -> None:
        self.running += count
        if limit is None or limit.rate is None:
            return
        self.tat = max(self.tat, now) + count * limit.per / (self.rate or limit.rate)
        if limit.burst > 1:
            self.starts.extendleft([now] * count)
            while len(self.starts) > math.floor(limit.rate):
                self.starts.pop()

    def idle_until(self, limit: Limit | None, now: float) -> float:
        """Until when an empty lane with nothing running must keep its state."""
        until = max(self.tat, self.until)
        if self.starts and limit is not None:
            until = max(until, self.starts[0] + limit.per)
        if self.rate is not None:
            until = max(until, now + 600)
        return until


class Lanes:
    """Every lane of one queue, the turns among those that may start a task, and the times of
    those that must wait."""

    def __init__(self, limit_of: Callable[[str], Limit | None]):
        self.limit_of = limit_of
        self.lanes: dict[str, Lane] = {}
        self.turns: OrderedDict[str, None] = OrderedDict()
        self.later: dict[str, float] = {}
        self._later_heap: list[tuple[float, str]] = []
        self._expiring: list[tuple[float, str]] = []  # idle lanes whose state matters until then

    def push(self, level: float, entry: Entry, now: float, front: bool = False) -> None:
        name = entry.key or UNKEYED
        lane = self.lanes.setdefault(name, Lane())
        ready = lane.ready.setdefault(level, deque())
        ready.appendleft(entry) if front else ready.append(entry)
        self.place(name, now)

    def place(self, name: str, now: float) -> None:
        """Put a lane with ready tasks where dispatch finds it, unless it is there already."""
        if name in self.turns or name in self.later:
            return
        if name == UNKEYED:
            self.turns[name] = None
            return
        at = self.lanes[name].next_start(self.limit_of(name))
        if at is None:
            return
        if at > now:
            self.later[name] = at
            heapq.heappush(self._later_heap, (at, name))
        else:
            self.turns[name] = None

    def take(self, limit: int, now: float) -> list[tuple[float, Entry, bool]]:
        """Up to `limit` ready tasks with their levels, and whether each holds a slot of its key
        (its key has a limit): a task of a lane per turn, or as many as wanted of the only lane
        in turns when it has no limit."""
        self._promote(now)
        taken: list[tuple[float, Entry, bool]] = []
        while len(taken) < limit and self.turns:
            name = next(iter(self.turns))
            lane, lane_limit = self.lanes[name], self.limit_of(name)
            allowed = limit - len(taken) if len(self.turns) == 1 and lane_limit is None else 1
            if name != UNKEYED:
                at = lane.next_start(lane_limit)
                if at is None or at > now:
                    allowed = 0
            if allowed:
                got = self._take_from(lane, allowed)
                counted = name != UNKEYED and lane_limit is not None
                if counted:
                    lane.started(lane_limit, len(got), now)
                taken += [(level, entry, counted) for level, entry in got]
            del self.turns[name]
            if lane.ready:
                self.place(name, now)
            else:
                self._idle(name, now)
        return taken

    @staticmethod
    def _take_from(lane: Lane, limit: int) -> list[tuple[float, Entry]]:
        got: list[tuple[float, Entry]] = []
        for level in sorted(lane.ready, reverse=True):
            entries = lane.ready[level]
            while entries and len(got) < limit:
                got.append((level, entries.popleft()))
            if not entries:
                del lane.ready[level]
            if len(got) >= limit:
                break
        return got

    def _promote(self, now: float) -> None:
        while self._later_heap and self._later_heap[0][0] <= now:
            at, name = heapq.heappop(self._later_heap)
            if self.later.get(name) == at:
                del self.later[name]
                self.turns.setdefault(name, None)
        while self._expiring and self._expiring[0][0] <= now:
            self._idle(heapq.heappop(self._expiring)[1], now)

    def _idle(self, name: str, now: float) -> None:
        """Forget a lane with no ready task and nothing running once its times have passed."""
        lane = self.lanes.get(name)
        if lane is None or lane.ready or lane.running:
            return
        until = 0.0 if name == UNKEYED else lane.idle_until(self.limit_of(name), now)
        if until <= now:
            del self.lanes[name]
        else:
            heapq.heappush(self._expiring, (until, name))

    def released(self, name: str, now: float) -> None:
        """A task of a keyed lane stopped running."""
        lane = self.lanes.get(name)
        if lane is None:
            return
        lane.running = max(lane.running - 1, 0)
        if lane.ready:
            self.place(name, now)
        else:
            self._idle(name, now)

    def throttled(self, name: str, seconds: float, now: float) -> None:
        lane = self.lanes.setdefault(name, Lane())
        lane.until = max(lane.until, now + seconds)
        limit = self.limit_of(name)
        if limit is not None and limit.rate is not None and limit.adaptive:
            lane.rate = max((lane.rate or limit.rate) / 2, limit.rate / 16)

    def succeeded(self, name: str) -> None:
        lane, limit = self.lanes.get(name), self.limit_of(name)
        if lane is None or lane.rate is None or limit is None or limit.rate is None or not limit.adaptive:
            return
        lane.rate += limit.rate / 32
        if lane.rate >= limit.rate:
            lane.rate = None

    def replace(self, name: str, now: float) -> None:
        """Its limit changed: place the lane again."""
        self.turns.pop(name, None)
        self.later.pop(name, None)
        lane = self.lanes.get(name)
        if lane is not None and lane.ready:
            self.place(name, now)

    def queued(self) -> int:
        return sum(lane.queued() for lane in self.lanes.values())

    def remove(self, task_id: str) -> bool:
        """Take a ready task out of its lane (a scan: cancelling is rare); False if not found."""
        for lane in self.lanes.values():
            for level, entries in lane.ready.items():
                for entry in entries:
                    if entry.task_id == task_id:
                        entries.remove(entry)
                        if not entries:
                            del lane.ready[level]
                        return True
        return False

    def clear(self, now: float) -> list[Entry]:
        """Take every ready task out of every lane (a purge); returns them."""
        taken = [entry for lane in self.lanes.values() for entries in lane.ready.values() for entry in entries]
        for name, lane in list(self.lanes.items()):
            lane.ready.clear()
            self.turns.pop(name, None)
            self.later.pop(name, None)
            self._idle(name, now)
        return taken

    def next_time(self) -> float | None:
        """The first time a lane waits for."""
        return min(self.later.values()) if self.later else None
