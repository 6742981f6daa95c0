"""A worker's last exchanges, as its process ends: the outcomes it has not sent, and every claim
it still holds handed back to its queue."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from ..backends.base import Backend
from ..backends.records import Ending, Exchange, Settlement
from ..errors import BackendUnavailable, BrokerError

log = logging.getLogger("taskutils.worker")


def settle_at_exit(backend: Backend, consumer: str, settlements: Sequence[Settlement], result_ttl: float) -> int:
    """Send `settlements` at once, one exchange per queue; a done task whose follow-ups are
    refused goes back to its queue to run again. Returns how many tasks went back unfinished."""
    by_queue: dict[str, list[Settlement]] = {}
    for settlement in settlements:
        by_queue.setdefault(settlement.claim.queue, []).append(settlement)
    returned = 0
    for queue, settling in by_queue.items():
        try:
            reply = backend.exchange(Exchange(queue, consumer, settling, result_ttl=result_ttl))
            if reply.unsettled:  # done, but its follow-ups were refused: it runs again later
                log.warning("%d task(s) done, but their follow-up tasks were refused (%s): handed back to run again",
                            len(reply.unsettled), reply.unsettled_reason)
                backend.exchange(Exchange(queue, consumer, [Settlement(settling[k].claim, Ending.HAND_BACK)
                                                            for k in reply.unsettled]))
        except (BackendUnavailable, BrokerError) as exc:
            log.warning("could not hand %d task(s) back (%s); their leases will expire", len(settling), exc)
            continue
        returned += sum(bool(done) and s.ending is Ending.HAND_BACK for s, done in zip(settling, reply.applied))
    if returned:
        log.warning("handed %d running task(s) back to the queue", returned)
    return returned
