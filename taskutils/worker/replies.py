"""What an exchange's reply means to the ledger: settlements applied, refused (logged), or not
applied because their follow-up tasks were refused (settled otherwise), and new claims."""

from __future__ import annotations

import logging
from typing import Callable

from ..backends.records import Claim, Exchange, ExchangeReply, Settlement
from ..logs import task_name
from .ledger import ClaimLedger

log = logging.getLogger("taskutils.worker")


def record_reply(
    ledger: ClaimLedger, request: Exchange, reply: ExchangeReply, sent_at: float,
    follow_ups_refused: Callable[[Settlement, str], Settlement],
) -> list[Claim]:
    """Record `reply` to `request` (sent at `sent_at`) in the ledger; returns the claims for the runners."""
    settled, applied = request.settlements, reply.applied
    if reply.unsettled:  # their follow-up tasks were refused: each claim is still held, and ends otherwise
        ledger.settle_again([follow_ups_refused(settled[k], reply.unsettled_reason) for k in reply.unsettled])
        kept = [k for k in range(len(settled)) if k not in reply.unsettled]
        settled, applied = [settled[k] for k in kept], [applied[k] for k in kept]
    replied = ledger.replied(
        request.queue, settled, applied, request.want, reply.claims, sent_at, reply.next_due,
        reply.capped, reply.paused, reply.work_due,
    )
    for settlement, done in replied.refused:
        if done is None:
            log.info("task %s: its outcome was sent again after the reply was lost, and refused: most likely "
                     "the first attempt settled it", task_name(settlement.claim))
        else:
            log.warning("task %s: its lease had moved on (handed back at shutdown, or this worker stalled past "
                        "the visibility timeout); its outcome here is dropped and the task's current owner "
                        "decides", task_name(settlement.claim))
    return replied.claims
