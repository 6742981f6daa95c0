"""The common measurement of every peer task queue.

Each adapter (``bench/peers/<peer>.py``) only says how its library enqueues a task and how
its worker is started; this module does the measuring, so every peer is measured the same way.

Tasks every ``tasks_<peer>.py`` module declares, under these names:

- ``noop(x=None)``: does nothing (enqueue timings, queued bytes with ``x=1``).
- ``body(n)``: BODY, one pipelined round trip ``INCR bench:done`` + ``SET bench:last n`` through a
  module-level redis-py client (``redis.asyncio`` for the asyncio libraries, so the 8 concurrent
  tasks of one worker are not serialised behind a blocking call on the event loop).
- ``mark()``: ``RPUSH bench:lat time.time()`` taken first thing in the task (latency).

Workers read the Redis URL from the ``BENCH_REDIS_URL`` environment variable (no default, so a
missing variable never falls back to somebody else's Redis). Each worker runs as its own
subprocess, started with the library's own CLI from the directory holding ``bench/``, in its own
session so that it and its children are stopped together; its output goes to
``<workdir>/<key>-worker.log``.
"""

from __future__ import annotations

import asyncio
import importlib
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import redis

ENV_URL = "BENCH_REDIS_URL"
REPO_ROOT = Path(__file__).resolve().parents[2]
DONE, LAST, LAT = "bench:done", "bench:last", "bench:lat"
POLL = 0.005            # the bench polls bench:done every 5 ms
START_TIMEOUT = 60.0    # longest wait for a worker's first task
STALL_TIMEOUT = 60.0    # longest a drain may go without progress


def bin_path(name: str) -> str:
    """The console script ``name`` of the Python running the bench (its venv), else from PATH."""
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} not found next to {sys.executable} nor on PATH")
    return found


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


