"""Recurrent: a task run every `interval` seconds or on a cron schedule, its stored form, and the
schedule arithmetic (pure, no I/O). Cron expressions are parsed and stepped by croniter."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Union
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from .backends.records import RecurrentRecord
from .errors import InvalidTask
from .task import Task, TaskBody, pack

When = Union[float, int, datetime, None]
MISFIRES = ("coalesce", "skip", "catch_up")
MAX_CATCH_UP = 1000  # the most missed runs catch_up may run
CRON_AHEAD = 1000  # cron run times stored ahead with a schedule (Redis's scripts cannot compute them)
CRON_LOW = 100  # fewer times left than this: workers compute more (worker/cron_refill.py)
MISFIRE_GRACE = 30.0  # a run found this many seconds after its time or sooner is on time, not missed


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
    """Run `task` every `interval` seconds, or at the times of a 5-field `cron` expression in
    `timezone`; `repeats` times in all (None: forever), from `start` until `stop`. After
    downtime, `misfire` says what runs: "coalesce" (one run for all missed times), "skip" (none:
    wait for the next time) or "catch_up" (each missed time, the latest `max_catch_up`)."""

    task: Task
    interval: float | None = None
    repeats: int | None = None
    start: When = None
    stop: When = None
    cron: str | None = field(default=None, kw_only=True)
    timezone: str = field(default="UTC", kw_only=True)
    misfire: str = field(default="coalesce", kw_only=True)
    max_catch_up: int = field(default=100, kw_only=True)

    def __post_init__(self) -> None:
        if not isinstance(self.task, Task):
            raise InvalidTask(f"Recurrent needs a Task, got {self.task!r}")
        if (self.interval is None) == (self.cron is None):
            raise InvalidTask("Recurrent needs either an interval in seconds or a cron expression, not both")
        if self.interval is not None and (
            not isinstance(self.interval, (int, float)) or isinstance(self.interval, bool)
            or not 0 < self.interval < math.inf
        ):
            raise InvalidTask(f"interval must be a finite number of seconds > 0, got {self.interval!r}")
        if self.cron is not None:
            check_cron(self.cron, self.timezone)
        if self.repeats is not None and (not isinstance(self.repeats, int) or self.repeats < 1):
            raise InvalidTask(f"repeats must be an int >= 1 or None, got {self.repeats!r}")
        if self.misfire not in MISFIRES:
            raise InvalidTask(f"misfire must be one of {', '.join(MISFIRES)}, got {self.misfire!r}")
        if not isinstance(self.max_catch_up, int) or isinstance(self.max_catch_up, bool) or not (
            1 <= self.max_catch_up <= MAX_CATCH_UP
        ):
            raise InvalidTask(f"max_catch_up must be an int from 1 to {MAX_CATCH_UP}, got {self.max_catch_up!r}")
        start, stop = epoch(self.start), epoch(self.stop)
        if start is not None and stop is not None and stop < start:
            raise InvalidTask("stop comes before start")


def check_cron(cron: object, zone: object) -> None:
    """InvalidTask unless `cron` is a valid 5-field expression and `zone` a known time zone."""
    if not isinstance(cron, str) or len(cron.split()) != 5 or not croniter.is_valid(cron):
        raise InvalidTask(f"cron must be a 5-field cron expression such as '*/5 * * * *', got {cron!r}")
    _zone(zone)


def _zone(name: object) -> ZoneInfo:
    if not isinstance(name, str) or not name:
        raise InvalidTask(f"timezone must be a time zone name such as 'UTC' or 'Europe/Paris', got {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidTask(f"unknown timezone {name!r}: use an IANA name such as 'UTC' or 'Europe/Paris'") from None


def cron_after(cron: str, zone: str, after: float, count: int, stop: float | None = None) -> list[float]:
    """The next `count` times of `cron` in `zone` strictly after `after` (up to `stop`)."""
    steps = croniter(cron, datetime.fromtimestamp(after, _zone(zone)))
    times = []
    while len(times) < count:
        moment = steps.get_next(float)
        if stop is not None and moment > stop:
            break
        times.append(moment)
    return times


def cron_missed(cron: str, zone: str, first: float, now: float, keep: int) -> list[float]:
    """The latest `keep` times of `cron` from `first` (a time of it) up to `now`, oldest first."""
    steps = croniter(cron, datetime.fromtimestamp(now + 0.001, _zone(zone)))  # a time equal to now counts
    times: list[float] = []
    while len(times) < keep:
        moment = steps.get_prev(float)
        if moment < first:
            break
        times.append(moment)
    return sorted(time for time in times if time >= first)[-keep:]


def more_cron_times(cron: str, zone: str, through: float, stop: float | None, most: int, now: float) -> list[float]:
    """The run times to store after `through` (the last stored): the latest `most` missed ones if
    the stored times ran out before `now` (the misfire rule decides which run), then CRON_AHEAD more."""
    missed = cron_missed(cron, zone, through + 1e-6, now, most) if through < now else []
    return missed + cron_after(cron, zone, max(through, now), CRON_AHEAD, stop)


def record_of(recurrent: Recurrent, now: float) -> RecurrentRecord:
    """The stored form of a schedule set at `now` (the backend's clock)."""
    start, stop = epoch(recurrent.start), epoch(recurrent.stop)
    body = recurrent.task.encode()
    repeats = -1 if recurrent.repeats is None else recurrent.repeats
    definition = pack([body, recurrent.interval, repeats, start, stop, recurrent.cron, recurrent.timezone,
                       recurrent.misfire, recurrent.max_catch_up])
    first = now if start is None else start
    common = {"misfire": recurrent.misfire, "max_catch_up": recurrent.max_catch_up}
    if recurrent.cron is None:
        assert recurrent.interval is not None
        return RecurrentRecord(body, float(recurrent.interval), repeats, stop, first, definition, **common)
    times = tuple(cron_after(recurrent.cron, recurrent.timezone, first - 1e-6, CRON_AHEAD, stop))
    if not times:
        raise InvalidTask(f"cron {recurrent.cron!r} has no time between start and stop: it would never run")
    return RecurrentRecord(body, 0.0, repeats, stop, times[0], definition, recurrent.cron, recurrent.timezone,
                           times=times, **common)


def recurrent_of(record: RecurrentRecord) -> Recurrent:
    """A stored schedule as a Recurrent, its start being its next run."""
    body = TaskBody.decode(record.body)
    task = Task(
        body.ref, body.args, body.kwargs, 0, body.repeats_on_failure,
        retry_delay=body.retry_delay, retry_backoff=body.retry_backoff,
    )
    repeats = None if record.repeats < 0 else record.repeats
    options = {"misfire": record.misfire, "max_catch_up": record.max_catch_up}
    if record.cron:
        return Recurrent(task, None, repeats, start=record.next_run, stop=record.stop, cron=record.cron,
                         timezone=record.timezone, **options)
    return Recurrent(task, record.interval, repeats, start=record.next_run, stop=record.stop, **options)


def next_run(scheduled: float, interval: float, now: float) -> float:
    """The first run after `now` on the grid scheduled + k*interval: no drift, missed runs collapse."""
    if now < scheduled:
        return scheduled
    return scheduled + interval * (math.floor((now - scheduled) / interval) + 1)


def due_runs(times: list[float], misfire: str, max_catch_up: int, now: float) -> int:
    """How many runs to start now for the due `times` (oldest first, at least one): the misfire rule."""
    if misfire == "catch_up":
        return min(len(times), max_catch_up)
    if misfire == "skip":
        return 1 if now - times[-1] <= MISFIRE_GRACE else 0
    return 1


def fire(record: RecurrentRecord, now: float) -> tuple[int, RecurrentRecord | None]:
    """A due schedule at `now`: how many runs start, and the schedule after them (None: it ended).
    The embedded backend's rule; lua/_claim.lua applies the same on Redis."""
    if record.cron:
        due = cron_missed(record.cron, record.timezone, record.next_run, now, max(record.max_catch_up, 1))
        due = due or [record.next_run]
        upcoming = cron_after(record.cron, record.timezone, now, 1)
        upcoming_run = upcoming[0] if upcoming else math.inf
    else:
        missed = math.floor((now - record.next_run) / record.interval) + 1
        last = record.next_run + (missed - 1) * record.interval
        due = [last - record.interval * k for k in range(min(missed, record.max_catch_up) - 1, -1, -1)]
        upcoming_run = next_run(record.next_run, record.interval, now)
    if record.stop is not None:
        due = [time for time in due if time <= record.stop]
    runs = due_runs(due, record.misfire, record.max_catch_up, now) if due else 0
    if record.repeats > 0:
        runs = min(runs, record.repeats)
    repeats = record.repeats - runs if record.repeats > 0 else record.repeats
    if repeats == 0 or (record.stop is not None and upcoming_run > record.stop) or upcoming_run == math.inf:
        return runs, None
    return runs, replace(record, repeats=repeats, next_run=upcoming_run, last_run=now if runs else record.last_run)

