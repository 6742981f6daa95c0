"""The `taskutils` command: fleet status, pause, cancel and the failed store, for operators (the
task commands are in tasks_cli.py)."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from typing import Sequence

from .admin import cancel, failed_tasks, fleet_status, purge_failed, requeue_failed
from .backends.redis import RedisBackend
from . import tasks_cli
from .browse import find_task
from .config import DEFAULT_REDIS_URL, Settings
from .errors import BackendUnavailable, BrokerError


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="taskutils", description="Inspect and operate taskutils queues on Redis.")
    parser.add_argument("--redis-url", help=f"Redis URL (TASKUTILS_REDIS_URL, default {DEFAULT_REDIS_URL})")
    commands = parser.add_subparsers(dest="command", required=True)
    status = commands.add_parser("status", help="per queue: scheduled, queued, running, failed; and the live workers")
    status.add_argument("--queue", action="append", help="only this queue (repeatable); default: every queue")
    cancelling = commands.add_parser("cancel", help="cancel scheduled or queued tasks; tell running ones to stop")
    cancelling.add_argument("ids", nargs="+", help="task ids")
    cancelling.add_argument("--queue", help="the tasks' queue; default: the queue that knows each id")
    for action, text in (("pause", "every worker stops starting tasks of a queue; running ones finish"),
                         ("resume", "workers take tasks of a paused queue again")):
        command = commands.add_parser(action, help=text)
        command.add_argument("queues", nargs="+", metavar="QUEUE")
    failed = commands.add_parser("failed", help="the failed stores of the queues")
    failed.add_argument("action", choices=["list", "requeue", "purge"])
    failed.add_argument("ids", nargs="*", help="task ids (requeue and purge need ids or --all)")
    failed.add_argument("--queue", action="append", help="only this queue (repeatable); default: every queue")
    failed.add_argument("--all", action="store_true", help="requeue or purge every failed task of the queues")
    failed.add_argument("--traceback", action="store_true", help="list: print each full traceback")
    tasks_cli.add_commands(commands)
    web = commands.add_parser("web", help="serve the web dashboard (needs taskutils[web])")
    web.add_argument("--bind", default="127.0.0.1:8080", help="[HOST:]PORT to listen on (default 127.0.0.1:8080); "
                     "an address other than loopback needs a token")
    web.add_argument("--token", help="every request must carry this token (TASKUTILS_WEB_TOKEN; prefer the "
                     "variable: a command line is visible to other users)")
    web.add_argument("--read-only", action="store_true", help="show no action buttons and refuse every change")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = Settings.build(redis_url=args.redis_url)
    except ValueError as exc:  # InvalidRedisURL, or a bad TASKUTILS_* variable
        print(f"taskutils: {exc}", file=sys.stderr)
        return 2
    if args.command == "web":
        return serve_dashboard(settings, args)
    backend = RedisBackend.from_url(settings.redis_url or DEFAULT_REDIS_URL, settings.broker_timeout)
    try:
        if args.command == "status":
            print_status(backend, args.queue)
            return 0
        if args.command == "cancel":
            return run_cancel(backend, args.queue, args.ids, settings.result_ttl)
        if args.command in ("pause", "resume"):
            for queue in args.queues:
                changed = backend.set_paused(queue, args.command == "pause")
                print(f"{queue}: {args.command + 'd' if changed else 'already ' + args.command + 'd'}")
            return 0
        if args.command == "failed":
            return run_failed(backend, args)
        return tasks_cli.run(backend, args)
    except (BackendUnavailable, BrokerError) as exc:
        print(f"taskutils: {exc}", file=sys.stderr)
        return 1
    finally:
        backend.close()


def serve_dashboard(settings: Settings, args: argparse.Namespace) -> int:
    try:
        from .web import serve
    except ImportError as exc:
        print(f"taskutils web needs the web extra: pip install 'taskutils[web]' ({exc})", file=sys.stderr)
        return 2
    return serve(settings, args.bind, args.token, args.read_only)


def print_status(backend: RedisBackend, queues: list[str] | None) -> None:
    status = fleet_status(backend, queues)
    print(f"{'queue':<24} {'scheduled':>9} {'queued':>9} {'running':>9} {'failed':>9}")
    for name, counts in status.queues.items():
        paused = "  paused" if name in status.paused else ""
        print(f"{name:<24} {counts.scheduled:>9} {counts.queued:>9} {counts.running:>9} {counts.failed:>9}{paused}")
    for queue, schedules in status.schedules.items():
        for name, record in schedules.items():
            every = f"cron '{record.cron}' {record.timezone}" if record.cron else f"every {record.interval:g}s"
            print(f"  schedule {queue}/{name}: {every}, misfire {record.misfire}, next {when(record.next_run)}, "
                  f"last {when(record.last_run)}")
    print(f"\n{len(status.workers)} live worker(s)")
    for worker in status.workers:
        age = status.now - float(worker.get("heartbeat", status.now))
        print(
            f"  {worker.get('host', '?')} pid {worker.get('pid', '?')}: {worker.get('threads', '?')} threads, "
            f"queues {worker.get('queues', '?')}, {worker.get('running', '?')} running, last heartbeat {age:.1f}s ago"
        )


def when(moment: float | None) -> str:
    """A time for people, in UTC."""
    if moment is None:
        return "never"
    if moment == float("inf"):  # a cron schedule whose next times a worker has yet to compute
        return "once a worker has computed it"
    return datetime.fromtimestamp(moment, timezone.utc).isoformat(timespec="seconds")


def run_cancel(backend: RedisBackend, queue: str | None, ids: list[str], result_ttl: float) -> int:
    """Exit 0 if every task was cancelled or, running, told to stop; 1 if any was neither."""
    code = 0
    for task_id in ids:
        found = find_task(backend, task_id, [queue] if queue else None)
        where = found.queue if found is not None else queue or "default"
        if cancel(backend, where, task_id, result_ttl):
            print(f"{task_id}: cancelled")
        elif backend.status(where, task_id)[0] == "running":
            print(f"{task_id}: running; told to stop (current_task().cancelled), its outcome will be recorded")
        else:
            print(f"{task_id}: not cancelled: not scheduled or queued on {where!r} (finished, or unknown)")
            code = 1
    return code


def run_failed(backend: RedisBackend, args: argparse.Namespace) -> int:
    """Exit 0 when every queue named exists and every id given was in a failed store; else 1."""
    if args.action != "list" and not args.ids and not args.all:
        print(f"taskutils failed {args.action}: give task ids, or --all", file=sys.stderr)
        return 2
    known = backend.queues()
    unknown = [name for name in args.queue or [] if name not in known]
    if unknown:
        print(f"taskutils failed {args.action}: no queue named {', '.join(map(repr, unknown))} "
              f"(queues: {', '.join(known) or 'none'})", file=sys.stderr)
        return 1
    queues = args.queue or known
    if args.action == "list":
        for queue in queues:
            for task in failed_tasks(backend, queue):
                when = datetime.fromtimestamp(task.failed_at).isoformat(timespec="seconds") if task.failed_at else "?"
                print(f"{task.id}  {queue}  {task.ref or '?'}  {when}  attempts={task.failures} "
                      f"crashes={task.crashes}  {task.reason}")
                if args.traceback:
                    print("    " + task.error.rstrip().replace("\n", "\n    "))
        return 0
    missing = set(args.ids)
    for queue in queues:
        stored = backend.failed(queue)
        ids = None if args.all else [task_id for task_id in args.ids if task_id in stored]
        if ids == []:
            continue
        if args.action == "requeue":
            done = len(requeue_failed(backend, queue, ids))
        else:
            done = purge_failed(backend, queue, ids)
        missing -= set(ids or ())
        if done or ids:
            print(f"{queue}: {args.action}d {done} task(s)")
    if missing and not args.all:
        print(f"taskutils failed {args.action}: not in the failed store of {', '.join(map(repr, queues)) or 'any queue'}: "
              f"{', '.join(sorted(missing))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
