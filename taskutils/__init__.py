"""taskutils: run Python functions as tasks, in one process or across a fleet over Redis."""

from .errors import (
    BackendUnavailable, BrokerError, InvalidRedisURL, InvalidTask, NoCurrentTask, PayloadError, TaskCancelled, TaskFailed, TaskNotFound,
    TaskutilsError, Throttled,
)
from .context import TaskContext, current_task
from .handler import TaskHandler, TaskRef
from .limits import Limit
from .lock import LockLost, LockWrapper
from .recurrent import Recurrent
from .task import Task

__all__ = [
    "BackendUnavailable",
    "BrokerError",
    "InvalidRedisURL",
    "InvalidTask",
    "Limit",
    "LockLost",
    "LockWrapper",
    "NoCurrentTask",
    "PayloadError",
    "Recurrent",
    "Task",
    "TaskCancelled",
    "TaskContext",
    "TaskFailed",
    "TaskHandler",
    "TaskNotFound",
    "TaskRef",
    "TaskutilsError",
    "Throttled",
    "current_task",
]
