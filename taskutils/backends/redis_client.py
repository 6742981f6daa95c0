"""What the Redis backend needs from redis-py: retries that report outages, error mapping, the lock.

Driver errors are converted here, where they cross into the library: callers see
BackendUnavailable or BrokerError, never redis-py internals.
"""

from __future__ import annotations

import copy
import logging
import socket
from typing import Any, Callable, TypeVar

import redis
import redis.exceptions
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from ..errors import BackendUnavailable, BrokerError
from ..outage import OutageLog

T = TypeVar("T")
log = logging.getLogger("taskutils.redis")


class ReportingRetry(Retry):
    """redis-py's Retry, telling an OutageLog when calls fail and when they work again."""

    def __init__(self, backoff: ExponentialBackoff, retries: int, outage: OutageLog):
        super().__init__(backoff, retries)
        self.outage = outage

    def __deepcopy__(self, memo: dict[int, Any]) -> "ReportingRetry":
        # redis-py copies the Retry into each connection; the copies must share one OutageLog
        return ReportingRetry(copy.deepcopy(self._backoff, memo), self._retries, self.outage)

    def call_with_retry(
        self,
        do: Callable[[], T],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        failures = []

        def reported(error: Exception, *count: int) -> Any:
            failures.append(error)
            self.outage.failed(error)
            return fail(error, *count)

        def retryable(error: Exception) -> bool:  # wrong credentials do not get better by waiting
            return not isinstance(error, redis.exceptions.AuthenticationError) and (
                is_retryable is None or is_retryable(error)
            )

        result = super().call_with_retry(do, reported, retryable, with_failure_count)
        self.outage.succeeded(after_failing=bool(failures))
        return result


def outage_retry(timeout: float) -> ReportingRetry:
    """Backoff from 50 ms doubling to 1 s, for about `timeout` seconds in all."""
    backoff = ExponentialBackoff(cap=1.0, base=0.05)
    retries, total = 0, 0.0
    while total < timeout:
        retries += 1
        total += backoff.compute(retries)
    return ReportingRetry(backoff, retries, OutageLog(log))


def mapped(call: Callable[[], T]) -> T:
    """Run a driver call, turning its failures into BackendUnavailable and BrokerError."""
    try:
        return call()
    except redis.exceptions.AuthenticationError as exc:
        raise BackendUnavailable(f"Redis refused the credentials in the URL: {exc}") from None
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, socket.timeout) as exc:
        raise BackendUnavailable(f"Redis is unreachable: {type(exc).__name__}: {exc}") from None
    except redis.exceptions.ResponseError as exc:
        raise BrokerError(f"Redis refused the operation: {exc}") from None


class RedisLock:
    """redis-py's Lock (an owner token under a lease) as a SharedLock (see base.py)."""

    leased = True

    def __init__(self, client: redis.Redis, name: str, lease: float):
        self._lock = client.lock("tu:lock:" + name, timeout=lease, thread_local=False)

    def acquire(self) -> None:
        mapped(self._lock.acquire)

    def renew(self) -> bool:
        try:
            mapped(self._lock.reacquire)
        except redis.exceptions.LockNotOwnedError:
            return False
        return True

    def release(self) -> bool:
        try:
            mapped(self._lock.release)
        except redis.exceptions.LockError:
            return False
        return True
