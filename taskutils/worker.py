"""The threads of one process consuming queues: claim, run, heartbeat, ack, graceful stop.

One dispatcher thread claims as many tasks as there are free runner threads (one script
call per queue), hands them to the runners, and blocks on the backend when there is no
work. A heartbeat thread renews the leases of running tasks.
"""

from __future__ import annotations

import contextvars
import logging
import os
import queue as queue_module
import socket
import threading
import time
import traceback
import uuid
from typing import Any, Callable, Iterable

from .backends.base import Backend, Claim
from .config import Settings
from .errors import BackendUnavailable, PayloadError
from .task import TaskBody, pack, resolve

log = logging.getLogger("taskutils.worker")

# The backend of the handler or worker running the current task (LockWrapper uses it).
current_backend: contextvars.ContextVar[Backend | None] = contextvars.ContextVar("taskutils_backend", default=None)


def module_allowed(module: str, allowed: Iterable[str]) -> bool:
    """True if `module` is one of `allowed` or a submodule of one."""
    return any(module == name or module.startswith(name + ".") for name in allowed)


def allow_all(module: str) -> bool:
    """The embedded backend's policy: only this process can enqueue, so anything importable runs."""
    return True


def outcome_done(value: Any) -> bytes:
    return pack(["done", value, None])


def outcome_failed(error: str) -> bytes:
    return pack(["failed", None, error])


class Worker:
    """Runs tasks from `settings.queues` on `settings.threads` threads until stopped."""

    def __init__(self, backend: Backend, settings: Settings, allowed: Callable[[str], bool]):
        self.backend = backend
        self.settings = settings
        self.allowed = allowed
        self.consumer = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._inbox: queue_module.SimpleQueue[Claim | None] = queue_module.SimpleQueue()
        self._running: dict[tuple[str, str], Claim] = {}
        self._state = threading.Condition()
        self._free = settings.threads
        self._paused = False
        self._stopping = threading.Event()
        self._idle = threading.Event()  # set once no runner is left: the heartbeat may end
        self._threads: list[threading.Thread] = []
        self._heart: threading.Thread | None = None

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the runner, dispatcher and heartbeat threads."""
        for index in range(self.settings.threads):
            self._spawn(self._run_loop, f"taskutils-runner-{index}")
        self._spawn(self._dispatch_loop, "taskutils-dispatcher")
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

    def resume(self) -> None:
        """Claim tasks again."""
        with self._state:
            self._paused = False
            self._state.notify_all()
        self.backend.interrupt(self.settings.queues, self.consumer)

    def stop(self, timeout: float | None = None) -> bool:
        """Stop claiming, let running tasks finish (up to `timeout` seconds); True if all finished."""
        self._stopping.set()
        with self._state:
            self._state.notify_all()
        try:
            self.backend.interrupt(self.settings.queues, self.consumer)
        except BackendUnavailable:
            pass
        for _ in range(self.settings.threads):
            self._inbox.put(None)
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if deadline is None else max(deadline - time.monotonic(), 0))
        finished = not any(thread.is_alive() for thread in self._threads)
        if finished:
            self._idle.set()
            if self._heart is not None:
                self._heart.join()
        return finished

    @property
    def running(self) -> int:
        """How many tasks this worker is running now."""
        with self._state:
            return len(self._running)

    # -- dispatcher ---------------------------------------------------------------------------

    def _dispatch_loop(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                self.dispatch_once()
                failures = 0
            except BackendUnavailable as exc:
                failures += 1
                if failures == 1:
                    log.warning("broker unavailable, retrying: %s", exc)
                self._stopping.wait(min(0.1 * 2**failures, self.settings.sleep_seconds))
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
            batch = self.backend.claim(
                name, self.consumer, free - handed, self.settings.visibility_timeout, self.settings.sleep_seconds
            )
            self._hand_out(batch.claims)
            handed += len(batch.claims)
            if batch.next_due is not None:
                next_due = min(next_due, batch.next_due)
            if handed == free:
                break
        if handed == 0:
            self.backend.wait(self.settings.queues, self.consumer, next_due)
        return handed

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
                self.execute(claim)
            except Exception:
                log.exception("could not settle task %s; its lease will hand it back", claim.task_id)
            finally:
                with self._state:
                    self._running.pop((claim.queue, claim.task_id), None)
                    self._free += 1
                    self._state.notify_all()

    def execute(self, claim: Claim) -> None:
        """Run one claimed task and record its outcome: done, retried or failed."""
        try:
            body = TaskBody.decode(claim.body)
            func = resolve(body.ref, self.allowed)
        except (ValueError, ImportError, PermissionError) as exc:
            self._fail(claim, f"{type(exc).__name__}: {exc}", ref=None)
            return
        try:
            value = func(*body.args, **body.kwargs)
        except BaseException:  # a worker survives any task, SystemExit included
            self._failed_attempt(claim, body, traceback.format_exc())
            return
        try:
            outcome = outcome_done(value)
        except (TypeError, ValueError, OverflowError):
            error = PayloadError(f"return value of {body.ref} ({type(value).__name__}) cannot be encoded with msgpack")
            self._fail(claim, f"PayloadError: {error}", ref=body.ref)
            return
        self._settle(claim, lambda: self.backend.ack(claim, outcome, self.settings.result_ttl))

    def _failed_attempt(self, claim: Claim, body: TaskBody, error: str) -> None:
        failures = claim.failures + 1
        if failures <= body.repeats_on_failure:
            delay = body.retry_delay_after(failures)
            log.warning(
                "task %s (%s) failed, retry %d of %d in %.3gs:\n%s",
                claim.task_id, body.ref, failures, body.repeats_on_failure, delay, error,
            )
            self._settle(claim, lambda: self.backend.retry(claim, delay))
        else:
            self._fail(claim, error, ref=body.ref)

    def _fail(self, claim: Claim, error: str, ref: str | None) -> None:
        log.error("task %s (%s) failed for good after %d attempt(s):\n%s", claim.task_id, ref, claim.failures + 1, error)
        record = pack(
            {
                "id": claim.task_id,
                "ref": ref,
                "body": claim.body,
                "error": error,
                "failures": claim.failures + 1,
                "crashes": claim.crashes,
                "failed_at": time.time(),
                "worker": self.consumer,
            }
        )
        outcome = outcome_failed(error)
        self._settle(claim, lambda: self.backend.fail(claim, outcome, record, self.settings.result_ttl))

    def _settle(self, claim: Claim, transition: Callable[[], bool]) -> None:
        """Apply a transition, retrying through broker outages until the lease would have expired."""
        deadline = time.monotonic() + self.settings.visibility_timeout
        delay = 0.05
        while True:
            try:
                if not transition():
                    log.warning("task %s: lease %d was lost before it finished; its new owner decides", claim.task_id, claim.token)
                return
            except BackendUnavailable:
                if time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    # -- heartbeat ----------------------------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        period = self.settings.visibility_timeout / 3
        while not self._idle.wait(period):
            try:
                self.heartbeat()
            except BackendUnavailable as exc:
                log.warning("heartbeat failed: %s", exc)
            except Exception:
                log.exception("heartbeat error; going on")

    def heartbeat(self) -> None:
        """Renew the leases of every running task; log the ones that were lost."""
        with self._state:
            by_queue: dict[str, dict[str, int]] = {}
            for claim in self._running.values():
                by_queue.setdefault(claim.queue, {})[claim.task_id] = claim.token
        for name, leases in by_queue.items():
            for task_id in self.backend.renew(name, leases, self.settings.visibility_timeout):
                log.warning("task %s: lease lost (worker stalled past the visibility timeout)", task_id)
