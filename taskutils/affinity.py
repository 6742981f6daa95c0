"""Keeping every thread of a worker process on one CPU, a CPU no other worker process here holds.

Python runs one thread at a time (the GIL), so a worker whose tasks keep its process busy uses one
core however many it may run on; but each time the interpreter passes from a thread on one CPU to
a thread on another, the waiting thread has to be woken across CPUs, which costs far more than a
switch on the same CPU (on the 2-vCPU virtual machine of docs/PERFORMANCE.md, a drain of tasks
that each make one Redis round trip spent 180 µs of CPU per task spread over both CPUs, and 100 µs
kept on one). The pacer (pacing.py) pins a saturated worker and unpins it if that lost tasks.

Worker processes of one machine take different CPUs: each CPU is a lock file in one directory
(by default `taskutils-cpus-<uid>` in the system's temporary folder, which must be this user's
own and writable by nobody else; `cpu_locks` names another), held with `flock` while pinned. The
kernel drops the lock when the process dies, so a killed worker never keeps its CPU. Processes
that do not share that directory (containers without a common volume for it) cannot coordinate:
each starts looking at a random CPU, so that they at least spread out. A child forked by a task
lets go of the lock and of the CPU; a program a task starts with `subprocess` starts on the
worker's CPU (set its own affinity, or run such workers with `--pin-cpu off`).
"""

from __future__ import annotations

import logging
import os
import random
import stat
import tempfile

log = logging.getLogger("taskutils.worker")


def can_pin() -> bool:
    """True where a process can choose its CPUs (Linux) and has more than one to choose from."""
    return hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) > 1


def lock_directory() -> str:
    """Where the CPU locks of this user's worker processes live."""
    return os.path.join(tempfile.gettempdir(), f"taskutils-cpus-{os.getuid()}")


def set_every_thread(cpus: set[int]) -> None:
    """Let every thread of this process run only on `cpus` (threads started later inherit it)."""
    for thread_id in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(thread_id), cpus)
        except ProcessLookupError:
            pass  # a thread that ended meanwhile


class CpuPin:
    """Pins this process to one free CPU and back; one per process."""

    def __init__(self, directory: str = ""):
        self.directory = directory or lock_directory()
        self._check_owner = not directory  # a shared temporary folder: trust only our own directory
        self.allowed = os.sched_getaffinity(0)  # what to go back to
        self.cpu: int | None = None
        self._lock: int | None = None  # file descriptor of the held CPU lock
        self._warned = False
        os.register_at_fork(after_in_child=self._forget_in_child)

    def pin(self) -> bool:
        """Move every thread to an allowed CPU no other worker holds; False if none is free."""
        if self.cpu is not None:
            return True
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            found = os.lstat(self.directory)
        except OSError as exc:
            self._warn(f"cannot use {self.directory} for CPU locks: {exc}")
            return False
        if self._check_owner and (
            not stat.S_ISDIR(found.st_mode) or found.st_uid != os.getuid() or found.st_mode & 0o022
        ):
            self._warn(f"{self.directory} is not a directory of this user's that only it may write to")
            return False
        cpus = sorted(self.allowed)
        first = random.randrange(len(cpus))
        for cpu in cpus[first:] + cpus[:first]:
            descriptor = self._take(cpu)
            if descriptor is None:
                continue
            try:
                set_every_thread({cpu})
            except OSError as exc:  # the CPUs this process may use changed under it (its cgroup's cpuset)
                self._warn(f"cannot pin to CPU {cpu}: {exc}")
                self._go_back()
                os.close(descriptor)
                return False
            self._lock, self.cpu = descriptor, cpu
            log.debug("busy on the interpreter: every thread now runs on CPU %d", cpu)
            return True
        return False

    def _take(self, cpu: int) -> int | None:
        """The lock file of `cpu`, held; None if another process holds it or it cannot be opened."""
        import fcntl  # POSIX only, like pinning itself (can_pin)

        path = os.path.join(self.directory, f"cpu-{cpu}.lock")
        try:
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            self._warn(f"cannot open the CPU lock {path}: {exc}")
            return None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(descriptor)
            return None
        return descriptor

    def unpin(self) -> None:
        """Let every thread run on every allowed CPU again, and free the CPU for other workers."""
        if self.cpu is None or self._lock is None:
            return
        descriptor, cpu, self._lock, self.cpu = self._lock, self.cpu, None, None
        self._go_back()
        os.close(descriptor)  # releases the flock
        log.debug("threads run on any CPU again (left CPU %d)", cpu)

    def _forget_in_child(self) -> None:
        """In a child forked while pinned: the lock stays the parent's, and the child may use every CPU."""
        if self._lock is None:
            return
        os.close(self._lock)  # the parent's descriptor still holds the flock
        self._lock = self.cpu = None
        self._go_back()

    def _warn(self, message: str) -> None:
        """Log why pinning is impossible, once: the pacer asks again whenever the worker is busy."""
        if not self._warned:
            self._warned = True
            log.warning("%s; threads keep running on every CPU", message)

    def _go_back(self) -> None:
        try:
            set_every_thread(self.allowed)
        except OSError as exc:
            log.warning("cannot let the threads run on every CPU again: %s", exc)
