"""Confirming stale claims: a claim that waited in a stalled worker long enough for its lease to
have moved on is renewed before it starts; one whose lease is lost is dropped, unrun."""

from __future__ import annotations

import logging
from typing import Callable, Iterable

from ..backends.base import Broker
from ..backends.records import Claim
from ..errors import BrokerError
from .clock import Clock
from .ledger import ClaimLedger
from .refusals import RefusedQueues

log = logging.getLogger("taskutils.worker")


def confirm_stale(
    stale: list[Claim], broker: Broker, ledger: ClaimLedger, refused: RefusedQueues, lease: float,
    hand_out: Callable[[Iterable[Claim]], None], clock: Clock,
) -> None:
    """Renew `stale` claims queue by queue and hand those still held to the runners; a queue the
    broker refuses, or one parked for refusing, has its claims confirmed later."""
    by_queue: dict[str, list[Claim]] = {}
    for claim in stale:
        by_queue.setdefault(claim.queue, []).append(claim)
    queues = list(by_queue)
    for number, name in enumerate(queues):
        claims = by_queue[name]
        if refused.parked(name):
            ledger.confirm_later(claims)
            continue
        sent_at = clock.now()
        try:
            lost = broker.renew(name, {c.task_id: c.token for c in claims}, lease)
        except BrokerError as exc:
            ledger.confirm_later(claims)
            refused.refuse(name, exc)
            continue
        except BaseException:
            ledger.confirm_later([c for later in queues[number:] for c in by_queue[later]])
            raise
        for task_id in lost:
            log.info("task %s on %r: its lease moved on while this worker stalled; not started here", task_id, name)
        hand_out(ledger.confirmed(claims, lost, sent_at))
