"""The records a backend speaks: tasks in, claims out, how each claim ends, and what inspection reads.

The records made once per task on the hot path are NamedTuples: immutable like a frozen
dataclass, and cheaper to build.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import msgpack

# Task states as stored; a task with no state and no outcome is unknown.
SCHEDULED, QUEUED, RUNNING, DONE, FAILED = "scheduled", "queued", "running", "done", "failed"
CANCELLED = "cancelled"


class NewTask(NamedTuple):
    """A task to enqueue: its encoded body, priority, delay in seconds, key (its lane; None: the
    unkeyed lane), and unique value (held while it is pending and `unique_for` seconds after)."""

    body: bytes
    priority: int = 0
    delay: float = 0.0
    key: str | None = None
    unique: str | None = None
    unique_for: float = 0.0


class Claim(NamedTuple):
    """A task leased to one worker. `token` is unique to this lease: every later transition
    of the task (settle, renew) is refused unless it carries the token that holds it now."""

    queue: str
    task_id: str
    token: str
    body: bytes
    failures: int
    crashes: int
    key: str | None = None


class Ending(enum.Enum):
    """How a claim ends; the value is its code on the wire."""

    DONE = "d"  # finished: keep the outcome
    FAILED = "f"  # failed for good: keep the outcome and the failure record
    RETRY = "r"  # a failed attempt: back to the queue after a delay, one more failure counted
    HAND_BACK = "b"  # unfinished: back to the front of its priority, nothing counted
    THROTTLE = "t"  # throttled: back without an attempt counted; its key (or it alone) waits `delay`


class Settlement(NamedTuple):
    """The end of a claim: `outcome` for DONE and FAILED, `record` for FAILED, `delay` for RETRY
    and THROTTLE. `follow_ups` (DONE only): tasks for the claim's queue, enqueued in the same
    atomic step that records the outcome, or not at all; if they cannot be enqueued (a key of the
    wrong type), the settlement is not applied either (ExchangeReply.unsettled)."""

    claim: Claim
    ending: Ending
    outcome: bytes = b""
    record: bytes = b""
    delay: float = 0.0
    follow_ups: tuple[NewTask, ...] = ()


class Exchange(NamedTuple):
    """One atomic step of a consumer on one queue: settle these claims, then claim up to `want`
    more under a lease of `lease` seconds. A consumer that asked and got nothing is registered
    as waiting for `idle_for` seconds, so that new work wakes it. Outcomes are kept
    `result_ttl` seconds. `tally` adds to the queue's per-minute history: (minute, done, failed,
    retried) per minute, counted by the worker (worker/tally.py)."""

    queue: str
    consumer: str
    settlements: Sequence[Settlement] = ()
    want: int = 0
    lease: float = 30.0
    idle_for: float = 0.0
    result_ttl: float = 0.0
    tally: Sequence[tuple[int, int, int, int]] = ()


class ExchangeReply(NamedTuple):
    """What an exchange did: per settlement True (applied), False (the lease had moved on) or
    None (unknown: sent again after its reply was lost, the first attempt most likely applied
    it); the new claims; when they are fewer than asked for (the consumer now waits for new
    work), seconds until the queue's next due time (None if nothing is due); whether the queue
    has a concurrency cap or key limits (then a worker holds no claim it cannot start at once);
    whether the queue is paused fleet-wide (known only when the exchange asked for claims); and,
    like next_due, seconds until work becomes startable (delayed tasks, recurrent runs, keys
    waiting for their rates: lease deadlines left out). `unsettled`: the settlements (indexes)
    not applied because their follow-up tasks were refused, for `unsettled_reason`; the claim
    is still held (their `applied` is False)."""

    applied: list[bool | None]
    claims: list[Claim]
    next_due: float | None = None
    capped: bool = False
    paused: bool = False
    work_due: float | None = None
    unsettled: tuple[int, ...] = ()
    unsettled_reason: str = ""


@dataclass(frozen=True)
class Counts:
    """Tasks of one queue in each state."""

    scheduled: int
    queued: int
    running: int
    failed: int

    @property
    def pending(self) -> int:
        """Tasks not yet finished: scheduled, queued or running."""
        return self.scheduled + self.queued + self.running


@dataclass(frozen=True)
class RecurrentRecord:
    """A stored recurrent schedule; repeats -1 means forever, stop None means never.
    `definition` identifies the schedule as the user gave it: setting the same definition
    again leaves the stored schedule as it is. A cron schedule has `cron` and `timezone` (its
    interval is 0) and `times`: its next run times, computed ahead (recurrent.py). `misfire`
    says what runs after downtime: "coalesce", "skip" or "catch_up" (at most `max_catch_up`)."""

    body: bytes
    interval: float
    repeats: int
    stop: float | None
    next_run: float
    definition: bytes = b""
    cron: str = ""
    timezone: str = ""
    misfire: str = "coalesce"
    max_catch_up: int = 100
    times: tuple[float, ...] = ()
    last_run: float | None = None


def split_id(task_id: str) -> tuple[str, str]:
    """(epoch, sequence number) of a task id "<epoch>-<seq>"; ("", "") if it is not one."""
    epoch, dash, seq = task_id.partition("-")
    if not (dash and epoch and seq and _hex(epoch) and _hex(seq)):
        return "", ""
    return epoch, seq


def _hex(text: str) -> bool:
    return len(text) <= 16 and all(char in "0123456789abcdef" for char in text)


TOP_PRIORITY = 2**31  # how a recurrent run's level ("max": before every priority) is shown


class StoredTask(NamedTuple):
    """A task as inspection reads it from its queue: its state (scheduled, queued, running or
    failed), encoded body, priority, key, counts; `due` for a scheduled task, `worker` (the
    consumer holding its lease, when the backend knows it) for a running one, `error` (the
    failure record's traceback) for a failed one."""

    task_id: str
    state: str
    body: bytes
    priority: int = 0
    key: str | None = None
    failures: int = 0
    crashes: int = 0
    due: float | None = None
    worker: str | None = None
    error: str | None = None


def failure_fields(record: bytes) -> dict:
    """A failure record's fields (msgpack map: error, failures, crashes, ...); {} if unreadable."""
    try:
        fields = msgpack.unpackb(record, raw=False) if record else None
    except Exception:
        return {}
    return fields if isinstance(fields, dict) else {}


def failed_task(task: StoredTask, record: bytes) -> StoredTask:
    """A failed task with its traceback and counts from its failure record."""
    fields = failure_fields(record)
    error = fields.get("error")
    counts = [fields.get(name) for name in ("failures", "crashes")]
    failures, crashes = (count if isinstance(count, int) else default for count, default in zip(counts, (task.failures, task.crashes)))
    return task._replace(error=error if isinstance(error, str) else None, failures=failures, crashes=crashes)
