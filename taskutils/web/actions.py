"""The dashboard's actions. Every state change is a POST to one of these routes: the guard's
middleware has refused it already if the dashboard is read-only or the Origin is foreign;
`action` checks its CSRF token, runs it, and redirects back (POST/redirect/GET) with a message.
"""

from __future__ import annotations

from typing import Awaitable, Callable
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from ..admin import cancel, purge_failed, requeue_failed
from ..backends.records import RUNNING
from .dashboard import Dashboard, dashboard
from .failures import FailureFilter, every_failure, ids_by_queue

FILTER = "filter_"  # the prefix of the failure filter's fields in a form
Outcome = tuple[str, str]  # the page to go back to, and what to tell there
Handler = Callable[[Dashboard, FormData], Outcome]


def action(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """A POST endpoint running `handler` once the request's CSRF token is checked."""

    async def endpoint(request: Request) -> Response:
        board = dashboard(request)
        form = await request.form()
        given = str(form.get("csrf") or request.headers.get("x-csrf-token", ""))
        if not board.guard.csrf_ok(given):
            return PlainTextResponse("refused: the form's CSRF token is missing or stale; reload the page", 403)
        back, message = await run_in_threadpool(handler, board, form)
        return RedirectResponse(board.guard.flash(back, message), 303)

    return endpoint


def field(form: FormData, name: str) -> str:
    """A required form field (400 without it)."""
    value = form.get(name)
    if not isinstance(value, str) or not value:
        raise HTTPException(400, f"the form has no {name!r}")
    return value


def known_queue(board: Dashboard, form: FormData) -> str:
    """The form's queue, if the backend knows it (404 otherwise)."""
    name = field(form, "queue")
    if name not in board.backend.queues():
        raise HTTPException(404, f"No queue named {name!r}.")
    return name


def queue_page(name: str) -> str:
    return "/queues/" + quote(name, safe="")


def pause(board: Dashboard, form: FormData) -> Outcome:
    name = known_queue(board, form)
    changed = board.backend.set_paused(name, True)
    return queue_page(name), f"Paused {name}: workers start none of its tasks." if changed else f"{name} was paused already."


def resume(board: Dashboard, form: FormData) -> Outcome:
    name = known_queue(board, form)
    changed = board.backend.set_paused(name, False)
    return queue_page(name), f"Resumed {name}." if changed else f"{name} was not paused."


def cancel_task(board: Dashboard, form: FormData) -> Outcome:
    name, task_id = known_queue(board, form), field(form, "id")
    back = f"/tasks/{quote(task_id, safe='')}?queue={quote(name, safe='')}"
    if cancel(board.backend, name, task_id, board.result_ttl):
        return back, f"Cancelled task {task_id}: it will not run."
    if board.backend.status(name, task_id)[0] == RUNNING:
        return back, f"Task {task_id} is running: it was told to stop (current_task().cancelled); its outcome will be recorded."
    return back, f"Task {task_id} was not cancelled: it is no longer scheduled or queued."


def failed_page(form: FormData) -> str:
    """The failed page with the filter the form was sent under."""
    chosen = FailureFilter.of(form, FILTER)
    return f"/failed?{chosen.query()}" if chosen else "/failed"


def retry(board: Dashboard, form: FormData) -> Outcome:
    name, task_id = known_queue(board, form), field(form, "id")
    done = requeue_failed(board.backend, name, [task_id])
    return failed_page(form), f"Retrying task {task_id}." if done else f"Task {task_id} is no longer in the failed store."


def purge(board: Dashboard, form: FormData) -> Outcome:
    name, task_id = known_queue(board, form), field(form, "id")
    done = purge_failed(board.backend, name, [task_id])
    return failed_page(form), f"Purged task {task_id}." if done else f"Task {task_id} is no longer in the failed store."


def retry_matching(board: Dashboard, form: FormData) -> Outcome:
    chosen = FailureFilter.of(form, FILTER)
    matching = [failure for failure in every_failure(board.backend, chosen.queue) if chosen.matches(failure)]
    done = sum(len(requeue_failed(board.backend, name, ids)) for name, ids in ids_by_queue(matching).items())
    return failed_page(form), f"Retrying {done} failed task(s)."


def purge_matching(board: Dashboard, form: FormData) -> Outcome:
    chosen = FailureFilter.of(form, FILTER)
    matching = [failure for failure in every_failure(board.backend, chosen.queue) if chosen.matches(failure)]
    done = sum(purge_failed(board.backend, name, ids) for name, ids in ids_by_queue(matching).items())
    return failed_page(form), f"Purged {done} failed task(s)."


def remove_schedule(board: Dashboard, form: FormData) -> Outcome:
    name, schedule = known_queue(board, form), field(form, "name")
    removed = board.backend.recurrent_delete(name, schedule)
    return "/schedules", f"Removed schedule {schedule} of {name}." if removed else f"No schedule {schedule} on {name}."


ROUTES = [
    Route(f"/actions/{name}", action(handler), methods=["POST"], name=name)
    for name, handler in {
        "pause": pause, "resume": resume, "cancel": cancel_task, "retry": retry, "purge": purge,
        "retry-matching": retry_matching, "purge-matching": purge_matching, "remove-schedule": remove_schedule,
    }.items()
]
