"""What this machine allows, measured in the same run as the task queues.

The targets of the benchmark are fractions of these ceilings, and the machine's speed changes
from one run to the next (a shared 2-vCPU virtual machine), so each run measures them again:

- ``body_8`` / ``body_1``: BODY (bench/peers/base.py) run back to back by 8 threads, or 1, of one
  process with no queue at all: the ceiling of a one-process worker whose threads roam the CPUs.
- ``body_8_one_cpu``: the same 8 threads in a process kept on one CPU (what a deployer's
  ``taskset`` gives a worker process): the ceiling of such a worker.
- ``push``: one ``ZADD`` per round trip through redis-py: the most any one-by-one enqueue of a
  Python client gets.
- ``pairs``: ``ZADD`` + ``ZPOPMIN`` pairs pipelined by 100: one push and one pop per task, batched,
  with no task framework at all (the ceiling for truly empty tasks).
- ``wake_p50`` / ``wake_idle_p50``: ms from just before an ``RPUSH`` to a ``BLPOP`` returning it in
  another process, back to back and after 1 s idle: the floor under enqueue -> task start.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import threading
import time

import redis

from .peers.base import ENV_URL, REPO_ROOT

WAITER = """
import os, time, redis
r = redis.Redis.from_url(os.environ[{env!r}])
while True:
    _, value = r.blpop("limits:in", 0)
    woke = time.time()
    if value == b"stop":
        break
    r.rpush("limits:out", woke)
"""


def measure_limits(url: str, n: int, samples: int, idle_samples: int) -> dict[str, float]:
    """Every ceiling above, on the Redis at `url` (its keys are flushed)."""
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
        limits = {"body_8": body_rate(n, 8), "body_1": body_rate(n // 4, 1), "body_8_one_cpu": body_rate_on_one_cpu(url, n)}
        limits["push"] = push_rate(client, n)
        limits["pairs"] = pair_rate(client, n)
        limits["wake_p50"], limits["wake_idle_p50"] = wake_latency(client, url, samples, idle_samples)
        return limits
    finally:
        client.flushdb()
        client.close()


def body_rate(n: int, threads: int) -> float:
    from .peers import tasks_plain  # imported here: it reads the bench's Redis URL when imported

    def run(count: int) -> None:
        for i in range(count):
            tasks_plain.body(i)

    workers = [threading.Thread(target=run, args=(n // threads,)) for _ in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return (n // threads * threads) / (time.perf_counter() - started)


def body_rate_on_one_cpu(url: str, n: int) -> float:
    """body_rate(n, 8) in a child process kept on the first CPU it may use."""
    code = (
        "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
        f"from bench.limits import body_rate; print(body_rate({n}, 8))"
    )
    done = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, **{ENV_URL: url}), cwd=REPO_ROOT,
                          capture_output=True, text=True, check=True)
    return float(done.stdout)


def push_rate(client: redis.Redis, n: int) -> float:
    started = time.perf_counter()
    for i in range(n):
        client.zadd("limits:z", {str(i): i})
    rate = n / (time.perf_counter() - started)
    client.delete("limits:z")
    return rate


def pair_rate(client: redis.Redis, n: int, batch: int = 100) -> float:
    started = time.perf_counter()
    for start in range(0, n, batch):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(start + batch, n)):
            pipe.zadd("limits:z", {str(i): i})
            pipe.zpopmin("limits:z")
        pipe.execute()
    return n / (time.perf_counter() - started)


def wake_latency(client: redis.Redis, url: str, samples: int, idle_samples: int) -> tuple[float, float]:
    waiter = subprocess.Popen([sys.executable, "-c", WAITER.format(env=ENV_URL)], env=dict(os.environ, **{ENV_URL: url}))
    try:
        def one() -> float:
            stamp = time.time()
            client.rpush("limits:in", "go")
            _, woke = client.blpop("limits:out", 30) or (None, None)
            if woke is None:
                raise TimeoutError("the BLPOP waiter did not answer within 30 s")
            return (float(woke) - stamp) * 1000

        for _ in range(3):  # warm-up: the waiter has started and answered
            one()
        hot = [one() for _ in range(samples)]
        idle = []
        for _ in range(idle_samples):
            time.sleep(1.0)
            idle.append(one())
        return statistics.median(hot), statistics.median(idle)
    finally:
        client.rpush("limits:in", "stop")
        try:
            waiter.wait(10)
        except subprocess.TimeoutExpired:
            waiter.kill()
