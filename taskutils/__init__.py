"""taskutils: run Python functions as tasks, in one process or across a fleet over Redis."""

from .errors import (
    BackendUnavailable, BrokerError, InvalidTask, PayloadError, TaskFailed, TaskNotFound, TaskutilsError, Throttled,
)
from .handler import TaskHandler, TaskRef
from .limits import Limit
from .lock import LockLost, LockWrapper
from .recurrent import Recurrent
from .task import Task

__all__ = [
    "BackendUnavailable",
    "BrokerError",
    "InvalidTask",
    "Limit",
    "LockLost",
    "LockWrapper",
    "PayloadError",
    "Recurrent",
    "Task",
    "TaskFailed",
    "TaskHandler",
    "TaskNotFound",
    "TaskRef",
    "TaskutilsError",
    "Throttled",
]
