"""Unique values of one queue of the embedded backend, as lua/_unique.lua keeps them on Redis."""

from __future__ import annotations

import heapq


class UniqueValues:
    """value -> the task holding it: while the task is pending, and `unique_for` seconds after."""

    def __init__(self) -> None:
        self._holder: dict[str, str] = {}  # value -> task id
        self._held_by: dict[str, tuple[str, float]] = {}  # pending task id -> (value, unique_for)
        self._until: dict[str, float] = {}  # value -> when its hold ends, after its task ended
        self._expiring: list[tuple[float, str]] = []

    def holder(self, value: str, now: float) -> str | None:
        """The id of the task holding `value`, or None (a hold whose time passed is dropped)."""
        task_id = self._holder.get(value)
        if task_id is None:
            return None
        ends = self._until.get(value)
        if (ends is not None and ends > now) or (ends is None and task_id in self._held_by):
            return task_id
        del self._holder[value]
        self._until.pop(value, None)
        return None

    def hold(self, value: str, seconds: float, task_id: str) -> None:
        self._holder[value] = task_id
        self._held_by[task_id] = (value, seconds)
        self._until.pop(value, None)

    def release(self, task_id: str, now: float) -> None:
        """A task ended: its value goes, or stays held for its unique_for seconds."""
        value, seconds = self._held_by.pop(task_id, (None, 0.0))
        if value is None or self._holder.get(value) != task_id:
            return
        if seconds > 0:
            self._until[value] = now + seconds
            heapq.heappush(self._expiring, (now + seconds, value))
        else:
            del self._holder[value]

    def expire(self, now: float) -> None:
        """Drop the holds whose time passed."""
        while self._expiring and self._expiring[0][0] <= now:
            ends, value = heapq.heappop(self._expiring)
            if self._until.get(value) == ends:
                del self._until[value]
                del self._holder[value]
