"""The worker's lifecycle: start, pause, resume, stop, hand back. Only that: the parts do the work.

    ledger      what the worker holds and when to talk to the broker (pure bookkeeping)
    runners     threads that run claimed tasks
    exchanger   the one thread that settles and claims on the hot path, and waits for work
    heartbeat   renews held leases and the worker's registration
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from typing import Callable

from ..backends.base import Backend
from ..backends.records import Exchange
from ..config import Settings
from ..errors import BackendUnavailable, BrokerError
from .clock import Clock
from .exchanger import Exchanger
from .execution import TaskExecutor
from .heartbeat import Heartbeat
from .leaving import settle_at_exit
from .ledger import ClaimLedger
from .producers import Producers
from .observer import Observer
from .runners import RunnerPool

log = logging.getLogger("taskutils.worker")
STALL_MARGIN = 10.0  # seconds past the longest turn an exchanger may take before it counts as stalled
PING_TIMEOUT = 1.0  # seconds /readyz waits for the broker's answer
REPORTED_STARTS = 200  # running tasks whose start time the registration carries, at most


class Worker:
    """Runs tasks of `settings.queues` on `settings.threads` threads until stopped."""

    def __init__(
        self, backend: Backend, settings: Settings, allowed: Callable[[str], bool],
        clock: Clock | None = None, observer: Observer | None = None,
    ):
        self.backend, self.settings = backend, settings
        self.observer = observer = observer or Observer()
        clock = clock or Clock()
        self.consumer = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._ledger = ClaimLedger(
            settings.threads, settings.visibility_timeout, settings.sleep_seconds, settings.queues, clock
        )
        executor = TaskExecutor(settings, allowed, self.consumer, observer)
        self._exchanger = Exchanger(
            backend, self._ledger, settings, self.consumer, self._hand_out, executor.follow_ups_refused, clock, observer
        )
        self._runners = RunnerPool(
            settings.threads, self._ledger, executor.run, self._exchanger.notify, backend, Producers(backend, settings),
            clock, observer,
        )
        self._heartbeat = Heartbeat(
            backend, self._ledger, self.consumer, settings.visibility_timeout, self._info, clock, settings.queues,
            observer,
        )

    def _hand_out(self, claims: list) -> None:
        self._runners.hand_out(claims)

    def _info(self) -> dict[str, str]:
        return {
            "host": socket.gethostname(),
            "pid": str(os.getpid()),
            "threads": str(self.settings.threads),
            "queues": ",".join(self.settings.queues),
            "running": str(self.running),
            "started": ",".join(f"{task_id}@{at:.3f}" for task_id, at in list(self.observer.running_since().items())[:REPORTED_STARTS]),
        }

    def stalled(self) -> str | None:
        """Why this worker's own loops are not turning, or None: read from memory, no broker
        call, so a broker outage does not make a worker look dead (the exchanger retries through
        one for up to broker_timeout per call)."""
        if not self._runners.alive() and self.settings.threads:
            return "runner threads are gone"
        if not self._heartbeat.alive():
            return "the heartbeat thread is gone"
        silent = time.monotonic() - self._exchanger.turned_at
        if silent > 2 * (self.settings.sleep_seconds + self.settings.broker_timeout) + STALL_MARGIN:
            return f"the exchanger has not turned for {silent:.0f}s"
        return None

    def unready(self) -> str | None:
        """Why this worker should not count as serving, or None: stopping, the broker not
        answering at once, or its registration not renewed for a lease's time."""
        if self._ledger.stopping:
            return "draining: stopping"
        if not self.backend.ping(PING_TIMEOUT):
            return f"the broker did not answer a PING within {PING_TIMEOUT:g}s"
        registered = self._heartbeat.registered_at
        if registered is None or time.monotonic() - registered > self.settings.visibility_timeout:
            return "the heartbeat has not registered this worker within the visibility timeout"
        return None

    @property
    def running(self) -> int:
        """How many tasks this worker is running now."""
        return self._ledger.running

    def start(self) -> None:
        """Register (BackendUnavailable if the broker cannot be reached), then start the threads."""
        self._heartbeat.register()
        self._runners.start()
        self._exchanger.start()
        self._heartbeat.start()

    def pause(self) -> None:
        """Stop claiming new tasks; running ones go on."""
        self._ledger.pause(True)
        self._exchanger.notify()

    def resume(self) -> None:
        """Claim tasks again."""
        self._ledger.pause(False)
        self._exchanger.notify()

    def stop(self, timeout: float | None = None, hand_back_running: bool = True) -> bool:
        """Stop claiming, hand back claims not started, and let running tasks finish for up to
        `timeout` seconds; True if they all did. Tasks still running then are handed back to
        the queue at once when `hand_back_running` (the process is about to exit, ending them);
        otherwise they keep their leases until they end, and are settled then."""
        self._ledger.stop()
        self._exchanger.notify()
        self._runners.stop()
        finished = self._runners.join(timeout)
        if not finished and not hand_back_running:
            log.warning("%d task(s) still running: they keep their leases until they end", self.running)
            threading.Thread(target=self._finish_after_runners, name="taskutils-finishing", daemon=True).start()
            return False
        if not finished:
            self.hand_back()
        self._finish()
        return finished

    def _finish_after_runners(self) -> None:
        self._runners.join(None)
        self._finish()

    def _finish(self) -> None:
        """Send what is left, then stop the exchanger and the heartbeat, and unregister."""
        self._exchanger.finish()
        self._exchanger.join(self.settings.sleep_seconds + self.settings.broker_timeout)
        self._heartbeat.stop(self.settings.broker_timeout)
        try:
            for queue in self.settings.queues:  # the history's last counts, which no exchange carried
                tally = self.observer.take_tally(queue, every=True)
                if tally:
                    self.backend.exchange(Exchange(queue, self.consumer, tally=tally))
            self.backend.unregister_worker(self.consumer)
        except (BackendUnavailable, BrokerError):
            pass  # the registration expires by itself

    def hand_back(self) -> int:
        """Give every claim held here back to its queue now (the process is about to end, and
        the tasks still running with it), with the outcomes of those that finished; returns how
        many went back unfinished."""
        return settle_at_exit(self.backend, self.consumer, self._ledger.abandon(), self.settings.result_ttl)
