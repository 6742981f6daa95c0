"""The claim ledger's lease bookkeeping (ledger.py): the heartbeat's renewals, and the claims a
runner found stale and the exchanger confirms before they start. On the ledger's state and lock."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from ..backends.records import Claim
from .ledger_records import HeldClaim, key_of


class LeaseBook:
    """The part of ClaimLedger that renews and confirms leases."""

    _lock: threading.Lock
    _held: dict[tuple[str, str, str], HeldClaim]
    _to_confirm: list[Claim]
    _waiting: int
    _stopping: bool
    _hand_back: Callable[[Claim], None]

    # -- what the exchanger confirms -----------------------------------------------------------

    def confirmations(self) -> list[Claim]:
        """Claims a runner found stale, to confirm (renew) before they start."""
        with self._lock:
            claims, self._to_confirm = self._to_confirm, []
            return claims

    def confirmed(self, claims: Sequence[Claim], lost: Sequence[str], sent_at: float) -> list[Claim]:
        """Record a confirmation; returns the claims to hand to the runners again (none when
        stopping: those are handed back)."""
        gone = set(lost)
        ready = []
        with self._lock:
            for claim in claims:
                held = self._held.get(key_of(claim))
                if held is None:
                    continue
                if claim.task_id in gone:
                    del self._held[key_of(claim)]
                elif self._stopping:
                    self._hand_back(claim)
                else:
                    held.confirmed_at = sent_at
                    ready.append(claim)
            self._waiting += len(ready)
        return ready

    def confirm_later(self, claims: Sequence[Claim]) -> None:
        """A confirmation failed: try those claims again."""
        with self._lock:
            self._to_confirm.extend(claims)

    # -- what the heartbeat records ------------------------------------------------------------

    def renewals(self) -> dict[str, dict[str, str]]:
        """Per queue, task id -> token of the claims whose lease the heartbeat renews: every one
        held, but those being settled (a settled lease is no longer held, and that is no loss);
        for a task held twice (claimed again after its first lease expired), the newer claim."""
        by_queue: dict[str, dict[str, str]] = {}
        with self._lock:
            for held in self._held.values():
                if not held.settling:
                    by_queue.setdefault(held.claim.queue, {})[held.claim.task_id] = held.claim.token
        return by_queue

    def renewed(self, queue: str, leases: dict[str, str], lost: Sequence[str], sent_at: float) -> list[Claim]:
        """Record a renewal; returns the claims lost while running (their worker stalled: the task
        may run twice). Lost claims not started are dropped; settled ones are no loss."""
        gone, lost_running = set(lost), []
        with self._lock:
            for task_id, token in leases.items():
                held = self._held.get((queue, task_id, token))
                if held is None or held.settling:
                    continue
                if task_id not in gone:
                    held.confirmed_at = max(held.confirmed_at, sent_at)
                elif held.running:
                    lost_running.append(held.claim)
                elif not held.finished:  # not started: it will not be (a settlement made goes out all the same)
                    del self._held[(queue, task_id, token)]
        return lost_running
