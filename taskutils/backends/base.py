"""What a backend offers, in four parts: the hot path, inspection and administration, schedules,
and the limits of task keys.

Each method is one atomic step and speaks bytes and records (records.py). Rules (when to retry,
what a failure record says) live in the worker and the handler; a backend stores and moves tasks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable, Mapping, Protocol, Sequence

from .records import Counts, Exchange, ExchangeReply, NewTask, RecurrentRecord, StoredTask


class Broker(ABC):
    """The hot path: what producers and workers call for every task."""

    @abstractmethod
    def enqueue(self, queue: str, tasks: Sequence[NewTask]) -> list[str]:
        """Store tasks atomically, wake waiting consumers, and return their ids: a task whose
        unique value another task holds is not stored, and its id is that task's."""

    @abstractmethod
    def exchange(self, request: Exchange) -> ExchangeReply:
        """Settle finished claims (enqueueing the follow-up tasks of those done, or refusing
        both: ExchangeReply.unsettled), then claim more: by priority, FIFO within one, within the
        queue's concurrency cap. Claiming first makes due delayed tasks and recurrent runs ready
        and puts back the tasks of expired leases."""

    def send_exchange(self, request: Exchange) -> Callable[[], ExchangeReply]:
        """`exchange`, sent now; the returned function waits for its reply, so that a worker can
        send the next exchange while this one is served. Read replies on the sending thread,
        in the order sent. Here it runs at once."""
        reply = self.exchange(request)
        return lambda: reply

    @abstractmethod
    def wait(self, queues: Sequence[str], consumer: str, timeout: float) -> str | None:
        """Block until new work may be ready on one of `queues`, `interrupt(consumer)` is called,
        or `timeout` passes. Returns the queue the wake-up was for, if it was for one.
        A consumer that is not waiting takes nothing: work is claimed only by `exchange`."""

    @abstractmethod
    def interrupt(self, queues: Sequence[str], consumer: str) -> None:
        """End the current (or the next) `wait` of `consumer` at once."""

    @abstractmethod
    def renew(self, queue: str, leases: Mapping[str, str], lease: float) -> list[str]:
        """Extend the leases of task id -> token by `lease` seconds; return the ids whose lease is lost."""

    @abstractmethod
    def rest(self, queues: Sequence[str], consumer: str) -> None:
        """`consumer` stops waiting for work (it pauses or stops): new work wakes others instead."""


class Inspection(ABC):
    """Reading a queue's state, the failed store, and the fleet's workers."""

    @abstractmethod
    def status(self, queue: str, task_id: str) -> tuple[str | None, bytes | None]:
        """The stored state of a task (scheduled, queued, running) and its outcome, if any."""

    @abstractmethod
    def cancel(self, queue: str, task_id: str, outcome: bytes, result_ttl: float) -> bool:
        """End a scheduled or queued task with `outcome` (kept `result_ttl` seconds) and return
        True; for a running task, mark it for `cancel_requested` and return False; else False."""

    @abstractmethod
    def cancel_requested(self, queue: str, task_id: str) -> bool:
        """True if `cancel` was called for this task while it runs."""

    @abstractmethod
    def counts(self, queue: str) -> Counts:
        """How many tasks of `queue` are in each state."""

    @abstractmethod
    def failed(self, queue: str) -> dict[str, bytes]:
        """The failed store: task id -> failure record."""

    @abstractmethod
    def requeue_failed(self, queue: str, task_ids: Sequence[str]) -> list[str]:
        """Queue failed tasks again with fresh attempts; returns the ids that were failed."""

    @abstractmethod
    def purge_failed(self, queue: str, task_ids: Sequence[str] | None) -> int:
        """Delete failed tasks (all when `task_ids` is None); returns how many were deleted."""

    @abstractmethod
    def queues(self) -> list[str]:
        """Names of the queues that hold or held tasks."""

    @abstractmethod
    def set_max_concurrency(self, queue: str, limit: int | None) -> None:
        """Store the fleet-wide cap of running tasks for `queue` (None removes it)."""

    @abstractmethod
    def max_concurrency(self, queue: str) -> int | None:
        """The fleet-wide cap of running tasks of `queue`, or None."""

    @abstractmethod
    def set_paused(self, queue: str, paused: bool) -> bool:
        """Pause `queue` across the fleet (its claims take nothing; running tasks finish), or
        resume it and wake its waiting consumers; True if that changed its state."""

    @abstractmethod
    def paused(self, queue: str) -> bool:
        """Whether `queue` is paused across the fleet."""

    @abstractmethod
    def register_worker(self, consumer: str, info: Mapping[str, str], ttl: float) -> None:
        """Record a live worker for `ttl` seconds, stamped with the backend's clock as "heartbeat"."""

    @abstractmethod
    def unregister_worker(self, consumer: str) -> None:
        """Forget a worker that stopped."""

    @abstractmethod
    def workers(self, count_running: bool = True) -> list[dict[str, str]]:
        """The live workers' records, each with its "consumer" and "heartbeat" (backend time),
        and, if `count_running`, "running": its running tasks counted now from the leases (else
        as of its last heartbeat)."""

    @abstractmethod
    def tasks(self, queue: str, state: str, limit: int) -> list[StoredTask]:
        """Up to `limit` tasks in `state` (scheduled by due time, queued in about the order they
        start, running, failed); tasks cancelled while they waited are left out."""

    @abstractmethod
    def task(self, queue: str, task_id: str) -> StoredTask | None:
        """One scheduled, queued, running or failed task; None if it is none of those."""

    @abstractmethod
    def key_backlog(self, queue: str, limit: int) -> list[tuple[str, int]]:
        """The `limit` task keys with the most ready tasks, with their counts, most first."""

    @abstractmethod
    def purge(self, queue: str) -> int:
        """Drop every scheduled and queued task of `queue` for good (no outcome kept; unique
        values let go as by cancel); running and failed tasks stay. Returns how many went."""

    @abstractmethod
    def history(self, queue: str, since_minute: int) -> dict[int, tuple[int, int, int]]:
        """Tasks done, failed and retried per minute (epoch seconds // 60) from `since_minute`,
        as the workers reported them with their exchanges (Exchange.tally); kept a day."""

    def warnings(self) -> list[str]:
        """Problems with the broker's set-up that risk losing tasks (checked at start-up)."""
        return []


