"""The dashboard's pages (GET only): overview, a queue, a task, failed tasks, workers, schedules.

Each handler reads the backend (sync: Starlette runs it on a worker thread), then renders one
template; pages with a live part re-render it alone when htmx polls them (Dashboard.render).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence
from urllib.parse import quote

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from .. import browse
from ..admin import fleet_status
from ..backends.base import Backend
from ..backends.records import QUEUED, RUNNING, SCHEDULED, Counts
from ..limits import Limit
from ..task import TaskBody
from . import charts
from .dashboard import dashboard
from .failures import FailureFilter, every_failure

SHOWN = 200  # rows of a table at most (failed tasks, running tasks)
WAITING = 50  # queued tasks shown on a queue's page
DUE_SOON = 20  # scheduled tasks shown on a queue's page
TOP_KEYS = 20  # keys shown on a queue's page, by backlog


@dataclass(frozen=True)
class QueueRow:
    """A queue on the overview: its counts, whether it is paused, and what ended in the last hour."""

    name: str
    counts: Counts
    paused: bool
    hour: charts.Bucket


@dataclass(frozen=True)
class KeyRow:
    """A task key of a queue: its tasks waiting and its limit (None: the queue's default)."""

    key: str
    queued: int
    limit: Limit | None


def overview(request: Request) -> Response:
    board = dashboard(request)
    status = fleet_status(board.backend)
    days = {name: browse.history(board.backend, name, 24 * 60) for name in status.queues}
    rows = [
        QueueRow(name, counts, name in status.paused, charts.buckets(days[name][-60:], 60)[0])
        for name, counts in status.queues.items()
    ]
    return board.render(request, "overview.html", {
        "rows": rows, "workers": len(status.workers), **_charts(days.values(), "every queue"),
    }, live=True)


def queue(request: Request) -> Response:
    board, name = dashboard(request), request.path_params["name"]
    backend = board.backend
    if name not in backend.queues():
        raise HTTPException(404, f"No queue named {name!r}.")
    return board.render(request, "queue.html", {
        "name": name, "counts": backend.counts(name), "paused": backend.paused(name),
        "cap": backend.max_concurrency(name),
        "keys": _keys(backend, name), "default_limit": _limit(backend, name, None),
        "running": browse.list_tasks(backend, name, RUNNING, SHOWN),
        "queued": browse.list_tasks(backend, name, QUEUED, WAITING),
        "due": browse.list_tasks(backend, name, SCHEDULED, DUE_SOON),
        "now": backend.now(),
        **_charts([browse.history(backend, name, 24 * 60)], name),
    }, live=True)


def task(request: Request) -> Response:
    board, task_id = dashboard(request), request.path_params["task_id"]
    wanted, known = request.query_params.get("queue") or None, board.backend.queues()
    found = None
    if wanted is None or wanted in known:
        found = browse.find_task(board.backend, task_id, [wanted] if wanted else known)
    if found is None:
        where = f"on queue {wanted!r}" if wanted else "on any queue"
        raise HTTPException(404, f"No task {task_id!r} {where}: the id is unknown, or its result has expired.")
    return board.render(request, "task.html", {"task": found, "now": board.backend.now()},
                        live=found.state in (SCHEDULED, QUEUED, RUNNING))


def search(request: Request) -> Response:
    task_id = request.query_params.get("id", "").strip()
    return RedirectResponse(f"/tasks/{quote(task_id, safe='')}" if task_id else "/", 303)


def failed(request: Request) -> Response:
    board = dashboard(request)
    chosen = FailureFilter.of(request.query_params)
    everything = every_failure(board.backend)
    matching = [failure for failure in everything if chosen.matches(failure)]
    return board.render(request, "failed.html", {
        "chosen": chosen, "failures": matching[:SHOWN], "matching": len(matching), "total": len(everything),
        "queues": sorted({failure.queue for failure in everything}),
        "functions": sorted({failure.task.ref or "" for failure in everything} - {""}),
        "exceptions": sorted({failure.exception for failure in everything}),
        "now": board.backend.now(),
    })


def workers(request: Request) -> Response:
    board = dashboard(request)
    backend = board.backend
    running: dict[str, list[browse.TaskView]] = {}
    for name in backend.queues():
        for view in browse.list_tasks(backend, name, RUNNING, SHOWN):
            running.setdefault(view.worker or "", []).append(view)
    registered = sorted(backend.workers(), key=lambda worker: (worker.get("host", ""), worker.get("pid", "")))
    known = {worker["consumer"] for worker in registered}
    return board.render(request, "workers.html", {
        "workers": registered, "running": running, "now": backend.now(),
        "running_total": sum(map(len, running.values())),
        "unclaimed": [view for consumer, views in running.items() if consumer not in known for view in views],
    }, live=True)


def schedules(request: Request) -> Response:
    board = dashboard(request)
    status = fleet_status(board.backend)
    rows = [
        (queue_name, name, record, _function(record.body))
        for queue_name, records in sorted(status.schedules.items()) for name, record in sorted(records.items())
    ]
    return board.render(request, "schedules.html", {"schedules": rows, "now": status.now})


def _charts(histories: Iterable[Sequence[browse.Minute]], label: str) -> dict[str, Any]:
    """The last hour per minute and the last day per 15 minutes, of `histories` added up."""
    day = charts.combined(histories)
    return {
        "hour_chart": charts.bar_chart(charts.buckets(day[-60:], 1), f"tasks ended per minute, last hour, {label}"),
        "day_chart": charts.bar_chart(charts.buckets(day, 15), f"tasks ended per 15 minutes, last 24 hours, {label}"),
    }


def _keys(backend: Backend, name: str) -> list[KeyRow]:
    """The keys with the most tasks waiting, then the other keys with a limit of their own."""
    backlog = dict(browse.key_backlog(backend, name, TOP_KEYS))
    limited = sorted(set(backend.limit_keys(name)) - set(backlog))
    return [KeyRow(key, backlog.get(key, 0), _limit(backend, name, key)) for key in [*backlog, *limited]]


def _limit(backend: Backend, name: str, key: str | None) -> Limit | None:
    text = backend.limit_get(name, key)
    return Limit.decode(text) if text else None


def _function(body: bytes) -> str:
    try:
        return TaskBody.decode(body).ref
    except ValueError:
        return "(cannot be decoded)"


ROUTES = [
    Route("/", overview, name="overview"),
    Route("/queues/{name:path}", queue, name="queue"),
    Route("/tasks/{task_id}", task, name="task"),
    Route("/search", search, name="search"),
    Route("/failed", failed, name="failed"),
    Route("/workers", workers, name="workers"),
    Route("/schedules", schedules, name="schedules"),
]
