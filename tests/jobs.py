"""Task functions for the in-process behaviour suite; they record what happened in module state."""

from __future__ import annotations

import threading
import time
from collections import defaultdict

calls: dict[str, list] = defaultdict(list)
gates: dict[str, threading.Event] = defaultdict(threading.Event)
_guard = threading.Lock()
_running: dict[str, int] = defaultdict(int)
peaks: dict[str, int] = defaultdict(int)
barriers: dict[str, threading.Barrier] = {}


def add(a, b):
    return a + b


def record(key, value=None):
    with _guard:
        calls[key].append(value)
    return value


def echo(*args, **kwargs):
    return [list(args), kwargs]


def fail_times(key, times):
    """Raise on the first `times` calls for `key`, then return the number of calls."""
    with _guard:
        calls[key].append(time.time())
        count = len(calls[key])
    if count <= times:
        raise RuntimeError(f"planned failure {count} of {times}")
    return count


def boom(message):
    raise ValueError(message)


def exit_task():
    raise SystemExit(3)


def wait_gate(key):
    """Block until the test opens the gate for `key`."""
    record(key, "started")
    gates[key].wait(30)
    return "released"


def probe(key, seconds):
    """Count tasks of `key` running at once and remember the peak."""
    with _guard:
        _running[key] += 1
        peaks[key] = max(peaks[key], _running[key])
    time.sleep(seconds)
    with _guard:
        _running[key] -= 1


def unencodable_result():
    return object()


def takes_one(a):
    return a


def sleep_for(seconds):
    time.sleep(seconds)
    return seconds


def meet(key, parties):
    """Return only once `parties` tasks of `key` run at the same time (raise after 10 s)."""
    with _guard:
        barrier = barriers.setdefault(key, threading.Barrier(parties))
    barrier.wait(10)
    return True


def whoami(key, fail_first=False):
    """Record what current_task() says; with fail_first, the first attempt fails."""
    from taskutils import current_task

    task = current_task()
    record(key, [task.id, task.queue, task.key, task.attempt])
    if fail_first and task.attempt == 1:
        raise RuntimeError("first attempt fails")


def until_cancelled(key):
    """Open the gate `key`, then wait (up to 10 s) until the task is asked to stop."""
    from taskutils import current_task

    gates[key].set()
    deadline = time.monotonic() + 10
    while not current_task().cancelled and time.monotonic() < deadline:
        time.sleep(0.01)
    return current_task().cancelled


def spawn(key, count, queue=None):
    """Enqueue `count` follow-up tasks with the running task's own handler."""
    from taskutils import Task, current_task

    for n in range(count):
        current_task().handler.enqueue_task(Task(record, (key, n), queue=queue))


hooks: dict = {}  # key -> a function of the test's own, for call_hook


def call_hook(key):
    """Call the test's function registered as `key` (it may look at the worker while a task runs)."""
    return hooks[key]()


def throttle_for(seconds):
    from taskutils import Throttled

    raise Throttled(retry_after=seconds)


def follow_up(name, values, fail_first=False, throttle_first=False, fail_always=False, unique=None, **options):
    """Record this run (in calls[name + ":runs"]), then ask for a `record` task per value, enqueued
    when this task succeeds, with unique value f"{unique}{value}" if `unique` is given (other Task
    options apply to each); the first run may fail or be throttled after asking, or every run fail."""
    from taskutils import Task, Throttled, current_task

    task = current_task()
    record(name + ":runs", task.attempt)
    runs = len(calls[name + ":runs"])
    task.enqueue_on_success(
        Task(record, (name, value), unique=None if unique is None else f"{unique}{value}", **options) for value in values
    )
    if fail_always or (fail_first and task.attempt == 1):
        raise RuntimeError("this attempt fails after asking for follow-ups")
    if throttle_first and runs == 1:
        raise Throttled(retry_after=0.1)
    return len(values)


def follow_up_refused(task_options, blob_size=0):
    """What enqueue_on_success says of a task made with `task_options` (a dict), and an argument
    of `blob_size` characters."""
    from taskutils import Task, current_task

    try:
        current_task().enqueue_on_success([Task(record, ("never", "x" * blob_size), **task_options)])
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return "accepted"