class Peer:
    """One peer task queue. Adapters set ``name``, ``key``, ``tasks_module`` and implement either
    ``send`` (sync clients) or ``asend`` (asyncio clients), ``worker_command`` and, where the
    library has a bulk enqueue API, ``send_bulk`` / ``asend_bulk``."""

    name: str = "?"
    key: str = "?"
    tasks_module: str = ""
    is_async: bool = False

    def __init__(self, redis_url: str, workdir: str):
        self.redis_url = redis_url
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.r = redis.Redis.from_url(redis_url)
        self.r.ping()
        # The task module builds its library objects from this URL when it is imported.
        os.environ[ENV_URL] = redis_url
        self.tasks = importlib.import_module(self.tasks_module)
        if self.tasks.URL != redis_url:        # imported earlier for another URL
            self.tasks = importlib.reload(self.tasks)
        self.loop = asyncio.new_event_loop() if self.is_async else None
        self.worker: subprocess.Popen | None = None
        self.setup()

    # ---------------------------------------------------------------- adapter hooks
    def setup(self) -> None:
        """Client-side start-up, once (e.g. open an asyncio pool)."""

    def after_flush(self) -> None:
        """Client-side state that a FLUSHDB erased and must exist before enqueuing."""

    def send(self, task: str, kwargs: dict) -> None:
        raise NotImplementedError

    async def asend(self, task: str, kwargs: dict) -> None:
        raise NotImplementedError

    send_bulk = None    # def send_bulk(self, task, n) -> None: n argument-less tasks in one library call
    asend_bulk = None   # async variant

    def worker_command(self) -> list[str]:
        raise NotImplementedError

    def teardown(self) -> None:
        """Client-side shutdown, once."""

    # ---------------------------------------------------------------- plumbing
    def run(self, coro):
        return self.loop.run_until_complete(coro)

    def flush(self) -> None:
        self.r.flushdb()
        self.after_flush()

    def _enqueue(self, task: str, kwargs_list: list[dict]) -> float:
        """Enqueue one call per task; seconds spent in the library's enqueue calls."""
        if self.is_async:
            async def go():
                t0 = time.perf_counter()
                for kw in kwargs_list:
                    await self.asend(task, kw)
                return time.perf_counter() - t0
            return self.run(go())
        t0 = time.perf_counter()
        for kw in kwargs_list:
            self.send(task, kw)
        return time.perf_counter() - t0

    def _stamped(self, task: str) -> float:
        """Enqueue one task; time.time() taken just before the library's enqueue call."""
        if self.is_async:
            async def go():
                t = time.time()
                await self.asend(task, {})
                return t
            return self.run(go())
        t = time.time()
        self.send(task, {})
        return t

    def start_worker(self, *extra: str) -> None:
        """Start the worker (`extra`: more arguments, for the adapters that take them)."""
        env = dict(os.environ, **{ENV_URL: self.redis_url})
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
        log = open(self.workdir / f"{self.key}-worker.log", "ab")
        command = self.worker_command(*extra) if extra else self.worker_command()
        self.worker = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL,
                                       stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

    def stop_worker(self) -> None:
        proc, self.worker = self.worker, None
        if proc is None or proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            try:
                os.killpg(proc.pid, sig)   # the worker's own session: it and its children
            except ProcessLookupError:
                return
            try:
                proc.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def _check_worker(self) -> None:
        if self.worker is not None and self.worker.poll() is not None:
            tail = (self.workdir / f"{self.key}-worker.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{self.name} worker exited with {self.worker.returncode}:\n{tail}")

    def _done(self) -> int:
        return int(self.r.get(DONE) or 0)

    def _pop_mark(self, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while True:
            got = self.r.blpop(LAT, timeout=1)
            if got:
                return float(got[1])
            self._check_worker()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: latency task did not run within {timeout}s")

    # ---------------------------------------------------------------- the five figures
    def enqueue_one_by_one(self, n: int) -> float:
        self.flush()
        try:
            return self._enqueue("noop", [{}] * n)
        finally:
            self.flush()

    def enqueue_bulk(self, n: int) -> float | None:
        bulk = self.asend_bulk if self.is_async else self.send_bulk
        if bulk is None:
            return None
        self.flush()
        try:
            if self.is_async:
                async def go():
                    t0 = time.perf_counter()
                    await bulk("noop", n)
                    return time.perf_counter() - t0
                return self.run(go())
            t0 = time.perf_counter()
            bulk("noop", n)
            return time.perf_counter() - t0
        finally:
            self.flush()

    def queued_bytes(self, n: int) -> float:
        self.flush()
        self._enqueue("noop", [{"x": 1}])   # warm-up: connections, loaded scripts, consumer groups
        self.flush()
        before = int(self.r.info("memory")["used_memory"])
        self._enqueue("noop", [{"x": 1}] * n)
        after = int(self.r.info("memory")["used_memory"])
        self.flush()
        return (after - before) / n

    def drain(self, n: int) -> tuple[float, float]:
        """(tasks/s, Redis bytes kept per finished task) of one worker over a backlog of n BODY
        tasks. The clock starts when the bench first sees bench:done >= 1 (worker start-up
        excluded) and stops when it reads n; the rate counts the tasks run inside that span:
        n - (bench:done at the start), i.e. n-1 when the first poll caught the first task. The
        bytes kept are Redis's used_memory once the worker stopped, less what it was before the
        enqueue, per task: what the system keeps of tasks that finished (statuses, results; BODY
        returns None), besides its own fixed keys."""
        self.flush()
        before = int(self.r.info("memory")["used_memory"])
        self._enqueue("body", [{"n": i} for i in range(n)])
        self.start_worker()
        try:
            rate = self.time_drain(n)
        finally:
            self.stop_worker()
        try:
            self.r.delete(DONE, LAST)
            return rate, (int(self.r.info("memory")["used_memory"]) - before) / n
        finally:
            self.flush()

    def time_drain(self, n: int) -> float:
        """With the worker(s) started on a backlog of n BODY tasks: the rate described in drain()."""
        deadline = time.monotonic() + START_TIMEOUT
        while (first := self._done()) < 1:
            self._check_worker()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: worker ran no task within {START_TIMEOUT}s")
            time.sleep(POLL)
        t0 = time.perf_counter()
        done, last_change = first, t0
        while done < n:
            time.sleep(POLL)
            now_done = self._done()
            now = time.perf_counter()
            if now_done != done:
                done, last_change = now_done, now
            elif now - last_change > STALL_TIMEOUT:
                self._check_worker()
                raise TimeoutError(f"{self.name}: drain stalled at {done}/{n}")
        return (n - first) / (time.perf_counter() - t0)

    def latency(self, samples: int, idle_samples: int | None = None) -> tuple[float, float, float, float]:
        """(p50, p99) ms enqueue->start back to back, then (p50, p99) after 1.0 s idle each.
        idle_samples defaults to samples (each costs > 1 s)."""
        idle_samples = samples if idle_samples is None else idle_samples
        self.flush()
        self.start_worker()
        try:
            for _ in range(3):                      # warm-up: the worker is up and has run tasks
                self._stamped("mark")
                self._pop_mark(START_TIMEOUT)
            hot, idle = [], []
            for _ in range(samples):
                t = self._stamped("mark")
                hot.append((self._pop_mark(30) - t) * 1000)
            for _ in range(idle_samples):
                time.sleep(1.0)
                t = self._stamped("mark")
                idle.append((self._pop_mark(30) - t) * 1000)
        finally:
            self.stop_worker()
            self.flush()
        return (statistics.median(hot), percentile(hot, 99), statistics.median(idle), percentile(idle, 99))

    def close(self) -> None:
        self.stop_worker()
        try:
            self.teardown()
        finally:
            if self.loop is not None:
                self.loop.close()
            self.r.flushdb()
            self.r.close()
