"""Task functions run by real taskutils-worker processes; they record into Redis at $TASKUTILS_TEST_RECORD_URL.

The workers get their broker only from --redis-url, so LockWrapper here finds Redis through
the worker running the task, as it would in production."""

from __future__ import annotations

import functools
import os
import time

import redis

from taskutils import LockWrapper, Throttled


@functools.cache
def _client() -> redis.Redis:
    return redis.Redis.from_url(os.environ["TASKUTILS_TEST_RECORD_URL"])


_ENTER = """
local now = redis.call('INCR', KEYS[1])
if now > tonumber(redis.call('GET', KEYS[2]) or '0') then redis.call('SET', KEYS[2], now) end
return now
"""

fleet_lock = LockWrapper("fleet-test-lock", timeout=5)


def mark(key, item):
    """Count one run of `item`."""
    _client().hincrby(key, item, 1)


def append(key, item):
    _client().rpush(key, item)


def probe(key, seconds):
    """Count runs of `key` in progress at once; the peak lands in `<key>:peak`."""
    _client().eval(_ENTER, 2, key + ":now", key + ":peak")
    time.sleep(seconds)
    _client().decr(key + ":now")


@fleet_lock
def locked_probe(key, seconds):
    probe(key, seconds)


def slow(key, seconds):
    """Record a start, sleep, record an end."""
    _client().rpush(key + ":starts", os.getpid())
    time.sleep(seconds)
    _client().rpush(key + ":ends", os.getpid())
    return os.getpid()


def chaos(key, n, seconds):
    """A chaos-test task: records its start and its finished span, then counts its completion."""
    client = _client()
    started = time.time()
    client.rpush(key + ":starts", f"{n}|{os.getpid()}|{started}")
    time.sleep(seconds)
    pipe = client.pipeline(transaction=False)
    pipe.rpush(key + ":spans", f"{n}|{os.getpid()}|{started}|{time.time()}")
    pipe.hincrby(key + ":done", str(n), 1)
    pipe.execute()


def die(key):
    """A poison task: it kills the worker running it."""
    _client().rpush(key + ":starts", os.getpid())
    os._exit(1)


def stamp(key):
    """Record the Redis server's time at the run."""
    seconds, micros = _client().time()
    _client().rpush(key, repr(seconds + micros / 1e6))


def noop():
    """Does nothing: for measuring the framework alone."""


def stamp_then_fail(key):
    """Record the Redis server's time and this process at the start, then fail: the failure
    record tells how many crashes were counted against the task."""
    seconds, micros = _client().time()
    _client().rpush(key, f"{seconds + micros / 1e6!r}|{os.getpid()}")
    raise RuntimeError("planned failure, to read the crash count in the failure record")


def always_fails(key):
    """Count an attempt, then fail."""
    _client().incr(key)
    raise RuntimeError("this task always fails")


def throttled(key, retry_after):
    """Count an attempt, then ask to be throttled."""
    _client().incr(key)
    raise Throttled(retry_after=retry_after)


def paced(key, seconds):
    """Record the Redis server's time at the start, and the peak of runs of `key` at once."""
    seconds_now, micros = _client().time()
    _client().rpush(key + ":starts", repr(seconds_now + micros / 1e6))
    probe(key, seconds)


def slow_first_run(key):
    """The first run sleeps a minute (long enough to be killed); any later run records its order."""
    if _client().incr(key + ":runs") == 1:
        time.sleep(60)
    _client().rpush(key, "rerun")


def follow_up_then_die_once(key, items):
    """Ask for a `mark` task per item on success, then kill the worker on the first run: that
    run's follow-ups must never be enqueued, the next run's once."""
    from taskutils import Task, current_task

    current_task().enqueue_on_success(Task(mark, (key, item)) for item in items)
    if _client().incr(key + ":runs") == 1:
        os._exit(1)
