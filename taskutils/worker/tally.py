"""The worker's per-minute counts of tasks done, failed and retried, per queue: the history the
dashboard charts (browse.history). They ride with an exchange at most once per TALLY_SECONDS
a queue (Exchange.tally), so the history costs no round trip and almost no Redis work.

What it may miss: a worker killed loses its last TALLY_SECONDS of counts; an exchange whose
reply was lost and that is sent again may count them twice. Charts, not accounts.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

TALLY_SECONDS = 1.0
KINDS = {"done": 0, "failed": 1, "retried": 2}  # the outcomes the history counts


class Tally:
    """Counts since the last exchange that carried them, by queue and minute."""

    def __init__(self, clock: Callable[[], float] = time.time):
        self._clock = clock
        self._lock = threading.Lock()
        self._counts: dict[str, dict[int, list[int]]] = {}
        self._sent_at: dict[str, float] = {}

    def count(self, queue: str, outcome: str, at: float) -> None:
        """A task of `queue` ended with `outcome` at `at` (only done, failed and retried count)."""
        kind = KINDS.get(outcome)
        if kind is None:
            return
        with self._lock:
            by_minute = self._counts.setdefault(queue, {})
            by_minute.setdefault(int(at // 60), [0, 0, 0])[kind] += 1

    def due(self, queue: str) -> bool:
        """Whether TALLY_SECONDS passed since `queue`'s counts were last taken (carried or none)."""
        return self._clock() - self._sent_at.get(queue, 0.0) >= TALLY_SECONDS

    def take(self, queue: str, every: bool = False) -> tuple[tuple[int, int, int, int], ...]:
        """The counts of `queue` for the exchange being sent, if due (or `every`: the worker is
        stopping); else none (they wait for a later exchange)."""
        with self._lock:
            if not (every or self.due(queue)):
                return ()
            self._sent_at[queue] = self._clock()
            if queue not in self._counts:
                return ()
            return tuple((minute, *counts) for minute, counts in sorted(self._counts.pop(queue).items()))
