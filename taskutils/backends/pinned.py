"""One Redis connection per thread for the hot path, checked out of redis-py's pool once and kept.

redis-py 8.1 spends about as much time checking a connection out of its pool and back in (and
recording its per-command metrics) as the round trip itself takes on a local Redis: 70 µs against
35 µs for an LPUSH on this project's machine (docs/PERFORMANCE.md). Enqueue, the worker's
exchange and its blocking wait are one command each, so they go out on a connection the calling
thread keeps.

Everything else stays redis-py's: the connection, its protocol parser, its health checks and its
Retry (with the backend's outage reporting), which reconnects a dropped connection the same way;
like the pool, it replaces a connection the server closed while it sat idle before using it.
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
        _replace_if_closed(connection)

        def round_trip() -> Any:
            connection.send_command(*args)
            return connection.read_response()

        return connection.retry.call_with_retry(round_trip, lambda error, *_: connection.disconnect())


def _replace_if_closed(connection: redis.Connection) -> None:
    """Drop a connection the server closed while it sat idle (a restart), as redis-py's pool does
    at each checkout: the next command reconnects, and a stale socket is not taken for an outage."""
    try:
        if connection.can_read():
            raise redis.ConnectionError("the connection has unread data")
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        connection.disconnect()
