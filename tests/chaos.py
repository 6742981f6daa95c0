"""The chaos run: real workers SIGKILLed at random under load, and what it left behind."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import msgpack
import redis

from taskutils import Task, TaskHandler

from . import fleet_tasks
from .fleet import WorkerProcess


@dataclass
class ChaosReport:
    tasks: int
    kills: int
    seconds: float
    lost: int  # neither completed nor kept in the failed store
    quarantined: int  # held by max_crashes killed workers: kept in the failed store, not run again
    failed_otherwise: int
    running_at_a_kill: int
    duplicates: int
    duplicates_not_running_at_a_kill: int
    completed_twice: int
    peak_concurrency: int
    cap: int
    running_after: int
    slots_held_after: int
    redelivery_seconds_max: float

    def lines(self) -> str:
        return "\n".join(f"{name}: {value}" for name, value in vars(self).items())


def run_chaos(redis_url: str, tasks: int, workers: int = 4, threads: int = 3, cap: int = 6,
              task_seconds: float = 0.05, kill_every: float = 1.0, visibility: float = 1.0) -> ChaosReport:
    """Enqueue `tasks`, run them on `workers` processes, SIGKILL one about every `kill_every` seconds."""
    client = redis.Redis.from_url(redis_url)
    key, queue = "chaos", "chaos"
    args = ("--import", "tests.fleet_tasks", "--queue", queue, "--threads", str(threads),
            "--max-concurrency", str(cap), "--visibility-timeout", str(visibility), "--sleep-seconds", "0.2")
    pool = [WorkerProcess(redis_url, *args) for _ in range(workers)]
    killed: dict[int, float] = {}
    producer = TaskHandler(redis_url, max_num_threads=0, queue=queue)
    started = time.monotonic()
    try:
        refs = producer.enqueue_tasks(
            Task(fleet_tasks.chaos, (key, n, task_seconds * random.uniform(0.5, 1.5))) for n in range(tasks)
        )
        next_kill = time.monotonic() + kill_every
        while not producer.join(timeout=0.05):
            if time.monotonic() >= next_kill:
                victim = random.choice(pool)
                victim.kill()
                killed[victim.pid] = time.time()
                pool[pool.index(victim)] = WorkerProcess(redis_url, *args)
                next_kill = time.monotonic() + kill_every * random.uniform(0.7, 1.3)
        seconds = time.monotonic() - started
        counts = producer.backend.counts(queue)
        failed = {task_id: msgpack.unpackb(record) for task_id, record in producer.backend.failed(queue).items()}
    finally:
        producer.close()
        for worker in pool:
            worker.kill()
    done = {int(n): int(c) for n, c in client.hgetall(key + ":done").items()}
    quarantined = {n for n, ref in enumerate(refs) if failed.get(ref.id, {}).get("error", "").startswith("quarantined")}
    starts = [entry.decode().split("|") for entry in client.lrange(key + ":starts", 0, -1)]
    at_kills = {int(n) for n, pid, _ in starts if int(pid) in killed}
    runs: dict[int, int] = {}
    for n, _, _ in starts:
        runs[int(n)] = runs.get(int(n), 0) + 1
    duplicates = {n for n, count in runs.items() if count > 1}
    spans = [tuple(float(x) for x in entry.decode().split("|")) for entry in client.lrange(key + ":spans", 0, -1)]
    intervals = [(start, end) for _, _, start, end in spans]
    finished = {(int(n), int(pid), start) for n, pid, start, _ in spans}
    cut_short = [(int(n), int(pid), float(t)) for n, pid, t in starts if (int(n), int(pid), float(t)) not in finished]
    intervals += [(t, killed[pid]) for _, pid, t in cut_short if pid in killed]
    redelivery = []
    for n in at_kills:
        times = sorted((float(t), int(pid)) for m, pid, t in starts if int(m) == n)
        for (t0, pid0), (t1, _) in zip(times, times[1:]):
            if pid0 in killed:
                redelivery.append(t1 - max(t0, killed[pid0]))
    slots = client.zcard(f"tu:{{{queue}}}:leases")
    client.close()
    return ChaosReport(
        tasks=tasks,
        kills=len(killed),
        seconds=round(seconds, 1),
        lost=tasks - len(done.keys() | quarantined),
        quarantined=len(quarantined),
        failed_otherwise=len(failed) - len(quarantined),
        running_at_a_kill=len({n for n, pid, _ in cut_short if pid in killed}),
        duplicates=len(duplicates),
        duplicates_not_running_at_a_kill=len(duplicates - at_kills),
        completed_twice=sum(1 for count in done.values() if count > 1),
        peak_concurrency=_peak(intervals),
        cap=cap,
        running_after=counts.running,
        slots_held_after=slots,
        redelivery_seconds_max=round(max(redelivery, default=0.0), 2),
    )


def _peak(intervals: list[tuple[float, float]]) -> int:
    """Most intervals open at one instant (an end at the same instant as a start closes first)."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    peak = now = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return peak
