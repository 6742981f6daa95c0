"""What the claim ledger records of each claim and answers with: a runner's start, the meaning
of an exchange's reply, the exchanger's next move."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple

from ..backends.records import Claim, Settlement


class Start(enum.Enum):
    """What a runner does with a claim it takes."""

    RUN = "run"
    HAND_BACK = "hand back"  # the worker is stopping: back to the queue unstarted
    CONFIRM = "confirm"  # its lease may have moved on (this worker stalled): the exchanger confirms it first
    DROP = "drop"  # its lease moved on: another worker has it


class Replied(NamedTuple):
    """What a reply means for the exchanger: settlements the broker did not apply (False: the
    lease had moved on; None: unknown after a lost reply), and claims for the runners."""

    refused: list[tuple[Settlement, bool | None]]
    claims: list[Claim]


class Plan(NamedTuple):
    """The exchanger's next move: send `settle` and ask for `want` claims, or else wait `wait`
    seconds, on the broker if `block` (for new work) and locally otherwise (for a runner)."""

    settle: list[Settlement]
    want: int
    wait: float = 0.0
    block: bool = False

    @property
    def send(self) -> bool:
        return bool(self.settle) or self.want > 0


@dataclass
class HeldClaim:
    """One claim in the ledger, and where it stands."""

    claim: Claim
    confirmed_at: float  # when the request that made or last renewed its lease was sent
    running: bool = False
    finished: bool = False  # its settlement is made: waiting to go, set aside, or sent
    settling: bool = False  # its settlement is sent, the reply not read yet


def key_of(claim: Claim) -> tuple[str, str, str]:
    """A claim's place in the ledger: a task claimed again by the same worker (its first lease
    expired while this worker stalled) is another claim, under another token."""
    return claim.queue, claim.task_id, claim.token
