"""The threads of one process consuming queues: claim, run, heartbeat, graceful stop.

One dispatcher thread claims as many tasks as there are free runner threads (one script
call per queue), hands them to the runners, and blocks on the backend when there is no
work. A heartbeat thread renews the leases of running tasks and the worker's registration.
"""

from __future__ import annotations

import contextvars
import logging
import os
import queue as queue_module
import socket
import threading
import time
import uuid
from typing import Callable, Iterable

from .backends.base import Backend, Claim
from .config import Settings
from .errors import BackendUnavailable, BrokerError
from .runner import TaskRunner

log = logging.getLogger("taskutils.worker")
BROKEN_LOG_SECONDS = 60.0

# The backend of the handler or worker running the current task (LockWrapper uses it).
current_backend: contextvars.ContextVar[Backend | None] = contextvars.ContextVar("taskutils_backend", default=None)


def module_allowed(module: str, allowed: Iterable[str]) -> bool:
    """True if `module` is one of `allowed` or a submodule of one."""
    return any(module == name or module.startswith(name + ".") for name in allowed)


def allow_all(module: str) -> bool:
    """The embedded backend's policy: only this process can enqueue, so anything importable runs."""
    return True


class Worker:
    """Runs tasks from `settings.queues` on `settings.threads` threads until stopped."""

    def __init__(self, backend: Backend, settings: Settings, allowed: Callable[[str], bool]):
        self.backend = backend
        self.settings = settings
        self.consumer = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.runner = TaskRunner(backend, settings, allowed, self.consumer)
        self._inbox: queue_module.SimpleQueue[Claim | None] = queue_module.SimpleQueue()
        self._running: dict[tuple[str, str], Claim] = {}
        self._state = threading.Condition()
        self._free = settings.threads
        self._paused = False
        self._stopping = threading.Event()
        self._idle = threading.Event()  # set once no runner is left: the heartbeat may end
        self._threads: list[threading.Thread] = []
        self._dispatcher: threading.Thread | None = None
        self._heart: threading.Thread | None = None
        self._broken: dict[str, float] = {}  # queue -> when its broker error was last logged

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Register, then start the runner, dispatcher and heartbeat threads."""
        self._register()
        for index in range(self.settings.threads):
            self._spawn(self._run_loop, f"taskutils-runner-{index}")
        self._dispatcher = threading.Thread(target=self._dispatch_loop, name="taskutils-dispatcher", daemon=True)
        self._dispatcher.start()
        self._heart = threading.Thread(target=self._heartbeat_loop, name="taskutils-heartbeat", daemon=True)
        self._heart.start()

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def pause(self) -> None:
        """Stop claiming new tasks; running ones go on."""
        with self._state:
            self._paused = True
        self.backend.interrupt(self.settings.queues, self.consumer)

    def resume(self) -> None:
        """Claim tasks again."""
        with self._state:
            self._paused = False
            self._state.notify_all()
        self.backend.interrupt(self.settings.queues, self.consumer)

    def stop(self, timeout: float | None = None) -> bool:
        """Stop claiming and let running tasks finish for up to `timeout` seconds.

        Tasks still running then are handed back to the queue at once. True if all finished."""
        self._stopping.set()
        with self._state:
            self._state.notify_all()
        try:
            self.backend.interrupt(self.settings.queues, self.consumer)
        except BackendUnavailable:
            pass
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._dispatcher is not None:  # first, so that nothing it claimed is left behind the sentinels
            self._dispatcher.join(self.settings.sleep_seconds + self.settings.broker_timeout)
        for _ in range(self.settings.threads):
            self._inbox.put(None)
        for thread in self._threads:
            thread.join(None if deadline is None else max(deadline - time.monotonic(), 0))
        finished = not any(thread.is_alive() for thread in self._threads)
        if not finished:
            self.hand_back()
        self._idle.set()
        if self._heart is not None:
            self._heart.join(self.settings.broker_timeout)
        try:
            self.backend.unregister_worker(self.consumer)
        except BackendUnavailable:
            pass
        return finished

    def hand_back(self) -> int:
        """Give every task still running here back to its queue now; returns how many went back."""
        with self._state:
            claims = list(self._running.values())
        returned = 0
        for claim in claims:
            try:
                returned += self.backend.release(claim)
            except BackendUnavailable as exc:
                log.warning("task %s: could not hand back (%s); its lease will expire", claim.task_id, exc)
        if claims:
            log.warning("handed %d running task(s) back to the queue", returned)
        return returned

    @property
    def running(self) -> int:
        """How many tasks this worker is running now."""
        with self._state:
            return len(self._running)

    # -- dispatcher ---------------------------------------------------------------------------

    def _dispatch_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self.dispatch_once()
            except BackendUnavailable as exc:  # the backend has logged the outage once
                log.debug("claim failed: %s", exc)
                self._stopping.wait(min(1.0, self.settings.sleep_seconds))
            except Exception:
                log.exception("dispatcher error; going on")
                self._stopping.wait(self.settings.sleep_seconds)

    def dispatch_once(self) -> int:
        """Claim for the free runners, or block until work may be ready; returns tasks handed out."""
        with self._state:
            while (self._free == 0 or self._paused) and not self._stopping.is_set():
                self._state.wait(self.settings.sleep_seconds)
            free = self._free
        if self._stopping.is_set():
            return 0
        handed, next_due = 0, self.settings.sleep_seconds
        for name in self.settings.queues:
            try:
                batch = self.backend.claim(
                    name, self.consumer, free - handed, self.settings.visibility_timeout, self.settings.sleep_seconds
                )
            except BrokerError as exc:  # one broken queue must not stop the others
                self._report_broken(name, exc)
                continue
            if self._stopping.is_set():  # stop() began while claiming: these never reach a runner
                for claim in batch.claims:
                    self.backend.release(claim)
                return 0
            self._hand_out(batch.claims)
            handed += len(batch.claims)
            if batch.next_due is not None:
                next_due = min(next_due, batch.next_due)
            if handed == free:
                break
        if handed == 0:
            woken = self.backend.wait(self.settings.queues, self.consumer, next_due)
            if woken is not None and (self._paused or self._stopping.is_set()):
                self.backend.nudge(woken)
        return handed

    def _report_broken(self, queue: str, error: BrokerError) -> None:
        """Log a queue the broker refuses to serve, at most once a minute."""
        now = time.monotonic()
        if now - self._broken.get(queue, -BROKEN_LOG_SECONDS) >= BROKEN_LOG_SECONDS:
            self._broken[queue] = now
            log.error("queue %r cannot be served, skipping it: %s", queue, error)

    def _hand_out(self, claims: list[Claim]) -> None:
        with self._state:
            self._free -= len(claims)
            for claim in claims:
                self._running[(claim.queue, claim.task_id)] = claim
        for claim in claims:
            self._inbox.put(claim)

    # -- runners ------------------------------------------------------------------------------

    def _run_loop(self) -> None:
        current_backend.set(self.backend)
        while True:
            claim = self._inbox.get()
            if claim is None:
                return
            try:
                self.runner.execute(claim)
            except Exception:
                log.exception("could not settle task %s; its lease will hand it back", claim.task_id)
            finally:
                with self._state:
                    self._running.pop((claim.queue, claim.task_id), None)
                    self._free += 1
                    self._state.notify_all()

    # -- heartbeat ----------------------------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        period = self.settings.visibility_timeout / 3
        while not self._idle.wait(period):
            try:
                self.heartbeat()
            except BackendUnavailable as exc:  # the backend has logged the outage once
                log.debug("heartbeat failed: %s", exc)
            except Exception:
                log.exception("heartbeat error; going on")

    def heartbeat(self) -> None:
        """Renew the leases of every running task and this worker's registration."""
        with self._state:
            by_queue: dict[str, dict[str, int]] = {}
            for claim in self._running.values():
                by_queue.setdefault(claim.queue, {})[claim.task_id] = claim.token
        for name, leases in by_queue.items():
            for task_id in self.backend.renew(name, leases, self.settings.visibility_timeout):
                log.warning("task %s: lease lost (this worker stalled past the visibility timeout)", task_id)
        self._register()

    def _register(self) -> None:
        info = {
            "host": socket.gethostname(),
            "pid": str(os.getpid()),
            "threads": str(self.settings.threads),
            "queues": ",".join(self.settings.queues),
            "running": str(self.running),
        }
        self.backend.register_worker(self.consumer, info, self.settings.visibility_timeout)
