"""One Redis connection per thread for the hot path, checked out of redis-py's pool once and kept.

redis-py 8.1 spends about as much time checking a connection out of its pool and back in (and
recording its per-command metrics) as the round trip itself takes on a local Redis: 70 µs against
35 µs for an LPUSH on this project's machine (docs/PERFORMANCE.md). Enqueue and the worker's
exchange are one script call each, so they send it on a connection the calling thread keeps.

Everything else stays redis-py's: the connection, its protocol parser, its health checks and its
Retry (with the backend's outage reporting), which reconnects a dropped connection the same way.
A thread's connection goes back to the pool when the thread ends, and a forked child checks out
its own.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Any

import redis
from redis.connection import ConnectionPool


class _Held:
    """A connection checked out for one thread of one process; handed back when collected."""

    def __init__(self, pool: ConnectionPool):
        self.pid = os.getpid()
        self.connection = pool.get_connection()
        weakref.finalize(self, pool.release, self.connection)


class PinnedConnections:
    """Commands sent on the calling thread's own connection of `client`'s pool."""

    def __init__(self, client: redis.Redis):
        self.pool: ConnectionPool = client.connection_pool
        self.local = threading.local()

    def execute(self, *args: Any) -> Any:
        """Send one command and read its raw reply, retrying through an outage like redis-py does."""
        held = getattr(self.local, "held", None)
        if held is None or held.pid != os.getpid():
            held = self.local.held = _Held(self.pool)
        connection = held.connection

        def round_trip() -> Any:
            connection.send_command(*args)
            return connection.read_response()

        return connection.retry.call_with_retry(round_trip, lambda error, *_: connection.disconnect())
