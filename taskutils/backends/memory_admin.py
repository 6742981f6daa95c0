"""The embedded backend's inspection, administration, schedules and key limits (memory.py
holds its hot path), on the same state and lock."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Callable, Mapping, Sequence

from ..limits import Limit
from .memory_queue import Entry, QueueState
from .records import RUNNING, Counts, RecurrentRecord


class MemoryAdmin:
    """Everything of MemoryBackend but the hot path."""

    _changed: threading.Condition
    _queues: dict[str, QueueState]
    _workers: dict[str, tuple[float, dict[str, str]]]
    _queue: Callable[[str], QueueState]
    _notify: Callable[[], None]
    now: Callable[[], float]
    _keep_outcome: Callable[..., None]

    def status(self, queue: str, task_id: str) -> tuple[str | None, bytes | None]:
        with self._changed:
            q = self._queue(queue)
            kept = q.outcomes.get(task_id)
            return q.state.get(task_id), kept[1] if kept and kept[0] > self.now() else None

    def cancel(self, queue: str, task_id: str, outcome: bytes, result_ttl: float) -> bool:
        with self._changed:
            q, now = self._queue(queue), self.now()
            if q.state.get(task_id) == RUNNING:
                q.cancel_run.add(task_id)
                return False
            if not q.remove_waiting(task_id):
                return False
            q.unique.release(task_id, now)
            self._keep_outcome(q, task_id, outcome, result_ttl, now)
            self._notify()
            return True

    def cancel_requested(self, queue: str, task_id: str) -> bool:
        with self._changed:
            return task_id in self._queue(queue).cancel_run

    def counts(self, queue: str) -> Counts:
        with self._changed:
            q = self._queue(queue)
            return Counts(len(q.scheduled), q.lanes.queued(), len(q.leases), len(q.failed))

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
                    q.put(level, Entry(entry.task_id, entry.body, key=entry.key), None, 0, self.now())
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

    def set_max_concurrency(self, queue: str, limit: int | None) -> None:
        with self._changed:
            self._queue(queue).max_concurrency = limit
            self._notify()

    def max_concurrency(self, queue: str) -> int | None:
        with self._changed:
            return self._queue(queue).max_concurrency

    def set_paused(self, queue: str, paused: bool) -> bool:
        with self._changed:
            q = self._queue(queue)
            changed, q.paused = q.paused != paused, paused
            self._notify()
            return changed

    def paused(self, queue: str) -> bool:
        with self._changed:
            return self._queue(queue).paused

    def register_worker(self, consumer: str, info: Mapping[str, str], ttl: float) -> None:
        with self._changed:
            now = self.now()
            self._workers[consumer] = (now + ttl, dict(info, heartbeat=repr(now)))

    def unregister_worker(self, consumer: str) -> None:
        with self._changed:
            self._workers.pop(consumer, None)

    def workers(self, count_running: bool = True) -> list[dict[str, str]]:
        with self._changed:
            now = self.now()
            running = Counter(lease.consumer for q in self._queues.values() for lease in q.leases.values())
            return [
                dict(info, consumer=consumer, **({"running": str(running[consumer])} if count_running else {}))
                for consumer, (expires, info) in sorted(self._workers.items())
                if expires > now
            ]

    def recurrent_put(self, queue: str, name: str, record: RecurrentRecord) -> bool:
        with self._changed:
            stored = self._queue(queue).recurrent.get(name)
            if stored is not None and record.definition and stored.definition == record.definition:
                return False
            self._queue(queue).recurrent[name] = record
            self._notify()
            return True

    def recurrent_get(self, queue: str, name: str) -> RecurrentRecord | None:
        with self._changed:
            return self._queue(queue).recurrent.get(name)

    def recurrent_delete(self, queue: str, name: str) -> bool:
        with self._changed:
            return self._queue(queue).recurrent.pop(name, None) is not None

    def recurrent_names(self, queue: str) -> list[str]:
        with self._changed:
            return sorted(self._queue(queue).recurrent)

    def limit_set(self, queue: str, key: str | None, limit: str | None) -> bool:
        with self._changed:
            q = self._queue(queue)
            had = (q.default_limit if key is None else q.limits.get(key)) is not None
            decoded = None if limit is None else Limit.decode(limit)
            if key is None:
                q.default_limit = decoded
            else:
                if decoded is None:
                    q.limits.pop(key, None)
                else:
                    q.limits[key] = decoded
                q.lanes.replace(key, self.now())
            self._notify()
            return had

    def limit_get(self, queue: str, key: str | None) -> str | None:
        with self._changed:
            q = self._queue(queue)
            limit = q.default_limit if key is None else q.limits.get(key)
            return None if limit is None else limit.encode()

    def limit_keys(self, queue: str) -> list[str]:
        with self._changed:
            return sorted(self._queue(queue).limits)
