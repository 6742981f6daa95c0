"""One Redis connection per thread for the hot path, made and used through redis-py's public API.

Enqueue, a worker's exchange and its blocking wait are one command each. Through redis-py's
client every command also checks a connection out of the pool and back in, which costs about as
much as the round trip itself on a local Redis (docs/PERFORMANCE.md); so these commands go out on
a `redis.Connection` the calling thread keeps, built from the client's own connection settings
(`connection_class`, `connection_kwargs`). Retries through an outage use the backend's `Retry`.
A thread's connection closes when the thread ends; a forked child makes its own.

`send` pipelines: it sends a command at once and returns a function that reads its reply later,
so a thread can send the next command while the server runs this one.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from typing import Any, Callable

import redis
from redis.retry import Retry

CONNECTION_ERRORS = (redis.ConnectionError, redis.TimeoutError, OSError)
IDLE_CHECK_SECONDS = 1.0  # a connection unused this long is checked for a close by the server before use


class LostReply(Exception):
    """The connection broke before a reply sent for with `send` was read: the command may or may not have run."""


class _Held:
    """The connection of one thread of one process, and the replies still owed on it."""

    def __init__(self, connection: redis.Connection):
        self.pid = os.getpid()
        self.connection = connection
        self.unread = 0  # replies of commands sent with `send` not read yet
        self.drops = 0  # times the connection was dropped (unread replies are lost with it)
        self.used_at = 0.0  # when a command last went out on it
        weakref.finalize(self, connection.disconnect)

    def drop(self, *_: Any) -> None:
        self.connection.disconnect()
        self.unread = 0
        self.drops += 1

    def fresh(self) -> redis.Connection:
        """The connection, dropped first if the server closed it while it sat idle for over
        IDLE_CHECK_SECONDS (a restart): the next command reconnects instead of failing on a
        stale socket. Looking costs a few system calls, so a connection in use is not looked at."""
        now = time.monotonic()
        if now - self.used_at > IDLE_CHECK_SECONDS:
            try:
                if self.connection.can_read():
                    raise redis.ConnectionError("the connection has unread data")
            except CONNECTION_ERRORS:
                self.drop()
        self.used_at = now
        return self.connection


class ThreadConnections:
    """Commands on the calling thread's own connection, made like `client`'s."""

    def __init__(self, client: redis.Redis, retry: Retry):
        pool = client.connection_pool
        self._make = lambda: pool.connection_class(**pool.connection_kwargs)
        self._retry = retry
        self._local = threading.local()
        self._every: weakref.WeakSet[_Held] = weakref.WeakSet()

    def _held(self) -> _Held:
        held = getattr(self._local, "held", None)
        if held is None or held.pid != os.getpid():
            held = self._local.held = _Held(self._make())
            self._every.add(held)
        return held

    def execute(self, *args: Any, read_timeout: float | None = None) -> Any:
        """Send one command and read its raw reply, retrying through an outage with backoff."""
        held = self._held()
        if held.unread:
            raise RuntimeError("a reply sent for with send() is still unread on this thread's connection")

        def round_trip() -> Any:
            connection = held.fresh()
            connection.send_command(*args)
            if read_timeout is None:
                return connection.read_response()
            return connection.read_response(timeout=read_timeout)

        return self._retry.call_with_retry(round_trip, held.drop)

    def execute_once(self, *args: Any, read_timeout: float) -> Any:
        """Send one command and read its reply within `read_timeout` seconds, without retrying;
        a connection failure raises redis.ConnectionError (the connection is dropped)."""
        held = self._held()
        connection = held.fresh()
        try:
            connection.send_command(*args)
            return connection.read_response(timeout=read_timeout)
        except CONNECTION_ERRORS as exc:
            held.drop()
            raise redis.ConnectionError(str(exc)) from None

    def send(self, *args: Any) -> Callable[[], Any]:
        """Send one command now; the returned function reads its raw reply. Read replies on this
        thread in the order sent, and before `execute`. A connection failure raises LostReply (no
        retry here: the caller decides whether to run the command again)."""
        held = self._held()
        connection = held.fresh() if not held.unread else held.connection
        drops = held.drops
        try:
            connection.send_command(*args)
        except CONNECTION_ERRORS as exc:
            held.drop()
            raise LostReply(str(exc)) from None
        held.unread += 1

        def read() -> Any:
            if held.drops != drops:
                raise LostReply("the connection was dropped before this reply was read")
            try:
                reply = connection.read_response()
            except CONNECTION_ERRORS as exc:
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

    def close(self) -> None:
        """Close every thread's connection (a closed one reconnects if used again)."""
        for held in list(self._every):
            held.drop()
