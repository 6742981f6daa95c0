"""Operating a queue: cancelling tasks, the failed store (list, requeue, purge) and the fleet's status."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from .backends.base import Backend
from .backends.records import CANCELLED, Counts, RecurrentRecord
from .task import pack, unpack


@dataclass(frozen=True)
class FailedTask:
    """A task failed for good: why, where and after how many attempts."""

    id: str
    ref: str | None
    error: str
    failures: int
    crashes: int
    failed_at: float | None
    worker: str | None

    @classmethod
    def from_record(cls, task_id: str, record: bytes) -> "FailedTask":
        try:
            fields: Any = unpack(record) if record else {}
        except Exception:
            fields = {}
        if not isinstance(fields, dict):
            fields = {}
        return cls(
            task_id,
            fields.get("ref"),
            fields.get("error") or "(no failure record)",
            int(fields.get("failures") or 0),
            int(fields.get("crashes") or 0),
            fields.get("failed_at"),
            fields.get("worker"),
        )

    @property
    def reason(self) -> str:
        """The last line of the error: the exception and its message."""
        lines = [line for line in self.error.strip().splitlines() if line.strip()]
        return lines[-1] if lines else ""


def cancel(backend: Backend, queue: str, task_id: str, result_ttl: float) -> bool:
    """Cancel a scheduled or queued task (True), or tell a running one (False); see TaskRef.cancel."""
    return backend.cancel(queue, task_id, pack([CANCELLED, None, None]), result_ttl)


def failed_tasks(backend: Backend, queue: str) -> list[FailedTask]:
    """The failed store of `queue`, oldest id first."""
    return [FailedTask.from_record(task_id, record) for task_id, record in sorted(backend.failed(queue).items())]


def requeue_failed(backend: Backend, queue: str, task_ids: Sequence[str] | None = None) -> list[str]:
    """Queue failed tasks again with fresh attempts (all when `task_ids` is None); returns their ids."""
    ids = sorted(backend.failed(queue)) if task_ids is None else list(task_ids)
    requeued: list[str] = []
    for start in range(0, len(ids), 1000):
        requeued += backend.requeue_failed(queue, ids[start : start + 1000])
    return requeued


def purge_failed(backend: Backend, queue: str, task_ids: Sequence[str] | None = None) -> int:
    """Delete failed tasks for good (all when `task_ids` is None); returns how many."""
    return backend.purge_failed(queue, task_ids)


@dataclass(frozen=True)
class FleetStatus:
    """Per-queue counts and recurrent schedules, and the live workers, as one snapshot."""

    queues: dict[str, Counts]
    workers: list[dict[str, str]]
    now: float
    schedules: dict[str, dict[str, RecurrentRecord]] = field(default_factory=dict)
    paused: frozenset[str] = frozenset()  # queues paused across the fleet


def fleet_status(backend: Backend, queues: Sequence[str] | None = None) -> FleetStatus:
    """Counts of scheduled, queued, running and failed tasks per queue, their schedules, and the
    live workers."""
    names = list(queues) if queues else backend.queues()
    schedules = {}
    for name in names:
        records = {schedule: backend.recurrent_get(name, schedule) for schedule in backend.recurrent_names(name)}
        schedules[name] = {schedule: record for schedule, record in records.items() if record is not None}
    paused = frozenset(name for name in names if backend.paused(name))
    return FleetStatus({name: backend.counts(name) for name in names}, backend.workers(), backend.now(), schedules, paused)
