"""Recurrent: a task run every `interval` seconds, and the schedule arithmetic (pure, no I/O)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Union

from .errors import InvalidTask
from .task import Task

When = Union[float, int, datetime, None]


def epoch(when: When) -> float | None:
    """Epoch seconds for a number or a datetime (naive datetimes are local time)."""
    if when is None:
        return None
    if isinstance(when, datetime):
        return when.timestamp()
    if isinstance(when, (int, float)):
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
        if not isinstance(self.interval, (int, float)) or not self.interval > 0:
            raise InvalidTask(f"interval must be > 0 seconds, got {self.interval!r}")
        if self.repeats is not None and (not isinstance(self.repeats, int) or self.repeats < 1):
            raise InvalidTask(f"repeats must be an int >= 1 or None, got {self.repeats!r}")
        start, stop = epoch(self.start), epoch(self.stop)
        if start is not None and stop is not None and stop < start:
            raise InvalidTask("stop comes before start")


def next_run(scheduled: float, interval: float, now: float) -> float:
    """The first run after `now` on the grid scheduled + k*interval: no drift, missed runs collapse."""
    if now < scheduled:
        return scheduled
    return scheduled + interval * (math.floor((now - scheduled) / interval) + 1)
