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
