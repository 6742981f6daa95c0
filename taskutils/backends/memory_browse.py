"""Reading the embedded backend's tasks for people (browse.py), as redis_browse.py does on Redis."""

from __future__ import annotations

import heapq
import threading
from collections import Counter
from collections.abc import Callable, Iterator

from .memory_queue import Entry, QueueState
from .records import FAILED, QUEUED, RUNNING, SCHEDULED, TOP_PRIORITY, StoredTask, failed_task



class MemoryBrowse:
    """The browsing part of MemoryBackend, on its state and lock."""

    _changed: threading.Condition
    _queue: Callable[[str], QueueState]
    _clock: Callable[[], float]

    def tasks(self, queue: str, state: str, limit: int) -> list[StoredTask]:
        with self._changed:
            found = _all(self._queue(queue), state, max(limit, 0))
            return [task for _, task in zip(range(max(limit, 0)), found)]

    def task(self, queue: str, task_id: str) -> StoredTask | None:
        with self._changed:
            q = self._queue(queue)
            for state in (RUNNING, FAILED, QUEUED, SCHEDULED):
                for task in _all(q, state):
                    if task.task_id == task_id:
                        return task
            return None

    def key_backlog(self, queue: str, limit: int) -> list[tuple[str, int]]:
        with self._changed:
            lanes = self._queue(queue).lanes.lanes
            backlog = Counter({name: lane.queued() for name, lane in lanes.items() if name and lane.queued()})
            return sorted(backlog.items(), key=lambda item: (-item[1], item[0]))[:limit]

    def purge(self, queue: str) -> int:
        with self._changed:
            q, now = self._queue(queue), self._clock()
            waiting = [entry for _, _, _, entry in q.scheduled] + q.lanes.clear(now)
            q.scheduled = []
            for entry in waiting:
                q.state.pop(entry.task_id, None)
                q.unique.release(entry.task_id, now)
            return len(waiting)

    def history(self, queue: str, since_minute: int) -> dict[int, tuple[int, int, int]]:
        with self._changed:
            kept = self._queue(queue).history
            return {minute: (d, f, r) for minute, (d, f, r) in kept.items() if minute >= since_minute}


def _stored(state: str, level: float, entry: Entry, **more: object) -> StoredTask:
    priority = TOP_PRIORITY if level == float("inf") else int(level)
    return StoredTask(entry.task_id, state, entry.body, priority, entry.key, entry.failures, entry.crashes, **more)


def _all(q: QueueState, state: str, limit: int | None = None) -> Iterator[StoredTask]:
    """Tasks of `q` in `state`, in the order Redis lists them (scheduled: the `limit` first due)."""
    if state == RUNNING:
        for lease in q.leases.values():
            yield _stored(RUNNING, lease.level, lease.entry, worker=lease.consumer)
    elif state == FAILED:
        for level, entry, record in q.failed.values():
            yield failed_task(_stored(FAILED, level, entry), record)
    elif state == SCHEDULED:
        for due, _, level, entry in heapq.nsmallest(len(q.scheduled) if limit is None else limit, q.scheduled):
            yield _stored(SCHEDULED, level, entry, due=due)
    elif state == QUEUED:
        for lane in q.lanes.lanes.values():
            for level in sorted(lane.ready, reverse=True):
                for entry in lane.ready[level]:
                    yield _stored(QUEUED, level, entry)
