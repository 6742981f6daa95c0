"""Broker outages as a worker sees them: one warning when one starts, one line when it ends."""

from __future__ import annotations

import logging
import threading
import time


class OutageLog:
    """Shared by a worker's threads so an outage is logged once, not once per loop."""

    def __init__(self, log: logging.Logger):
        self._log = log
        self._guard = threading.Lock()
        self._since: float | None = None

    def failed(self, error: Exception) -> None:
        """Note a failed broker call; warns only for the first failure of an outage."""
        with self._guard:
            if self._since is None:
                self._since = time.monotonic()
                self._log.warning("broker unreachable, retrying with backoff: %s", error)

    def succeeded(self) -> None:
        """Note a successful broker call; logs the end of an outage."""
        if self._since is None:
            return
        with self._guard:
            if self._since is not None:
                self._log.warning("broker reachable again after %.1fs", time.monotonic() - self._since)
                self._since = None

    @property
    def down(self) -> bool:
        return self._since is not None
