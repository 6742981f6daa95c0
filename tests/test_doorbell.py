"""The doorbell: the thread that ends the exchanger's wait on the broker for the runners."""

from __future__ import annotations

import threading

from taskutils.worker.doorbell import Doorbell

from .conftest import wait_for


class SlowBroker:
    """A broker whose interrupt blocks until released, and fails as told."""

    def __init__(self, failures: list[Exception] | None = None):
        self.failures = failures or []
        self.release = threading.Event()
        self.entered = threading.Event()
        self.rings = 0
        self.in_progress = False

    def interrupt(self, queues, consumer) -> None:
        self.in_progress = True
        self.entered.set()
        try:
            self.release.wait(5)
            if self.failures:
                raise self.failures.pop(0)
            self.rings += 1
        finally:
            self.in_progress = False


def test_close_waits_for_a_ring_under_way():
    """The worker closes the broker's connections right after closing the doorbell: a ring still
    under way would read from a closed connection."""
    broker = SlowBroker()
    doorbell = Doorbell(broker, ("q",), "c")
    doorbell.ring()
    assert broker.entered.wait(5)
    threading.Timer(0.2, broker.release.set).start()
    doorbell.close(timeout=5)
    assert not broker.in_progress
    assert broker.rings == 1


def test_a_ring_that_fails_in_any_way_leaves_the_doorbell_working():
    broker = SlowBroker(failures=[AttributeError("'NoneType' object has no attribute 'readline'")])
    broker.release.set()
    doorbell = Doorbell(broker, ("q",), "c")
    try:
        doorbell.ring()
        wait_for(lambda: not broker.failures, what="the failing ring")
        wait_for(lambda: not broker.in_progress, what="the failing ring to end")
        doorbell.ring()
        wait_for(lambda: broker.rings == 1, what="the next ring")
    finally:
        doorbell.close(timeout=5)
