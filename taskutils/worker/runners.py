"""The runner pool: threads that run claimed tasks and record how each ended in the ledger.

Runners never call the broker: the exchanger sends what they record. A runner wakes the
exchanger only when the ledger says a round trip is due.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import TYPE_CHECKING, Callable, Iterable

from ..backends.base import Backend
from ..backends.records import Claim, Ending, Settlement
from ..context import TaskContext, current_backend, running, running_token_reset
from .clock import Clock
from .ledger import ClaimLedger
from .ledger_records import Start
from .observer import Observer

if TYPE_CHECKING:
    from ..handler import TaskHandler

log = logging.getLogger("taskutils.worker")


class RunnerPool:
    """`threads` runner threads taking claims from one inbox."""

    def __init__(
        self, threads: int, ledger: ClaimLedger, run: Callable[[Claim], Settlement], notify: Callable[[], None],
        backend: Backend, producers: Callable[[str], TaskHandler], clock: Clock | None = None,
        observer: Observer | None = None,
    ):
        self._threads, self._ledger, self._run, self._notify = threads, ledger, run, notify
        self._backend, self._producers, self._clock = backend, producers, clock or Clock()
        self._observer = observer or Observer()
        self._inbox: queue.SimpleQueue[Claim | None] = queue.SimpleQueue()
        self._started: list[threading.Thread] = []
        self._guard = threading.Lock()
        self._stopped = False

    def start(self) -> None:
        for index in range(self._threads):
            thread = threading.Thread(target=self._loop, name=f"taskutils-runner-{index}", daemon=True)
            thread.start()
            self._started.append(thread)

    def hand_out(self, claims: Iterable[Claim]) -> None:
        """Claims for the runners, taken in this order; once the pool stops, they go back unstarted."""
        with self._guard:
            if not self._stopped:
                for claim in claims:
                    self._inbox.put(claim)
                return
        for claim in claims:
            self._ledger.take(claim)  # the ledger is stopping: this hands it back
        self._notify()

    def stop(self) -> None:
        """Each runner ends once the claims handed out before this are taken (and handed back)."""
        with self._guard:
            self._stopped = True
            for _ in self._started:
                self._inbox.put(None)

    def join(self, timeout: float | None) -> bool:
        """Wait up to `timeout` seconds for every runner to end; True if they all did."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._started:
            thread.join(None if deadline is None else max(deadline - time.monotonic(), 0))
        return not self.alive()

    def alive(self) -> bool:
        return any(thread.is_alive() for thread in self._started)

    def _loop(self) -> None:
        current_backend.set(self._backend)
        claim = self._inbox.get()
        while claim is not None:
            try:
                self._take(claim)
            except BaseException:  # a bug here must not end the thread: every later claim would wait for it
                log.exception("runner error on task %s; going on", claim.task_id)
            claim = self._inbox.get()

    def _take(self, claim: Claim) -> None:
        start = self._ledger.take(claim)
        if start is Start.RUN:
            began = self._clock.now()
            context = TaskContext(
                claim.task_id, claim.queue, claim.key, claim.failures + 1, self._backend, self._producers
            )
            token = running(context)
            try:
                settlement = self._run(claim)
            finally:
                running_token_reset(token)
            if context.follow_ups and settlement.ending is Ending.DONE:
                settlement = settlement._replace(follow_ups=tuple(context.follow_ups))
            if self._ledger.finished(settlement, self._clock.now() - began):
                self._notify()
        elif start is not Start.DROP:  # handed back or to confirm: the exchanger sends it
            if start is Start.HAND_BACK:
                self._observer.handed_back(claim)
            self._notify()
