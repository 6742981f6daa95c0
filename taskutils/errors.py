"""The error tree: every error taskutils raises on purpose.

    TaskutilsError
     ├── InvalidTask (also ValueError)      a Task that no worker could run
     ├── PayloadError (also TypeError)      arguments msgpack cannot carry
     ├── TaskFailed                         the task failed for good; holds the remote traceback
     ├── TaskNotFound (also KeyError)       no record of that task id (never existed or expired)
     ├── TaskCancelled                      the task was cancelled before it ran
     ├── NoCurrentTask (also LookupError)   current_task() called outside a task
     ├── InvalidRedisURL (also ValueError)  a Redis URL redis-py cannot connect by
     ├── BackendUnavailable                 the broker could not be reached
     ├── BrokerError                        the broker refused an operation (e.g. a key of the wrong type)
     └── Throttled                          raised by a task: its key (or it) waits, no attempt used

Driver errors are converted where they cross into the library, so callers catch
these and never redis-py internals.
"""

from __future__ import annotations


class TaskutilsError(Exception):
    """Root of every error raised by taskutils."""


class InvalidTask(TaskutilsError, ValueError):
    """A Task was built from something a worker could not import or run."""


class PayloadError(TaskutilsError, TypeError):
    """A task's arguments or result cannot be encoded with msgpack."""


class InvalidRedisURL(TaskutilsError, ValueError):
    """A Redis URL that redis-py cannot connect by (no scheme, another scheme, a bad port)."""


class TaskFailed(TaskutilsError):
    """The task failed for good; the message holds the remote exception and traceback."""

    def __init__(self, task_id: str, error: str):
        super().__init__(f"task {task_id} failed:\n{error}")
        self.task_id = task_id
        self.error = error


class TaskNotFound(TaskutilsError, KeyError):
    """No record of the task: the id is unknown or its result has expired."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "task not found"


class TaskCancelled(TaskutilsError):
    """The task was cancelled (ref.cancel()) before it ran."""


class NoCurrentTask(TaskutilsError, LookupError):
    """current_task() was called outside a task run by a worker or a handler's threads."""


class BackendUnavailable(TaskutilsError):
    """The broker could not be reached within the configured time."""


class BrokerError(TaskutilsError):
    """The broker answered with an error: a queue's key holds the wrong type, or a script was refused."""


class Throttled(TaskutilsError):
    """Raised by a task function: the server asked to slow down (an HTTP 429 with Retry-After).
    The task goes back to the front of its key without using an attempt, and its key starts no
    task for `retry_after` seconds (a task without a key waits that long alone)."""

    def __init__(self, retry_after: float = 30.0):
        if isinstance(retry_after, bool) or not isinstance(retry_after, (int, float)) or not 0 <= retry_after <= 366 * 24 * 3600:
            raise ValueError(f"Throttled(retry_after) must be a number of seconds from 0 to a year, got {retry_after!r}")
        super().__init__(f"throttled: retry after {retry_after:g}s")
        self.retry_after = float(retry_after)
