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

`send` pipelines: it sends a command at once and reads its reply later, so a thread can send the
next command while the server runs this one (the worker keeps one exchange in flight this way).
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Any, Callable

import redis
from redis.connection import ConnectionPool


class LostReply(Exception):
    """The connection broke before a reply sent for with `send` was read: the command may or may not have run."""


class _Held:
    """A connection checked out for one thread of one process; handed back when collected."""

    def __init__(self, pool: ConnectionPool):
        self.pid = os.getpid()
        self.connection = pool.get_connection()
        self.unread = 0  # replies of commands sent with `send` not read yet
        self.drops = 0  # times the connection was dropped (unread replies are lost with it)
        weakref.finalize(self, _hand_back, pool, self.connection, self.__dict__)

    def drop(self, *_: Any) -> None:
        self.connection.disconnect()
        self.unread = 0
        self.drops += 1


class PinnedConnections:
    """Commands sent on the calling thread's own connection of `client`'s pool."""

    def __init__(self, client: redis.Redis):
        self.pool: ConnectionPool = client.connection_pool
        self.local = threading.local()

    def _held(self) -> _Held:
        held = getattr(self.local, "held", None)
        if held is None or held.pid != os.getpid():
            held = self.local.held = _Held(self.pool)
        return held

    def execute(self, *args: Any) -> Any:
        """Send one command and read its raw reply, retrying through an outage like redis-py does."""
        held = self._held()
        if held.unread:
            raise RuntimeError("a reply sent for with send() is still unread on this thread's connection")
        connection = held.connection
        _replace_if_closed(held)

        def round_trip() -> Any:
            connection.send_command(*args)
            return connection.read_response()

        return connection.retry.call_with_retry(round_trip, held.drop)

    def send(self, *args: Any) -> Callable[[], Any]:
        """Send one command now; the returned function reads its raw reply. Read replies on this
        thread in the order sent, and before `execute`. A connection failure raises LostReply (no
        retry here: the caller decides whether to run the command again)."""
        held = self._held()
        if not held.unread:
            _replace_if_closed(held)
        connection, drops = held.connection, held.drops
        try:
            connection.send_command(*args)
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            held.drop()
            raise LostReply(str(exc)) from None
        held.unread += 1

        def read() -> Any:
            if held.drops != drops:
                raise LostReply("the connection was dropped before this reply was read")
            try:
                reply = connection.read_response()
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                held.drop()
                raise LostReply(str(exc)) from None
            except redis.ResponseError:  # an error reply, read whole: the connection stays usable
                held.unread -= 1
                raise
            except BaseException:  # interrupted mid-reply: the stream is unusable
                held.drop()
                raise
            held.unread -= 1
            return reply

        return read


def _hand_back(pool: ConnectionPool, connection: redis.Connection, held: dict[str, Any]) -> None:
    """Return a thread's connection to the pool; one still owed replies is closed first, so that
    its next user cannot read them as its own."""
    if held["unread"]:
        connection.disconnect()
    pool.release(connection)


def _replace_if_closed(held: _Held) -> None:
    """Drop a connection the server closed while it sat idle (a restart), as redis-py's pool does
    at each checkout: the next command reconnects, and a stale socket is not taken for an outage."""
    try:
        if held.connection.can_read():
            raise redis.ConnectionError("the connection has unread data")
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        held.drop()