class Schedules(ABC):
    """Named recurrent schedules of a queue."""

    @abstractmethod
    def recurrent_put(self, queue: str, name: str, record: RecurrentRecord) -> bool:
        """Create or replace a named schedule; False if an identical one was already stored
        (then it is left as it is, with its own next run)."""

    @abstractmethod
    def recurrent_get(self, queue: str, name: str) -> RecurrentRecord | None:
        """A named schedule, or None."""

    @abstractmethod
    def recurrent_delete(self, queue: str, name: str) -> bool:
        """Remove a named schedule; False if there was none."""

    @abstractmethod
    def recurrent_names(self, queue: str) -> list[str]:
        """Names of the schedules of `queue`."""

    def sweep_unique(self, queue: str) -> int:
        """Drop unique values whose hold after their task ended has passed; returns how many.
        Workers call this on every heartbeat (the embedded backend drops them as they pass)."""
        return 0

    def refill_cron(self, queue: str) -> int:
        """Compute more run times for cron schedules short of them (Redis stores them ahead: its
        scripts cannot compute them); returns how many schedules got more. Workers call this on
        every heartbeat."""
        return 0


class KeyLimits(ABC):
    """The limits of a queue's task keys (text as Limit.encode makes it; key None: the default)."""

    @abstractmethod
    def limit_set(self, queue: str, key: str | None, limit: str | None) -> bool:
        """Store (or, with None, remove) a key's limit, effective from its next start; True if it
        had one before."""

    @abstractmethod
    def limit_get(self, queue: str, key: str | None) -> str | None:
        """A key's own limit (key None: the default), or None."""

    @abstractmethod
    def limit_keys(self, queue: str) -> list[str]:
        """The keys that have their own limit."""


class SharedLock(Protocol):
    """A lock every user of one backend shares. A leased lock expires unless renewed."""

    leased: bool

    def acquire(self) -> None:
        """Block until held."""

    def renew(self) -> bool:
        """Extend the lease; False if it was lost (another holder may have taken the lock)."""

    def release(self) -> bool:
        """Let go; False if the lease had been lost meanwhile."""


class Backend(Broker, Inspection, Schedules, KeyLimits):
    """A whole backend: the embedded one (memory.py) or Redis (redis.py)."""

    in_process: bool = False  # True: only this process can reach its queues

    @abstractmethod
    def now(self) -> float:
        """The backend's clock, in epoch seconds (the Redis server's clock for Redis)."""

    @abstractmethod
    def lock(self, name: str, lease: float) -> SharedLock:
        """A lock shared by everything using this backend, held under a lease of `lease` seconds."""

    def ping(self, timeout: float) -> bool:
        """Whether the broker answers at once (within `timeout` seconds, asked once, no retries)."""
        return True

    def close(self) -> None:
        """Release connections."""
