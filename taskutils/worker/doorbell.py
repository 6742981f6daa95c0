"""The doorbell: ends the exchanger's wait on the broker, for threads that must not call the broker."""

from __future__ import annotations

import logging
import threading

from ..backends.base import Broker
from ..errors import BackendUnavailable, BrokerError

log = logging.getLogger("taskutils.worker")


class Doorbell:
    """Ends the exchanger's wait on the broker, from a thread of its own."""

    def __init__(self, broker: Broker, queues: tuple[str, ...], consumer: str):
        self._broker, self._queues, self._consumer = broker, queues, consumer
        self._rung = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="taskutils-doorbell", daemon=True)
        self._thread.start()

    def ring(self) -> None:
        self._rung.set()

    def close(self, timeout: float) -> None:
        """Stop ringing, and wait up to `timeout` for a ring under way to end (the broker's
        connections may be closed next)."""
        self._closed = True
        self._rung.set()
        self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            self._rung.wait()
            self._rung.clear()
            if self._closed:
                return
            try:
                self._broker.interrupt(self._queues, self._consumer)
            except (BackendUnavailable, BrokerError) as exc:  # the wait ends by itself within sleep_seconds
                log.debug("could not interrupt the wait: %s", exc)
            except Exception:  # a doorbell that died would leave every wait to end by itself
                log.exception("ringing the doorbell failed; going on")
