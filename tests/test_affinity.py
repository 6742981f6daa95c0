"""CpuPin on real processes: every thread moves to one CPU, worker processes of one machine take
different CPUs, the CPU of a process that died or unpinned is free again, and a busy worker pins
itself and unpins once idle. Each pin runs in a child process, so the test process itself is
never pinned."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Iterator

import pytest

from taskutils.affinity import can_pin

CPUS_OF_EVERY_THREAD = textwrap.dedent(
    """
    import os

    def cpus_of_every_thread():
        return sorted(map(list, {tuple(sorted(os.sched_getaffinity(int(tid)))) for tid in os.listdir("/proc/self/task")}))
    """
)

HOLDER = CPUS_OF_EVERY_THREAD + textwrap.dedent(
    """
    import json, os, sys, threading
    from taskutils.affinity import CpuPin

    stop = threading.Event()
    for _ in range(3):  # threads started before the pin move too (four with the main thread)
        threading.Thread(target=stop.wait).start()
    pin = CpuPin(sys.argv[1])
    print(json.dumps([pin.pin(), pin.cpu, cpus_of_every_thread()]), flush=True)
    if sys.stdin.readline().strip() == "unpin":
        pin.unpin()
        print(json.dumps([pin.cpu, cpus_of_every_thread()]), flush=True)
        sys.stdin.readline()
    stop.set()
    """
)


@pytest.fixture(autouse=True)
def several_cpus() -> None:
    if not can_pin():
        message = "this machine cannot pin a process to one of several CPUs: CPU pinning is NOT tested"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


class Holder:
    """A child process that pins itself and holds its CPU until released."""

    def __init__(self, directory: str):
        self.process = subprocess.Popen(
            [sys.executable, "-c", HOLDER, directory], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        assert self.process.stdout is not None
        pinned, cpu, self.cpus = json.loads(self.process.stdout.readline())
        self.cpu = cpu if pinned else None

    def unpin(self) -> tuple[int | None, list[list[int]]]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("unpin\n")
        self.process.stdin.flush()
        cpu, cpus = json.loads(self.process.stdout.readline())
        return cpu, cpus


@pytest.fixture
def holders() -> Iterator[list[Holder]]:
    started: list[Holder] = []
    yield started
    for holder in started:
        holder.process.kill()
        holder.process.wait()


def test_every_thread_moves_to_one_cpu_and_workers_take_different_ones(tmp_path, holders):
    allowed = os.sched_getaffinity(0)
    first = Holder(str(tmp_path))
    holders.append(first)
    assert first.cpu in allowed
    assert first.cpus == [[first.cpu]]  # all four threads, the ones started before the pin included
    second = Holder(str(tmp_path))
    holders.append(second)
    assert second.cpu in allowed - {first.cpu}
    every_cpu_held(str(tmp_path), holders)
    assert sorted(holder.cpu for holder in holders) == sorted(allowed)
    spare = Holder(str(tmp_path))
    holders.append(spare)
    assert spare.cpu is None and spare.cpus == [sorted(allowed)]  # none free: it stays on every CPU


def every_cpu_held(directory: str, holders: list[Holder]) -> None:
    while len(holders) < len(os.sched_getaffinity(0)):
        holders.append(Holder(directory))


def test_the_cpu_of_a_killed_worker_is_free_again(tmp_path, holders):
    every_cpu_held(str(tmp_path), holders)
    killed = holders[0]
    killed.process.kill()
    killed.process.wait()
    again = Holder(str(tmp_path))
    holders.append(again)
    assert again.cpu == killed.cpu


def test_unpinning_gives_back_every_cpu_and_frees_this_one(tmp_path, holders):
    every_cpu_held(str(tmp_path), holders)
    first = holders[0]
    cpu, cpus = first.unpin()
    assert cpu is None and cpus == [sorted(os.sched_getaffinity(0))]
    again = Holder(str(tmp_path))
    holders.append(again)
    assert again.cpu == first.cpu


BUSY_WORKER = CPUS_OF_EVERY_THREAD + textwrap.dedent(
    """
    import json, os, sys, time
    from functools import partial
    import taskutils.worker as worker_module
    from taskutils import Task, TaskHandler
    from taskutils.affinity import CpuPin
    from taskutils.backends.memory import MemoryBackend
    from taskutils.config import Settings
    from taskutils.pacing import RunnerPacer

    def spin():
        started = time.perf_counter()
        while time.perf_counter() - started < 0.0005:
            pass

    def wait_for(condition):
        deadline = time.monotonic() + 20
        while not condition():
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.005)

    # the process CPU clock is read as the wall clock: one core saturated, whatever this machine does
    worker_module.RunnerPacer = partial(RunnerPacer, cpu_seconds=time.monotonic)
    backend = MemoryBackend()
    producer = TaskHandler(max_num_threads=0, backend=backend)
    pin = CpuPin(sys.argv[1])
    worker = worker_module.Worker(backend, Settings(threads=2), worker_module.allow_all, pin)  # no runner parks
    worker.start()
    refs = producer.enqueue_tasks([Task(spin) for _ in range(3000)])
    wait_for(lambda: pin.cpu is not None)
    busy = cpus_of_every_thread()
    refs[-1].result(timeout=60)
    wait_for(lambda: pin.cpu is None)  # idle: it unpins
    print(json.dumps([busy, cpus_of_every_thread()]), flush=True)
    worker.stop(10)
    """
)


def test_a_busy_worker_runs_on_one_cpu_and_an_idle_one_on_all(tmp_path):
    done = subprocess.run([sys.executable, "-c", BUSY_WORKER, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    busy, idle = json.loads(done.stdout)
    assert len(busy) == 1 and len(busy[0]) == 1  # every thread: runners, broker, heartbeat, main
    assert idle == [sorted(os.sched_getaffinity(0))]


FORKER = textwrap.dedent(
    """
    import json, os, sys, time
    from taskutils.affinity import CpuPin

    pin = CpuPin(sys.argv[1])
    assert pin.pin()
    cpu = pin.cpu
    child = os.fork()
    if child == 0:  # a task's forked child: it sleeps on, holding whatever it inherited
        print(json.dumps(sorted(os.sched_getaffinity(0))), flush=True)
        time.sleep(60)
        os._exit(0)
    sys.stdin.readline()  # the test has read the child's CPUs
    pin.unpin()
    print(json.dumps([cpu, child]), flush=True)
    sys.stdin.readline()
    """
)


def test_a_forked_child_lets_go_of_the_cpu_and_its_lock(tmp_path, holders):
    forker = subprocess.Popen([sys.executable, "-c", FORKER, str(tmp_path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert forker.stdin is not None and forker.stdout is not None
    try:
        child_cpus = json.loads(forker.stdout.readline())
        forker.stdin.write("go\n")
        forker.stdin.flush()
        cpu, child = json.loads(forker.stdout.readline())
        try:
            assert child_cpus == sorted(os.sched_getaffinity(0))
            every_cpu_held(str(tmp_path), holders)  # the forker let go: its CPU must be among them
            assert cpu in {holder.cpu for holder in holders}
        finally:
            os.kill(child, 9)
    finally:
        forker.kill()
        forker.wait()


def test_a_shared_lock_folder_others_may_write_to_is_refused(tmp_path):
    folder = tmp_path / "locks"
    folder.mkdir(mode=0o777)
    folder.chmod(0o777)
    code = (
        "import sys, taskutils.affinity as affinity; affinity.lock_directory = lambda: sys.argv[1]; "
        "print(affinity.CpuPin().pin())"
    )
    done = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True, timeout=30)
    assert done.stdout.strip() == "False"
    assert "only it may write to" in done.stderr
