"""The failed tasks of every queue, and the filter the failed page lists them by and its
"retry all" and "purge all" buttons act on: queue, function and exception type."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping
from urllib.parse import urlencode

from ..admin import FailedTask, failed_tasks
from ..backends.base import Backend


@dataclass(frozen=True)
class Failure:
    """A failed task and its queue."""

    queue: str
    task: FailedTask

    @property
    def exception(self) -> str:
        """The exception's type: its reason up to the first ':' ("ValueError: bad" -> "ValueError")."""
        return self.task.reason.partition(":")[0].strip()


@dataclass(frozen=True)
class FailureFilter:
    """Which failed tasks to show or act on; an empty field matches every task."""

    queue: str = ""
    function: str = ""
    exception: str = ""

    @classmethod
    def of(cls, fields: Mapping[str, str], prefix: str = "") -> "FailureFilter":
        """The filter in a query string, or in a form's fields named with `prefix` (the forms
        of the failed page carry it as filter_queue, filter_function, filter_exception)."""
        return cls(*(str(fields.get(prefix + name) or "").strip() for name in ("queue", "function", "exception")))

    def __bool__(self) -> bool:
        return any(asdict(self).values())

    def matches(self, failure: Failure) -> bool:
        return (
            self.queue in ("", failure.queue)
            and self.function in ("", failure.task.ref or "")
            and self.exception in ("", failure.exception)
        )

    def query(self) -> str:
        """The filter as a query string ("" when it matches everything)."""
        return urlencode({name: value for name, value in asdict(self).items() if value})


def every_failure(backend: Backend, queue: str = "") -> list[Failure]:
    """The failed tasks of `queue`, or of every queue, by queue then oldest id first."""
    names = [name for name in backend.queues() if queue in ("", name)]  # never one made up by a URL
    return [Failure(name, task) for name in names for task in failed_tasks(backend, name)]


def ids_by_queue(failures: list[Failure]) -> dict[str, list[str]]:
    """Task ids grouped by queue, the form requeue_failed and purge_failed take."""
    grouped: dict[str, list[str]] = {}
    for failure in failures:
        grouped.setdefault(failure.queue, []).append(failure.task.id)
    return grouped
