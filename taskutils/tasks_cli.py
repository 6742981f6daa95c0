"""The task commands of `taskutils`: list tasks, show one, purge a queue, serve queue metrics."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from .backends.base import Backend
from .browse import STATES, TaskView, find_task, list_tasks
from .exporter import QueueCollector
from .http_endpoints import serve
from .metrics import MISSING, available
from .worker.probes import metrics_route

PREVIEW = 60  # characters of arguments a task list shows


def add_commands(commands: Any) -> None:
    tasks = commands.add_parser("tasks", help="list tasks: id, function, arguments, priority, key, attempts, worker")
    tasks.add_argument("--queue", action="append", help="only this queue (repeatable); default: every queue")
    tasks.add_argument("--state", choices=STATES, help="only tasks in this state; default: all but done")
    tasks.add_argument("--limit", type=int, default=50, help="most tasks a queue shows (default 50)")
    task = commands.add_parser("task", help="show one task by id: state, function, arguments, attempts, result or traceback")
    task.add_argument("id")
    task.add_argument("--queue", action="append", help="look only in this queue; default: every queue")
    purge = commands.add_parser("purge", help="drop every scheduled and queued task of a queue (running and failed stay)")
    purge.add_argument("queue")
    purge.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    exporter = commands.add_parser("exporter", help="serve queue-wide Prometheus gauges, read from Redis at each scrape")
    exporter.add_argument("--bind", default="127.0.0.1:9465", help="[HOST:]PORT (default 127.0.0.1:9465)")


def run(backend: Backend, args: argparse.Namespace) -> int:
    if args.command == "tasks":
        return print_tasks(backend, args)
    if args.command == "task":
        return print_task(backend, args.id, args.queue)
    if args.command == "purge":
        return purge(backend, args.queue, args.yes)
    return run_exporter(backend, args.bind)


def print_tasks(backend: Backend, args: argparse.Namespace) -> int:
    if args.limit < 1:
        print("taskutils tasks: --limit must be at least 1", file=sys.stderr)
        return 2
    known = backend.queues()
    unknown = [name for name in args.queue or [] if name not in known]
    if unknown:
        print(f"taskutils tasks: no queue named {', '.join(map(repr, unknown))} (queues: {', '.join(known) or 'none'})",
              file=sys.stderr)
        return 1
    now = backend.now()
    print(f"{'id':<20} {'queue':<12} {'state':<9} {'function':<28} {'prio':>5} {'key':<14} {'fails':>5}  arguments / worker")
    for queue in args.queue or known:
        for task in list_tasks(backend, queue, args.state, args.limit):
            print(f"{task.id:<20} {queue:<12} {task.state:<9} {task.ref or '?':<28} {task.priority:>5} "
                  f"{task.key or '-':<14} {task.failures:>5}  {arguments(task, PREVIEW)}{running(task, now)}")
    return 0


def print_task(backend: Backend, task_id: str, queues: list[str] | None) -> int:
    task = find_task(backend, task_id, queues)
    if task is None:
        where = ", ".join(map(repr, queues)) if queues else "any queue"
        print(f"taskutils task: no task {task_id!r} on {where} (unknown id, or its result expired)", file=sys.stderr)
        return 1
    now = backend.now()
    rows = [("id", task.id), ("queue", task.queue), ("state", task.state + running(task, now))]
    if task.ref is not None:
        rows += [("function", task.ref), ("arguments", arguments(task, 2000)), ("priority", str(task.priority))]
        rows += [("key", task.key or "-"), ("attempts", str(task.failures)), ("crashes", str(task.crashes))]
    if task.enqueued_at is not None:
        rows.append(("enqueued", f"{now - task.enqueued_at:.1f}s ago"))
    if task.due is not None:
        rows.append(("due", f"in {task.due - now:.1f}s"))
    if task.state == "done":
        rows.append(("result", repr(task.result)[:2000]))
    for name, value in rows:
        print(f"{name:<10} {value}")
    if task.error:
        print("error\n    " + task.error.rstrip().replace("\n", "\n    "))
    return 0


def purge(backend: Backend, queue: str, yes: bool) -> int:
    if queue not in backend.queues():
        print(f"taskutils purge: no queue named {queue!r}", file=sys.stderr)
        return 1
    counts = backend.counts(queue)
    waiting = counts.scheduled + counts.queued
    if not yes:
        if not sys.stdin.isatty():
            print("taskutils purge: not a terminal to confirm on: add --yes", file=sys.stderr)
            return 2
        answer = input(f"drop {waiting} waiting task(s) of {queue!r} for good? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing purged")
            return 1
    print(f"{queue}: purged {backend.purge(queue)} task(s); {counts.running} running and {counts.failed} failed stay")
    return 0


def run_exporter(backend: Backend, bind: str) -> int:
    if not available():
        print(f"taskutils exporter: {MISSING}", file=sys.stderr)
        return 2
    import prometheus_client

    registry = prometheus_client.CollectorRegistry()
    registry.register(QueueCollector(backend))
    try:
        serve(bind, {"/metrics": metrics_route(registry=registry)})
    except (OSError, ValueError) as exc:
        print(f"taskutils exporter: cannot listen on {bind}: {exc}", file=sys.stderr)
        return 1
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0


def arguments(task: TaskView, width: int) -> str:
    """A task's arguments as Python would write the call, cut to `width` characters."""
    if task.args is None:
        return "(undecodable body)"
    parts = [repr(value) for value in task.args] + [f"{name}={value!r}" for name, value in (task.kwargs or {}).items()]
    text = "(" + ", ".join(parts) + ")"
    return text if len(text) <= width else text[: width - 1] + "…"


def running(task: TaskView, now: float) -> str:
    """", on <worker> for 12.3s" for a running task."""
    if task.state != "running":
        return ""
    took = f" for {now - task.started_at:.1f}s" if task.started_at is not None else ""
    return f", on {task.worker or '?'}{took}"
