"""Storage backends: the embedded in-process one and Redis, behind one interface (base.py)."""

from __future__ import annotations

from .base import Backend
from .memory import MemoryBackend


def backend_for(redis_url: str | None, broker_timeout: float = 10.0) -> Backend:
    """The Redis backend for a URL, or a new embedded backend when there is none."""
    if not redis_url:
        return MemoryBackend()
    from .redis import RedisBackend

    return RedisBackend.from_url(redis_url, broker_timeout)


__all__ = ["Backend", "MemoryBackend", "backend_for"]
