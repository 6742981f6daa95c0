"""What code running inside a task can know about where it runs: current_task()."""

from __future__ import annotations

import contextvars
from typing import TYPE_CHECKING, Callable, Iterable

from .errors import InvalidTask, NoCurrentTask

if TYPE_CHECKING:
    from .backends.base import Backend
    from .backends.records import NewTask
    from .handler import TaskHandler
    from .task import Task

# The backend of the handler or worker running the current task (LockWrapper uses it).
current_backend: contextvars.ContextVar[Backend | None] = contextvars.ContextVar("taskutils_backend", default=None)


class TaskContext:
    """The task this thread runs: its id, queue, key and attempt (1 for the first), whether it
    was asked to stop, and a producer on the same broker and queue."""

    def __init__(
        self, task_id: str, queue: str, key: str | None, attempt: int, backend: Backend,
        producer: Callable[[str], TaskHandler],
    ):
        self.id, self.queue, self.key, self.attempt = task_id, queue, key, attempt
        self._backend, self._producer = backend, producer
        self.cancel_seen = False  # the task asked `cancelled` and was told True
        self.follow_ups: list[NewTask] = []  # enqueue_on_success

    def __repr__(self) -> str:
        return f"TaskContext({self.id!r}, queue={self.queue!r}, key={self.key!r}, attempt={self.attempt})"

    @property
    def cancelled(self) -> bool:
        """True once ref.cancel() was called for this task while it runs (one broker call)."""
        if self._backend.cancel_requested(self.queue, self.id):
            self.cancel_seen = True
        return self.cancel_seen

    @property
    def handler(self) -> TaskHandler:
        """A producer (no threads of its own) on this task's broker and queue, sharing the
        worker's connections: enqueue follow-up tasks with it."""
        return self._producer(self.queue)

    def enqueue_on_success(self, tasks: Iterable[Task]) -> None:
        """Enqueue `tasks` on this task's queue when this task ends done, in the same atomic step
        that records its outcome (and its round trip: no call to the broker now). If the task
        raises, is throttled or retried, or its worker dies, none of them is enqueued; a retried
        attempt makes its own. Each is checked and encoded now: a bad task raises here."""
        tasks = list(tasks)
        for task in tasks:
            queue = getattr(task, "queue", None)
            if queue is not None and queue != self.queue:
                raise InvalidTask(
                    f"enqueue_on_success enqueues on this task's queue {self.queue!r}, not {queue!r}: "
                    "use current_task().handler.enqueue_tasks for other queues"
                )
        self.follow_ups += self.handler.new_tasks(tasks)


_current: contextvars.ContextVar[TaskContext | None] = contextvars.ContextVar("taskutils_task", default=None)


def current_task() -> TaskContext:
    """The task running on this thread; NoCurrentTask outside a task."""
    context = _current.get()
    if context is None:
        raise NoCurrentTask("current_task() is only available inside a task run by a worker or a handler's threads")
    return context


def cancel_seen() -> bool:
    """Whether the task running on this thread was told it is cancelled (the metrics' outcome)."""
    context = _current.get()
    return context is not None and context.cancel_seen


def running(context: TaskContext) -> contextvars.Token[TaskContext | None]:
    """Make `context` the current task of this thread; returns the token for running_token_reset."""
    return _current.set(context)


def running_token_reset(token: contextvars.Token[TaskContext | None]) -> None:
    """The task of `running` ended: no current task again."""
    _current.reset(token)
