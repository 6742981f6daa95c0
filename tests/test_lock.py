"""LockWrapper: in-process and over Redis (leases renewed while held, freed when the holder dies)."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
import redis

from taskutils import BrokerError, LockLost, LockWrapper
from taskutils.context import current_backend

from .conftest import wait_for


def run_concurrently(calls, threads=4):
    """Run each callable on its own thread and wait for them all."""
    workers = [threading.Thread(target=call) for call in calls for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)


class Probe:
    """Counts how many callers are inside at once."""

    def __init__(self):
        self.inside = self.peak = 0
        self.guard = threading.Lock()

    def __call__(self):
        with self.guard:
            self.inside += 1
            self.peak = max(self.peak, self.inside)
        time.sleep(0.01)
        with self.guard:
            self.inside -= 1


def test_unnamed_lock_is_named_after_where_it_was_made():
    lock = LockWrapper()
    assert lock.name == f"{__name__}:{test_unnamed_lock_is_named_after_where_it_was_made.__code__.co_firstlineno + 1}"


def test_embedded_lock_serializes_every_wrapped_function(monkeypatch):
    monkeypatch.delenv("TASKUTILS_REDIS_URL", raising=False)
    with_a_lock, probe = LockWrapper(), Probe()
    f, g = with_a_lock(probe), with_a_lock(probe)
    run_concurrently([f, g])
    assert probe.peak == 1


def test_same_name_shares_the_lock_and_nesting_does_not_deadlock(monkeypatch):
    monkeypatch.delenv("TASKUTILS_REDIS_URL", raising=False)
    name = uuid.uuid4().hex
    first, second, probe = LockWrapper(name), LockWrapper(name), Probe()
    run_concurrently([first(probe), second(probe)])
    assert probe.peak == 1
    with first, second, first:
        pass


def test_redis_lock_excludes_across_clients(redis_url):
    name = uuid.uuid4().hex
    probe = Probe()
    locks = [LockWrapper(name, redis_url=redis_url, timeout=5) for _ in range(3)]
    run_concurrently([lock(probe) for lock in locks], threads=3)
    assert probe.peak == 1


def test_redis_lock_comes_from_the_environment(redis_url, monkeypatch):
    monkeypatch.setenv("TASKUTILS_REDIS_URL", redis_url)
    lock = LockWrapper("from-env")
    with lock:
        assert redis.Redis.from_url(redis_url).exists("tu:lock:from-env")


def test_lease_is_renewed_while_held(redis_url):
    name = uuid.uuid4().hex
    holder = LockWrapper(name, redis_url=redis_url, timeout=0.3)
    other = redis.Redis.from_url(redis_url).lock("tu:lock:" + name, timeout=0.3)
    with holder:
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            assert not other.acquire(blocking=False)
            time.sleep(0.05)
    assert other.acquire(blocking=False)


def test_lock_of_a_dead_holder_frees_after_its_lease(redis_url):
    name = uuid.uuid4().hex
    dead = redis.Redis.from_url(redis_url).lock("tu:lock:" + name, timeout=0.3)
    assert dead.acquire(blocking=False)  # never released, never renewed: its holder "died"
    started = time.monotonic()
    with LockWrapper(name, redis_url=redis_url):
        assert time.monotonic() - started < 10


def test_holder_learns_it_lost_the_lease(redis_url):
    name = uuid.uuid4().hex
    client = redis.Redis.from_url(redis_url)
    with pytest.raises(LockLost, match="expired while held"):
        with LockWrapper(name, redis_url=redis_url, timeout=0.3):
            client.delete("tu:lock:" + name)  # what a stall past the lease looks like to Redis


def test_nesting_two_redis_locks_of_one_name_does_not_deadlock(redis_url):
    name = uuid.uuid4().hex
    with LockWrapper(name, redis_url=redis_url), LockWrapper(name, redis_url=redis_url):
        pass


def test_a_refused_renewal_is_tried_again_not_given_up(caplog):
    """A renewal the broker refuses (an error reply, Redis out of memory) is logged and tried
    again at the next period; the renewing thread goes on."""
    renewals = []

    class RefusedOnce:
        leased = True

        def acquire(self):
            pass

        def renew(self):
            renewals.append(time.monotonic())
            if len(renewals) == 1:
                raise BrokerError("OOM command not allowed (injected)")
            return True

        def release(self):
            return True

    class Backend:
        def lock(self, name, lease):
            return RefusedOnce()

    token = current_backend.set(Backend())  # type: ignore[arg-type]
    try:
        with LockWrapper("refused-once", timeout=0.3):
            wait_for(lambda: len(renewals) >= 3, timeout=5, what="renewals after the refused one")
    finally:
        current_backend.reset(token)
    assert any("could not renew the lease" in r.getMessage() and "injected" in r.getMessage() for r in caplog.records)
