"""The in-process lock of a name: what LockWrapper uses embedded, or with no backend at all."""

from __future__ import annotations

import threading
import weakref


class LocalLock:
    """The one in-process lock of a name (a SharedLock that never expires)."""

    leased = False
    _locks: "weakref.WeakValueDictionary[str, threading.Lock]" = weakref.WeakValueDictionary()
    _guard = threading.Lock()

    def __init__(self, name: str):
        with LocalLock._guard:
            found = LocalLock._locks.get(name)
            if found is None:
                found = LocalLock._locks[name] = threading.Lock()
        self._lock = found

    def acquire(self) -> None:
        self._lock.acquire()

    def renew(self) -> bool:
        return True

    def release(self) -> bool:
        self._lock.release()
        return True
