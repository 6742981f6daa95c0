"""Broker outages as a process sees them: one warning when one starts, one line when it ends."""

from __future__ import annotations

import logging
import threading
import time

# A call that worked at once ends an outage only this long after the last failure: while a
# server shuts down, calls on connections still open can succeed between refused ones.
SETTLE_SECONDS = 1.0


class OutageLog:
    """Shared by every connection of a backend, so an outage is logged once, not once per call."""

    def __init__(self, log: logging.Logger):
        self._log = log
        self._guard = threading.Lock()
        self._since: float | None = None
        self._last_failure = 0.0

    def failed(self, error: Exception) -> None:
        """Note a failed broker call; warns only for the first failure of an outage."""
        with self._guard:
            self._last_failure = time.monotonic()
            if self._since is None:
                self._since = self._last_failure
                self._log.warning("broker unreachable, retrying with backoff: %s: %s", type(error).__name__, error)

    def succeeded(self, after_failing: bool) -> None:
        """Note a broker call that worked (`after_failing`: it was retried); may end the outage."""
        if self._since is None:
            return
        with self._guard:
            settled = after_failing or time.monotonic() - self._last_failure >= SETTLE_SECONDS
            if self._since is not None and settled:
                self._log.warning("broker reachable again after %.1fs", time.monotonic() - self._since)
                self._since = None
