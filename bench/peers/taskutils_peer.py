"""taskutils, measured exactly like the peers, plus the figures only taskutils reports.

Configuration: library defaults. Producer: ``TaskHandler(url, max_num_threads=0)``; enqueue is
``enqueue_task(Task(func, kwargs=...))``, bulk is ``enqueue_tasks([...])`` (one script call).
Worker: ``taskutils-worker --import bench.peers.tasks_plain --threads 8`` (non-default: 8
threads instead of 3), log level INFO (it logs nothing per task).
"""

from __future__ import annotations

import time

from taskutils import Task, TaskHandler
from taskutils.backends.records import Ending, Exchange, Settlement

from tests.redis_server import free_port

from .base import POLL, START_TIMEOUT, Peer, bin_path


class TaskutilsPeer(Peer):
    name = "taskutils"
    key = "taskutils"
    tasks_module = "bench.peers.tasks_plain"

    def setup(self) -> None:
        self.handler = TaskHandler(self.redis_url, max_num_threads=0)

    def send(self, task, kwargs):
        self.handler.enqueue_task(Task(getattr(self.tasks, task), kwargs=kwargs))

    def send_bulk(self, task, n):
        self.handler.enqueue_tasks([Task(getattr(self.tasks, task))] * n)

    def worker_command(self, *extra: str) -> list[str]:
        return [bin_path("taskutils-worker"), "--redis-url", self.redis_url, "--import", self.tasks_module,
                "--threads", "8", *extra]

    def teardown(self) -> None:
        self.handler.close()

    # -- figures only taskutils reports ---------------------------------------------------------

    def overhead(self, n: int, processes: int = 1) -> float:
        """tasks/s of one worker over n truly empty tasks, completion seen through taskutils itself."""
        self.flush()
        for start in range(0, n, 10_000):
            self.handler.enqueue_tasks([Task(self.tasks.noop)] * min(10_000, n - start))
        self.start_worker("--processes", str(processes))
        try:
            return self._time_backlog(n)
        finally:
            self.stop_worker()
            self.flush()

    def drain_with(self, n: int, processes: int = 1, cap: int | None = None, keys: int = 0, metrics: bool = False) -> float:
        """Like drain(), with `--processes`, a fleet-wide cap, the tasks spread over `keys`
        distinct task keys (no limits: the cost of the fair turns alone), or Prometheus metrics
        counted and served (`--http`)."""
        self.flush()
        self.handler.backend.set_max_concurrency("default", cap)
        for start in range(0, n, 10_000):
            self.handler.enqueue_tasks([
                Task(self.tasks.body, kwargs={"n": i}, key=f"k{i % keys}" if keys else None)
                for i in range(start, min(start + 10_000, n))
            ])
        self.start_worker("--processes", str(processes), *(("--http", str(free_port())) if metrics else ()))
        try:
            return self.time_drain(n)
        finally:
            self.stop_worker()
            self.handler.backend.set_max_concurrency("default", None)
            self.flush()

    def _time_backlog(self, n: int) -> float:
        counts = self.handler.backend.counts
        deadline = time.monotonic() + START_TIMEOUT
        while (left := counts("default").pending) >= n:
            self._check_worker()
            if time.monotonic() > deadline:
                raise TimeoutError("taskutils: worker ran no task")
            time.sleep(POLL)
        started = time.perf_counter()
        while counts("default").pending:
            time.sleep(POLL)
        return left / (time.perf_counter() - started)

    def dispatch_cost(self, keys: int, probe: int = 2000) -> float:
        """µs per claim+ack, as a worker of 8 threads makes them, with `keys` keys ready (each
        keeps tasks ready for the whole probe, so the turns hold `keys` lanes throughout)."""
        self.flush()
        per_key = max(2, -(-probe * 5 // 4 // keys))
        tasks = [Task(self.tasks.noop, key=f"k{k}") for _ in range(per_key) for k in range(keys)]
        for start in range(0, len(tasks), 10_000):
            self.handler.enqueue_tasks(tasks[start:start + 10_000])
        cost = self._claim_cost(probe)
        self.flush()
        return cost

    def _claim_cost(self, probe: int) -> float:
        """µs per claim+ack over `probe` claims: settle 8, claim 8, as a worker of 8 threads does."""
        backend = self.handler.backend
        held: list[Settlement] = []
        started = time.perf_counter()
        for _ in range(probe // 8):
            reply = backend.exchange(Exchange("default", "scale-probe", held, 8, 30.0))
            held = [Settlement(claim, Ending.DONE) for claim in reply.claims]
        backend.exchange(Exchange("default", "scale-probe", held))
        return (time.perf_counter() - started) / probe * 1e6

    def scale(self, depth: int, probe: int = 2000) -> tuple[float, float]:
        """(µs per enqueue, µs per claim+ack) with `depth` tasks already queued."""
        self.flush()
        for start in range(0, depth, 10_000):
            self.handler.enqueue_tasks([Task(self.tasks.noop)] * min(10_000, depth - start))
        started = time.perf_counter()
        for _ in range(probe):
            self.send("noop", {})
        enqueue_us = (time.perf_counter() - started) / probe * 1e6
        claim_us = self._claim_cost(probe)
        self.flush()
        return enqueue_us, claim_us
