"""Time as the worker's parts see it: one object, so that tests can drive them on a clock of their own."""

from __future__ import annotations

import threading
import time


class Clock:
    """Monotonic seconds, and waiting for an event for at most some seconds."""

    def now(self) -> float:
        return time.monotonic()

    def wait(self, event: threading.Event, timeout: float) -> bool:
        """Wait until `event` is set or `timeout` seconds pass; True if it was set."""
        return event.wait(timeout)
