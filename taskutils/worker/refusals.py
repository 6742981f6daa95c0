"""Queues the broker refuses: an error reply (a key of the wrong type, Redis out of memory).

Such a queue is parked: its settlements wait apart (their leases are still renewed), it is asked
for nothing, and it is tried again after a delay that doubles from BROKEN_FIRST_DELAY up to
BROKEN_MAX_DELAY; it is logged once when it starts and at most every BROKEN_LOG_SECONDS after.
A worker of several queues goes on serving the others.
"""

from __future__ import annotations

import logging
from typing import NamedTuple, Sequence

from ..backends.records import Exchange, Settlement
from ..errors import BrokerError
from .clock import Clock
from .ledger import ClaimLedger

log = logging.getLogger("taskutils.worker")
BROKEN_FIRST_DELAY, BROKEN_MAX_DELAY = 0.1, 5.0  # seconds between tries of a refused queue
BROKEN_LOG_SECONDS = 60.0  # a refused queue is logged at most this often


class Refusal(NamedTuple):
    """When a refused queue is tried again, the delay after that, the settlements set aside
    meanwhile, and when it was last logged."""

    retry_at: float
    delay: float
    settlements: list[Settlement]
    logged_at: float


class RefusedQueues:
    """The refused queues of one worker, and what waits for them."""

    def __init__(self, ledger: ClaimLedger, clock: Clock):
        self._ledger, self._clock = ledger, clock
        self._refused: dict[str, Refusal] = {}

    def parked(self, queue: str) -> bool:
        """The queue waits for its next try."""
        refusal = self._refused.get(queue)
        return refusal is not None and refusal.retry_at > self._clock.now()

    def park(self, request: Exchange, error: BrokerError) -> None:
        """The broker refused this exchange: its settlements wait with its queue."""
        self._ledger.set_aside(request.settlements, request.want)
        self.refuse(request.queue, error, request.settlements)

    def refuse(self, queue: str, error: BrokerError, settlements: Sequence[Settlement] = ()) -> None:
        """The broker refused a call for this queue: it waits, doubling its delay each time."""
        now, earlier = self._clock.now(), self._refused.get(queue)
        delay = BROKEN_FIRST_DELAY if earlier is None else min(earlier.delay * 2, BROKEN_MAX_DELAY)
        logged_at = -BROKEN_LOG_SECONDS if earlier is None else earlier.logged_at
        if now - logged_at >= BROKEN_LOG_SECONDS:
            log.error("queue %r cannot be served, retrying with backoff: %s", queue, error)
            logged_at = now
        waiting = [*(earlier.settlements if earlier is not None else []), *settlements]
        self._refused[queue] = Refusal(now + delay, delay, waiting, logged_at)

    def set_aside(self, queue: str, settlements: list[Settlement]) -> None:
        """Settlements of a parked queue wait with it."""
        self._ledger.set_aside(settlements, 0)
        self._refused[queue].settlements.extend(settlements)

    def give_back_due(self) -> None:
        """Queues whose delay is over get their settlements back, to be sent again."""
        for name, refusal in self._refused.items():
            if refusal.settlements and refusal.retry_at <= self._clock.now():
                self._ledger.unsent_again(refusal.settlements, 0)
                self._refused[name] = refusal._replace(settlements=[])

    def served(self, queue: str) -> None:
        """The broker took an exchange of this queue: it is no longer refused."""
        if self._refused.pop(queue, None) is not None:
            log.info("queue %r is served again", queue)

    def until_retry(self, wait: float) -> float:
        """`wait`, or less if a parked queue is due sooner."""
        now = self._clock.now()
        return max(min([wait, *(r.retry_at - now for r in self._refused.values() if r.retry_at > now)]), 0.0)
