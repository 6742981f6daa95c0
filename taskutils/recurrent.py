"""Recurrent: a task run every `interval` seconds, its stored form, and the schedule arithmetic (pure, no I/O)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Union

from .backends.records import RecurrentRecord
from .errors import InvalidTask
from .task import Task, TaskBody, pack

When = Union[float, int, datetime, None]


def epoch(when: When) -> float | None:
    """Epoch seconds for a number or a datetime (naive datetimes are local time)."""
    if when is None:
        return None
    if isinstance(when, datetime):
        return when.timestamp()
    if isinstance(when, (int, float)) and not isinstance(when, bool) and math.isfinite(when):
        return float(when)
    raise InvalidTask(f"expected epoch seconds or a datetime, got {when!r}")


@dataclass(frozen=True)
class Recurrent:
    """Run `task` every `interval` seconds, `repeats` times in all (None: forever), from `start` until `stop`."""

    task: Task
    interval: float
    repeats: int | None = None
    start: When = None
    stop: When = None

    def __post_init__(self) -> None:
        if not isinstance(self.task, Task):
            raise InvalidTask(f"Recurrent needs a Task, got {self.task!r}")
        if not isinstance(self.interval, (int, float)) or not 0 < self.interval < math.inf:
            raise InvalidTask(f"interval must be a finite number of seconds > 0, got {self.interval!r}")
        if self.repeats is not None and (not isinstance(self.repeats, int) or self.repeats < 1):
            raise InvalidTask(f"repeats must be an int >= 1 or None, got {self.repeats!r}")
        start, stop = epoch(self.start), epoch(self.stop)
        if start is not None and stop is not None and stop < start:
            raise InvalidTask("stop comes before start")


def record_of(recurrent: Recurrent, now: float) -> RecurrentRecord:
    """The stored form of a schedule set at `now` (the backend's clock)."""
    start, stop = epoch(recurrent.start), epoch(recurrent.stop)
    body = recurrent.task.encode()
    repeats = -1 if recurrent.repeats is None else recurrent.repeats
    definition = pack([body, float(recurrent.interval), repeats, start, stop])
    return RecurrentRecord(body, float(recurrent.interval), repeats, stop, now if start is None else start, definition)


def recurrent_of(record: RecurrentRecord) -> Recurrent:
    """A stored schedule as a Recurrent, its start being its next run."""
    body = TaskBody.decode(record.body)
    task = Task(
        body.ref, body.args, body.kwargs, 0, body.repeats_on_failure,
        retry_delay=body.retry_delay, retry_backoff=body.retry_backoff,
    )
    repeats = None if record.repeats < 0 else record.repeats
    return Recurrent(task, record.interval, repeats, start=record.next_run, stop=record.stop)


def next_run(scheduled: float, interval: float, now: float) -> float:
    """The first run after `now` on the grid scheduled + k*interval: no drift, missed runs collapse."""
    if now < scheduled:
        return scheduled
    return scheduled + interval * (math.floor((now - scheduled) / interval) + 1)
