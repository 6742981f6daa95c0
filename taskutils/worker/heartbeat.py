"""The heartbeat: renews the leases of every claim a worker holds, and its registration, and
computes more run times for cron schedules short of them and drops unique values held past
their time (backends/base.py refill_cron, sweep_unique).

It beats every third of the visibility timeout. A lease found lost belonged to a task this
worker started and then stalled on past the visibility timeout (SIGSTOP, a long pause): that
task may be running elsewhere too, and the warning says so. Claims being settled are not
renewed (a settled lease is no longer held, and that is no loss).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Mapping

from ..backends.base import Backend
from ..errors import BackendUnavailable, BrokerError
from ..logs import task_name
from .clock import Clock
from .ledger import ClaimLedger
from .observer import Observer

log = logging.getLogger("taskutils.worker")


class Heartbeat:
    """A thread that calls `beat` every `visibility_timeout / 3` seconds until stopped."""

    def __init__(
        self, backend: Backend, ledger: ClaimLedger, consumer: str, lease: float,
        info: Callable[[], Mapping[str, str]], clock: Clock | None = None, queues: tuple[str, ...] = (),
        observer: Observer | None = None,
    ):
        self._backend, self._ledger, self._consumer, self._lease = backend, ledger, consumer, lease
        self._info, self._clock, self._queues = info, clock or Clock(), queues
        self._observer = observer or Observer()
        self.registered_at: float | None = None  # monotonic time of the last registration that went through
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="taskutils-heartbeat", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        self._stopped.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stopped.wait(self._lease / 3):
            try:
                self.beat()
            except (BackendUnavailable, BrokerError) as exc:  # the backend has logged an outage once
                self._observer.broker_error()
                log.debug("heartbeat failed: %s", exc)
            except Exception:
                log.exception("heartbeat error; going on")

    def beat(self) -> None:
        """Renew every held lease, queue by queue (one the broker refuses does not stop the
        others), then this worker's registration."""
        for queue, leases in self._ledger.renewals().items():
            sent_at = self._clock.now()
            try:
                lost = self._backend.renew(queue, leases, self._lease)
            except BrokerError as exc:  # the exchanger reports that queue
                log.debug("could not renew the leases of queue %r: %s", queue, exc)
                continue
            for claim in self._ledger.renewed(queue, leases, lost, sent_at):
                self._observer.lease_lost()
                log.warning(
                    "task %s: lease lost while it ran here (this worker stalled past the visibility timeout of "
                    "%.3gs); another worker may be running it too", task_name(claim), self._lease,
                )
        self._observer.fold()  # the running gauges, for a worker whose tasks all run long
        self.register()
        for queue in self._queues:
            self._backend.refill_cron(queue)
            self._backend.sweep_unique(queue)

    def register(self) -> None:
        self._backend.register_worker(self._consumer, self._info(), self._lease)
        self.registered_at = time.monotonic()

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()
