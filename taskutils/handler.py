"""TaskHandler: the facade users hold: enqueue, task references, recurrent_tasks, join, close."""

from __future__ import annotations

import logging
import time
from collections.abc import MutableMapping
from typing import Any, Iterable, Iterator, Sequence

from .admin import FailedTask, cancel, failed_tasks, purge_failed, requeue_failed
from .backends import Backend, backend_for
from .backends.records import CANCELLED, FAILED, NewTask
from .config import Settings
from .errors import InvalidTask, PayloadError, TaskCancelled, TaskFailed, TaskNotFound
from .limits import Limits
from .recurrent import Recurrent, record_of, recurrent_of
from .task import Task, allow_all, module_allowed, unpack
from .worker import Worker

log = logging.getLogger("taskutils.handler")


class TaskRef:
    """A handle on an enqueued task: its id, status and result; cancel it."""

    def __init__(self, backend: Backend, queue: str, task_id: str, result_ttl: float = 3600.0):
        self.backend, self.queue, self.id = backend, queue, task_id
        self._result_ttl = result_ttl

    def __repr__(self) -> str:
        return f"TaskRef({self.id!r}, queue={self.queue!r})"

    def cancel(self) -> bool:
        """Cancel a scheduled or queued task: it will not run, its status is 'cancelled' and
        result() raises TaskCancelled; True. A running task is only told (current_task().cancelled)
        and its outcome is still recorded: False. A finished or unknown task: False."""
        return cancel(self.backend, self.queue, self.id, self._result_ttl)

    def status(self) -> str:
        """'scheduled', 'queued', 'running', 'done', 'failed' or 'cancelled'; TaskNotFound once its
        record expired."""
        state, outcome = self.backend.status(self.queue, self.id)
        if state is not None:
            return state
        if outcome is not None:
            return unpack(outcome)[0] if outcome else "done"
        raise TaskNotFound(f"no record of task {self.id} on queue {self.queue!r}: unknown id or result expired")

    def result(self, timeout: float | None = None) -> Any:
        """The function's return value; TaskFailed if it failed for good, TimeoutError if not finished in time."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.001
        while True:
            state, outcome = self.backend.status(self.queue, self.id)
            if outcome == b"":  # done, returning None
                return None
            if outcome is not None:
                kind, value, error = unpack(outcome)
                if kind == FAILED:
                    raise TaskFailed(self.id, error)
                if kind == CANCELLED:
                    raise TaskCancelled(f"task {self.id} was cancelled before it ran")
                return value
            if state is None:
                raise TaskNotFound(f"no result for task {self.id} on queue {self.queue!r}: unknown id, or result_ttl passed")
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"task {self.id} did not finish within {timeout}s (status: {state})")
            time.sleep(pause if deadline is None else min(pause, max(deadline - time.monotonic(), 0)))
            pause = min(pause * 2, 0.05)


class RecurrentTasks(MutableMapping[str, Recurrent]):
    """name -> Recurrent, stored in the backend so every handler and worker sees one schedule."""

    def __init__(self, backend: Backend, queue: str, admit: Any):
        self._backend, self._queue, self._admit = backend, queue, admit

    def __setitem__(self, name: str, recurrent: Recurrent) -> None:
        """Store a schedule; setting the same definition again leaves the stored one as it is."""
        if not isinstance(name, str) or not name:
            raise InvalidTask(f"a recurrent task needs a non-empty string name, got {name!r}")
        if not isinstance(recurrent, Recurrent):
            raise InvalidTask(f"recurrent_tasks[{name!r}] must be a Recurrent, got {recurrent!r}")
        if recurrent.task.key is not None or recurrent.task.unique is not None:
            raise InvalidTask(
                f"recurrent_tasks[{name!r}]: a recurrent task cannot have a key or a unique value yet; "
                "enqueue keyed or unique tasks from it instead"
            )
        self._admit(recurrent.task)
        record = record_of(recurrent, self._backend.now())
        if record.stop is not None and record.next_run > record.stop:
            raise InvalidTask(f"recurrent_tasks[{name!r}]: stop has already passed; it would never run")
        self._backend.recurrent_put(self._queue, name, record)

    def __getitem__(self, name: str) -> Recurrent:
        record = self._backend.recurrent_get(self._queue, name)
        if record is None:
            raise KeyError(name)
        return recurrent_of(record)

    def __delitem__(self, name: str) -> None:
        if not self._backend.recurrent_delete(self._queue, name):
            raise KeyError(name)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._backend.recurrent_get(self._queue, name) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self._backend.recurrent_names(self._queue))

    def __len__(self) -> int:
        return len(self._backend.recurrent_names(self._queue))


class TaskHandler:
    """Enqueues tasks and, with max_num_threads > 0, runs them on threads of this process."""

    def __init__(
        self,
        redis_url: str | None = None,
        max_num_threads: int = 3,
        sleep_seconds: float = 2,
        *,
        queue: str = "default",
        max_concurrency: int | None = None,
        visibility_timeout: float = 30,
        result_ttl: float | None = None,
        broker_timeout: float | None = None,
        max_payload: int | None = None,
        allow: Iterable[str] = (),
        backend: Backend | None = None,
    ):
        self.settings = Settings.build(
            redis_url=redis_url,
            threads=max_num_threads,
            sleep_seconds=float(sleep_seconds),
            queues=(queue,),
            max_concurrency=max_concurrency,
            visibility_timeout=float(visibility_timeout),
            result_ttl=result_ttl,
            broker_timeout=broker_timeout,
            max_payload=max_payload,
            allow=tuple(allow),
        )
        self.queue = queue
        self.backend = backend if backend is not None else backend_for(self.settings.redis_url, self.settings.broker_timeout)
        self._owns_backend = backend is None
        if backend is None:  # a backend passed in was checked by whoever made it
            for warning in self.backend.warnings():
                log.warning(warning)
        self._allowed_modules = {"__main__", *self.settings.allow}
        self._policy = allow_all if self.backend.in_process else self._allowed
        if not self.backend.in_process and self.settings.threads and not self.settings.allow:
            log.warning(
                "this handler's threads run only functions of __main__ and of tasks it enqueues itself; "
                "tasks of other modules on queue %r fail as not allowed: pass allow=[modules] to run them", queue
            )
        if max_concurrency is not None:
            self.backend.set_max_concurrency(queue, max_concurrency)
        self.recurrent_tasks = RecurrentTasks(self.backend, queue, self._admit)
        self.limits = Limits(self.backend, queue)
        self._worker: Worker | None = None
        if self.settings.threads > 0:
            self._worker = Worker(self.backend, self.settings, self._policy)
            self._worker.start()

    def _allowed(self, module: str) -> bool:
        return module_allowed(module, self._allowed_modules)

    def _admit(self, task: Task) -> None:
        """Allow this handler's own threads to run the function of a task it enqueues."""
        self._allowed_modules.add(task.ref.partition(":")[0])

    def enqueue_task(self, task: Task) -> TaskRef:
        """Enqueue one task (one round trip); returns its TaskRef."""
        queue = task.queue or self.queue
        (task_id,) = self.backend.enqueue(queue, [self._new_task(0, task)])
        return TaskRef(self.backend, queue, task_id, self.settings.result_ttl)

    def enqueue_tasks(self, tasks: Iterable[Task]) -> list[TaskRef]:
        """Enqueue many tasks in one round trip per queue; all are encoded before any is stored."""
        tasks = list(tasks)
        by_queue: dict[str, list[tuple[int, NewTask]]] = {}
        for index, task in enumerate(tasks):
            by_queue.setdefault(task.queue or self.queue, []).append((index, self._new_task(index, task)))
        refs: list[TaskRef | None] = [None] * len(tasks)
        for name, items in by_queue.items():
            ids = self.backend.enqueue(name, [new for _, new in items])
            for (index, _), task_id in zip(items, ids):
                refs[index] = TaskRef(self.backend, name, task_id, self.settings.result_ttl)
        return refs  # type: ignore[return-value]

    def new_tasks(self, tasks: Sequence[Task]) -> list[NewTask]:
        """Tasks checked and encoded for the backend, as enqueue_tasks stores them (InvalidTask,
        PayloadError for a bad one); used by current_task().enqueue_on_success."""
        return [self._new_task(index, task) for index, task in enumerate(tasks)]

    def _new_task(self, index: int, task: Task) -> NewTask:
        """A task checked and encoded for the backend; its module may now run on this handler's threads."""
        if not isinstance(task, Task):
            raise InvalidTask(f"enqueue_task needs a Task, got {task!r}")
        body = task.encode(time.time())
        if len(body) > self.settings.max_payload:
            raise PayloadError(
                f"task {index} ({task.ref}) encodes to {len(body)} bytes, over max_payload="
                f"{self.settings.max_payload}; pass a reference (a URL, a key) instead of the data"
            )
        self._admit(task)
        return NewTask(body, task.priority, float(task.delay or 0.0), task.key, task.unique, task.unique_for)

    def task(self, task_id: str, queue: str | None = None) -> TaskRef:
        """A TaskRef for an id enqueued earlier (by any producer)."""
        return TaskRef(self.backend, queue or self.queue, task_id, self.settings.result_ttl)

    def failed_tasks(self) -> list[FailedTask]:
        """The failed store of this handler's queue."""
        return failed_tasks(self.backend, self.queue)

    def requeue_failed(self, task_ids: Sequence[str] | None = None) -> list[str]:
        """Queue failed tasks again with fresh attempts (all when None); returns their ids."""
        return requeue_failed(self.backend, self.queue, task_ids)

    def purge_failed(self, task_ids: Sequence[str] | None = None) -> int:
        """Delete failed tasks for good (all when None); returns how many."""
        return purge_failed(self.backend, self.queue, task_ids)

    def pause(self) -> None:
        """This handler's threads stop taking tasks."""
        if self._worker:
            self._worker.pause()

    def resume(self) -> None:
        """This handler's threads take tasks again."""
        if self._worker:
            self._worker.resume()

    def pause_queue(self) -> bool:
        """Every worker of the fleet stops starting tasks of this handler's queue (within about a
        second); running ones finish, claims not started go back, enqueues go on. True if it was
        not paused already."""
        return self.backend.set_paused(self.queue, True)

    def resume_queue(self) -> bool:
        """The fleet takes tasks of this handler's queue again; True if it was paused."""
        return self.backend.set_paused(self.queue, False)

    def join(self, timeout: float | None = None, queues: Sequence[str] | None = None) -> bool:
        """Wait until the handler's queue (or each of `queues`) has nothing ready, delayed or
        running, fleet-wide; False on timeout. Several queues are looked at one after another,
        twice in a row, so that a task of one queue enqueueing into another just looked at (a
        follow-up) is not missed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        names = [self.queue] if queues is None else list(queues)
        if isinstance(queues, str) or not all(isinstance(name, str) and name for name in names):
            raise InvalidTask(f"join(queues=...) needs a list of queue names, got {queues!r}")
        pause, clean = 0.002, 0
        while clean < (1 if len(names) == 1 else 2):
            if not any(self.backend.counts(name).pending for name in names):
                clean += 1
                continue
            clean = 0
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
        return True

    def close(self, timeout: float | None = None) -> bool:
        """Stop taking tasks and let running ones finish (up to `timeout`); True if they all did.
        Tasks still running after `timeout` keep their leases until they end (Python cannot stop
        a thread), so no other worker runs them meanwhile; they are settled when they end."""
        finished = self._worker.stop(timeout, hand_back_running=False) if self._worker else True
        if self._owns_backend and finished:
            self.backend.close()
        return finished

    def __enter__(self) -> "TaskHandler":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

