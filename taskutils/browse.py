"""Reading tasks for people: a queue's tasks by state, one task by id, and per-minute history.

What `taskutils tasks`, `taskutils task ID` and the web dashboard show. Every read goes to the
backend, so any number of readers can run and a restart loses nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .backends.base import Backend
from .backends.records import (
    CANCELLED,
    DONE,
    FAILED,
    QUEUED,
    RUNNING,
    SCHEDULED,
    StoredTask,
)
from .task import TaskBody, unpack

STATES = (SCHEDULED, QUEUED, RUNNING, FAILED)  # the states a task can be listed in
HISTORY_SECONDS = 24 * 3600  # how long per-minute counts are kept


@dataclass(frozen=True)
class TaskView:
    """One task as people see it. `ref`, `args` and `kwargs` are None when its body cannot be
    decoded (`error` then says why). `worker` and `started_at` are known for running tasks:
    `started_at` once the worker's heartbeat has reported it (within a third of the visibility
    timeout). `result` is the return value of a done task; `error` the traceback of a failed one."""

    id: str
    queue: str
    state: str  # scheduled, queued, running, failed, done or cancelled
    ref: str | None = None
    args: list[Any] | None = None
    kwargs: dict[str, Any] | None = None
    priority: int = 0
    key: str | None = None
    failures: int = 0
    crashes: int = 0
    due: float | None = None  # a scheduled task's due time (epoch seconds)
    worker: str | None = None
    started_at: float | None = None
    enqueued_at: float | None = None
    result: Any = None
    error: str | None = None


@dataclass(frozen=True)
class Minute:
    """Tasks of one queue that ended in one minute (starting at `start`, epoch seconds)."""

    start: float
    done: int = 0
    failed: int = 0
    retried: int = 0


def list_tasks(backend: Backend, queue: str, state: str | None = None, limit: int = 50) -> list[TaskView]:
    """Up to `limit` tasks of `queue` in `state` (every listable state when None): running
    first, then queued in the order they will start, then scheduled by due time, then failed."""
    if state is not None and state not in STATES:
        raise ValueError(f"state must be one of {', '.join(STATES)}, got {state!r}")
    views: list[TaskView] = []
    for wanted in (RUNNING, QUEUED, SCHEDULED, FAILED) if state is None else (state,):
        if len(views) >= limit:
            break
        stored = backend.tasks(queue, wanted, limit - len(views))
        views += [_view(queue, task, _starts(backend) if wanted == RUNNING else {}) for task in stored]
    return views


def find_task(backend: Backend, task_id: str, queues: Sequence[str] | None = None) -> TaskView | None:
    """The task with this id on the first of `queues` (every queue when None) that knows it."""
    for queue in queues or backend.queues():
        stored = backend.task(queue, task_id)
        if stored is not None:
            return _view(queue, stored, _starts(backend) if stored.state == RUNNING else {})
        _, outcome = backend.status(queue, task_id)
        if outcome is not None:
            kind, value, error = unpack(outcome) if outcome else (DONE, None, None)
            return TaskView(task_id, queue, kind if kind in (DONE, FAILED, CANCELLED) else DONE, result=value, error=error)
    return None


def history(backend: Backend, queue: str, minutes: int = 60) -> list[Minute]:
    """Per-minute counts of the last `minutes` minutes (at most a day), oldest first, one entry a
    minute (zeros where nothing ended)."""
    minutes = max(1, min(int(minutes), HISTORY_SECONDS // 60))
    now_minute = int(backend.now() // 60)
    counts = backend.history(queue, now_minute - minutes + 1)
    return [Minute(float(m * 60), *counts.get(m, (0, 0, 0))) for m in range(now_minute - minutes + 1, now_minute + 1)]


def key_backlog(backend: Backend, queue: str, limit: int = 20) -> list[tuple[str, int]]:
    """The `limit` task keys of `queue` with the most ready tasks, and how many, most first (on
    Redis, among the first 10,000 keys found)."""
    return backend.key_backlog(queue, limit)


def oldest_queued(backend: Backend, queue: str, sample: int = 100) -> float | None:
    """Seconds the oldest of the first `sample` queued tasks (in dispatch order) has waited
    since it was enqueued (the producer's clock); None when none of them has an enqueue time."""
    times = [task.enqueued_at for task in list_tasks(backend, queue, QUEUED, sample) if task.enqueued_at is not None]
    return max(backend.now() - min(times), 0.0) if times else None


def _starts(backend: Backend) -> dict[str, tuple[str, float]]:
    """task id -> (worker, start time) of the running tasks the live workers reported."""
    starts: dict[str, tuple[str, float]] = {}
    for worker in backend.workers(count_running=False):
        for task_id, started in _pairs(worker.get("started", "")):
            starts[task_id] = (worker["consumer"], started)
    return starts


def _pairs(text: str) -> list[tuple[str, float]]:
    """"<id>@<epoch seconds>,..." as a worker registers its running tasks."""
    pairs = []
    for item in filter(None, text.split(",")):
        task_id, _, started = item.partition("@")
        try:
            pairs.append((task_id, float(started)))
        except ValueError:
            continue
    return pairs


def _view(queue: str, task: StoredTask, starts: dict[str, tuple[str, float]]) -> TaskView:
    worker, started = starts.get(task.task_id, (task.worker, None))
    error = task.error
    try:
        body = TaskBody.decode(task.body)
        ref, args, kwargs, enqueued = body.ref, body.args, body.kwargs, body.enqueued_at
    except ValueError as exc:
        ref = args = kwargs = enqueued = None
        error = error or f"the task's body cannot be decoded: {exc}"
    return TaskView(
        task.task_id, queue, task.state, ref, args, kwargs, task.priority, task.key, task.failures, task.crashes,
        task.due, worker, started, enqueued, None, error,
    )
