"""LockWrapper: serialize every call wrapped by one lock, across hosts when a Redis is known.

With Redis the lock is redis-py's Lock (an owner token under a lease); a background thread
renews the lease while the holder lives, so a holder that dies frees it after `timeout`.
Without Redis it is an in-process lock shared by name.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import threading
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from .backends import backend_for
from .backends.base import Backend, SharedLock
from .backends.local_lock import LocalLock
from .context import current_backend
from .errors import BackendUnavailable, BrokerError, TaskutilsError

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("taskutils.lock")


class LockLost(TaskutilsError):
    """The lock's lease expired while held (the holder stalled); another holder may have run."""


class LockWrapper:
    """A decorator and context manager: all code under the same lock runs one at a time."""

    def __init__(self, name: str | None = None, *, redis_url: str | None = None, timeout: float = 30.0):
        if timeout <= 0:
            raise ValueError(f"timeout (the lock's lease) must be > 0 seconds, got {timeout}")
        self.name = name or _creation_site()
        self.timeout = timeout
        self._redis_url = redis_url or os.environ.get("TASKUTILS_REDIS_URL")
        self._own_backend: Backend | None = None

    def __call__(self, func: F) -> F:
        @functools.wraps(func)
        def locked(*args: Any, **kwargs: Any) -> Any:
            with self:
                return func(*args, **kwargs)

        return locked  # type: ignore[return-value]

    def _backend(self) -> Backend | None:
        if self._redis_url:
            if self._own_backend is None:
                self._own_backend = backend_for(self._redis_url)
            return self._own_backend
        return current_backend.get()

    def __enter__(self) -> "LockWrapper":
        held = _held_here()
        if self.name in held:
            held[self.name].depth += 1
            return self
        backend = self._backend()
        lock: SharedLock = LocalLock(self.name) if backend is None else backend.lock(self.name, self.timeout)
        lock.acquire()
        held[self.name] = _Holding(lock, _Renewer(lock, self.timeout, self.name) if lock.leased else None)
        return self

    def __exit__(self, *exc_info: object) -> None:
        held = _held_here()
        holding = held[self.name]
        holding.depth -= 1
        if holding.depth:
            return
        del held[self.name]
        lost = holding.renewer.stop() if holding.renewer is not None else False
        if not holding.lock.release():
            lost = True
        if lost and exc_info[0] is None:
            raise LockLost(f"lock {self.name!r} expired while held: its lease of {self.timeout}s was not renewed in time")


@dataclass
class _Holding:
    """A lock this thread holds, how many times over, and the thread renewing its lease."""

    lock: SharedLock
    renewer: "_Renewer | None"
    depth: int = 1


_HELD = threading.local()


def _held_here() -> dict[str, _Holding]:
    """The locks the current thread holds, by name: nesting any LockWrapper of a name is reentrant."""
    if not hasattr(_HELD, "locks"):
        _HELD.locks = {}
    return _HELD.locks


class _Renewer:
    """Extends a Redis lock's lease every third of it until stopped; remembers if the lease was lost."""

    def __init__(self, lock: SharedLock, lease: float, name: str):
        self._lock, self._lease, self._name = lock, lease, name
        self._done = threading.Event()
        self.lost = False
        self._thread = threading.Thread(target=self._loop, name=f"taskutils-lock-{name}", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._done.wait(self._lease / 3):
            try:
                renewed = self._lock.renew()
            except (BackendUnavailable, BrokerError) as exc:
                log.warning("lock %r: could not renew the lease: %s", self._name, exc)
                continue
            if not renewed:
                self.lost = True
                log.error("lock %r: lease expired while held; another holder may run concurrently", self._name)
                return

    def stop(self) -> bool:
        self._done.set()
        self._thread.join()
        return self.lost


def _creation_site() -> str:
    """A name for an unnamed lock: the module and line that created it, the same on every host."""
    frame = sys._getframe(2)
    return f"{frame.f_globals.get('__name__', '?')}:{frame.f_lineno}"
