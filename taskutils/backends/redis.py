"""The Redis backend: key layout and Lua script calls.

Keys of queue Q all start with "tu:{Q}:" (one hash tag, so one Cluster slot):

    epoch           STRING  made with the queue (lua/_store.lua); every task id is "<epoch>-<seq>"
    seq             STRING  the last sequence number given to a task (hex in ids)
    ready:<level>   LIST    envelopes of ready tasks without a key at one priority level ("max":
                            recurrent runs); a keyed task's envelope body starts "@<key>|"
    prios           ZSET    levels that have ready tasks, score = -priority
    scheduled       ZSET    "<level>|<envelope>" of delayed tasks, score = due time
    state:<bucket>  HASH    seq % 64 -> s(cheduled) / q(ueued), for seq // 64 == bucket (hex); a task
                            keeps its state while it runs (it is running while inflight holds it);
                            field u<seq % 64> -> "<unique_for>|<digest>" of the unique value it holds
    outcome:<bucket> HASH   seq % 64 -> outcome record ("" for done with no value), expires result_ttl
                            after the bucket's last write
    leases          ZSET    seqs of running tasks, score = lease deadline in whole ms (the cap counts these)
    inflight        HASH    seq -> "<token>|<level>|<envelope>" of each running task; a token starts with
                            8 characters naming its worker (redis_scripts.consumer_tag)
    failed          HASH    seq -> "<level>|<envelope>" of a task failed for good, kept until purged
    failed_info     HASH    seq -> failure record (msgpack: reason, traceback, attempts, ...)
    config          HASH    max_concurrency, default_limit (the limit of task keys without their own)
    turns           ZSET    lanes whose next task may start now, score = turn number (lua/_lanes.lua)
    later           ZSET    lanes waiting for their key's rate or a throttle, score = time in whole ms
    kp:<K>, kq:<K>:<level>  ZSET, LIST  the ready tasks of key K, as prios and ready:<level> are
                            for tasks without a key
    ks:<K>          HASH    key K's running count, GCRA time, throttled-until and adaptive rate
    kl:<K>          LIST    key K's recent start times (limits with burst > 1)
    kqueued         STRING  how many keyed tasks are ready
    limits          HASH    key -> limit "<concurrency>|<rate>|<per>|<burst>|<adaptive>"
    rec             ZSET    recurrent schedule names, score = next run time
    rec:<name>      HASH    body, interval, repeats (-1: forever), stop ("": never), definition, cron,
                            tz, misfire, max_catch_up, through (a cron schedule's last stored time),
                            last (when it last started runs)
    rec_times:<name> ZSET   a cron schedule's next run times, computed ahead (recurrent.py)
    cron_low        SET     cron schedules short of times: workers compute more (lua/cron_refill.lua)
    hist:<hour>     HASH    "<minute of the hour>d|f|r" -> tasks done, failed, retried that minute, as
                            workers report them (Exchange.tally); expires a day after its last write
    idle            ZSET    consumers waiting for work, score = until when (whole ms)
    wake            LIST    wake tokens for waiting consumers (lua/_queue.lua)
    wake:<consumer> LIST    "1" to end that consumer's wait at once (it stops, or has settlements to send)
    cancel_q, cancel_s  SET seqs of tasks cancelled while queued or scheduled, until a claim or the
                            schedule meets them in their list (lua/cancel.lua)
    cancel_run      SET     seqs of running tasks asked to stop (current_task().cancelled)
    up:<d4>         HASH    unique values held, by digest (the first 24 hex digits of their SHA-1):
                            digest[5..] -> seq (its task pending) or "<seq>|<until ms>" (held after it
                            ended), for digests starting d4 (lua/_unique.lua, lua/sweep_unique.lua)

Outside the queues: "tu:workers" (ZSET consumer -> last heartbeat) and "tu:worker:<consumer>"
(HASH host, pid, threads, queues, heartbeat; expires unless renewed). Formats and each
script's keys, arguments and reply are described at the top of its file in lua/ (loaded and
called as redis_scripts.py says).
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Mapping, Sequence

import redis
import redis.exceptions

from ..errors import BackendUnavailable, BrokerError
from .base import Backend
from .connections import LostReply, ThreadConnections
from .records import Exchange, ExchangeReply, NewTask, split_id
from .redis_client import RedisLock, mapped, outage_retry
from .redis_browse import RedisBrowse
from .redis_inspection import RedisInspection
from .redis_schedules import RedisSchedules
from .redis_url import checked_url
from .redis_scripts import Scripts, exchange_args, exchange_reply, prefix, task_args, unknown_outcomes

LIBRARY_RETRY = 30.0  # seconds before a library load the server refused (it was full) is tried again
WAIT_READ_MARGIN = 2.0  # a blocking wait's reply is awaited this much past its timeout: a vanished
# server (a host gone without closing the connection) is noticed within seconds


class RedisBackend(RedisInspection, RedisBrowse, RedisSchedules, Backend):
    """Every operation is one script call or one pipeline; inspection and administration are
    in redis_inspection.py, schedules, key limits and cancellation in redis_schedules.py."""

    def __init__(self, client: redis.Redis, retry: Any = None, functions: bool | None = None):
        """`functions`: run the scripts as Redis Functions (Redis 7+), or by EVALSHA; None: as
        Functions if the server takes the library (redis_scripts.py)."""
        self.client = client
        self._retry = retry or outage_retry(10.0)
        self._hot = ThreadConnections(client, self._retry)
        self._scripts = Scripts()
        self._functions = functions
        self._load_after = 0.0  # a refused library load is tried again only after this (monotonic)
        self._probe: redis.Redis | None = None  # for ping
        self._probe_made = threading.Lock()

    @classmethod
    def from_url(cls, url: str, broker_timeout: float = 10.0) -> "RedisBackend":
        """A backend for `url`: through an outage each call retries with backoff for about
        `broker_timeout` seconds, then raises BackendUnavailable."""
        retry = outage_retry(broker_timeout)
        tcp = {} if checked_url(url).startswith("unix:") else {"socket_keepalive": True}  # a socket file has no keepalive
        client = redis.Redis.from_url(
            url, socket_timeout=min(5.0, broker_timeout), socket_connect_timeout=min(2.0, broker_timeout),
            health_check_interval=30, retry=retry, **tcp,
        )
        return cls(client, retry)

    def ping(self, timeout: float) -> bool:
        pool = self.client.connection_pool
        with self._probe_made:  # its own connections: a probe never waits behind the retries of others
            if self._probe is None:
                options = dict(pool.connection_kwargs, socket_timeout=timeout, socket_connect_timeout=timeout, retry=None)
                self._probe = redis.Redis(connection_pool=redis.ConnectionPool(
                    connection_class=pool.connection_class, max_connections=4, **options))
        try:
            return bool(self._probe.ping())
        except (redis.exceptions.RedisError, OSError):
            return False

    # -- scripts ---------------------------------------------------------------------------------

    def _run(self, name: str, key: str, args: Sequence[Any], hot: bool = True) -> Any:
        """FCALL of a script's function, or EVALSHA of the script, loading either once if the
        server does not have it (a restart, a flush). Hot-path scripts go out on the calling
        thread's own connection (connections.py)."""
        execute = self._hot.execute if hot else self.client.execute_command

        def run() -> Any:
            try:
                return execute(*self._command(name, key, args))
            except redis.exceptions.ResponseError as exc:
                if not self._load_missing(exc, name):
                    raise
                return execute(*self._command(name, key, args))

        return mapped(run)

    def _command(self, name: str, key: str, args: Sequence[Any]) -> tuple[Any, ...]:
        if self._functions is None and time.monotonic() >= self._load_after:
            try:
                self._functions = self._load_library()
            except redis.exceptions.ResponseError:  # a full server refuses the load: EVALSHA meanwhile
                self._load_after = time.monotonic() + LIBRARY_RETRY
        if self._functions:
            return ("FCALL", self._scripts.function(name), 1, key, *args)
        return ("EVALSHA", self._scripts.sha(name), 1, key, *args)

    def _load_library(self) -> bool:
        """Load the Functions library; False if this server has no Functions (Redis before 7)
        or does not let this user load them: the scripts then run by EVALSHA."""
        try:
            self.client.function_load(self._scripts.library())
        except redis.exceptions.ResponseError as exc:
            text = str(exc).lower()
            if "already exists" in text:
                return True
            if "unknown command" in text or "noperm" in text or "no permissions" in text:
                return False
            raise
        return True

    def _load_missing(self, exc: redis.exceptions.ResponseError, name: str) -> bool:
        """Load what a refused call missed (the server restarted empty or was flushed); False if
        the refusal was something else."""
        if isinstance(exc, redis.exceptions.NoScriptError):
            self.client.script_load(self._scripts.source(name))
            return True
        if "function not found" in str(exc).lower():
            self._functions = None  # loaded again by the next _command
            return True
        return False

    # -- the hot path ----------------------------------------------------------------------------

    def enqueue(self, queue: str, tasks: Sequence[NewTask]) -> list[str]:
        args: list[Any] = [arg for task in tasks for arg in task_args(task)]
        if not args:
            return []
        epoch, first, *held = self._run("enqueue", prefix(queue), args)
        epoch = epoch.decode()
        ids = [f"{epoch}-{first + k:x}" for k in range(1, len(tasks) + 1)]
        for index, seq in zip(held[::2], held[1::2]):  # tasks whose unique value another task holds
            ids[index - 1] = f"{epoch}-{seq.decode()}"
        return ids

    def exchange(self, request: Exchange) -> ExchangeReply:
        return exchange_reply(request, self._run("exchange", prefix(request.queue), exchange_args(request)))

    def send_exchange(self, request: Exchange) -> Callable[[], ExchangeReply]:
        """Pipelined on the thread's connection. A reply lost with the connection, or refused
        because the server lost its scripts, is made up for by running the exchange again
        (settling twice is harmless: a settled lease refuses the second; claims whose reply was
        lost come back when their lease expires)."""
        args = exchange_args(request)

        def again() -> ExchangeReply:  # through the pool: replies sent for later may be owed on this connection
            return exchange_reply(request, self._run("exchange", prefix(request.queue), args, hot=False))

        try:
            read = self._hot.send(*self._command("exchange", prefix(request.queue), args))
        except LostReply:  # the command may have reached the server all the same
            resent = unknown_outcomes(again())
            return lambda: resent

        def result() -> ExchangeReply:
            try:
                return exchange_reply(request, read())
            except LostReply:
                return unknown_outcomes(again())
            except redis.exceptions.ResponseError as exc:
                if isinstance(exc, redis.exceptions.NoScriptError) or "function not found" in str(exc).lower():
                    return again()  # it did not run: the second attempt is the only one
                raise BrokerError(f"Redis refused the operation: {exc}") from None

        return result

    def wait(self, queues: Sequence[str], consumer: str, timeout: float) -> str | None:
        """BLPOP on the consumer's own list and the queues' wake lists. A wait whose connection
        breaks returns at once (None): the worker then asks for work, which also registers it
        as waiting again, on a server that may have restarted empty."""
        if timeout <= 0:
            return None
        timeout = max(timeout, 0.001)  # a server that truncates to whole ms would read less as 0: no timeout
        wake_keys = {prefix(q) + "wake": q for q in queues}
        own = prefix(queues[0]) + "wake:" + consumer
        try:
            popped = self._hot.execute_once("BLPOP", own, *wake_keys, timeout, read_timeout=timeout + WAIT_READ_MARGIN)
        except redis.exceptions.ConnectionError as exc:
            self._retry.outage.failed(exc)
            return None
        except redis.exceptions.ResponseError as exc:
            raise BrokerError(f"Redis refused the operation: {exc}") from None
        self._retry.outage.succeeded(after_failing=False)
        return wake_keys.get(popped[0].decode()) if popped else None

    def interrupt(self, queues: Sequence[str], consumer: str) -> None:
        """RPUSH and EXPIRE, pipelined on the calling thread's connection: the doorbell of a
        worker rings it after most tasks an idle worker runs. A connection that broke since its
        last use (Redis restarted) is dropped and the ring sent once more on a new one: ringing
        twice costs one spurious wake-up, not ringing leaves the wait to end by itself."""
        key = prefix(queues[0]) + "wake:" + consumer

        def ring() -> None:
            pushed, expiring = self._hot.send("RPUSH", key, 1), self._hot.send("EXPIRE", key, 60)
            pushed(), expiring()

        try:
            mapped(ring)
        except LostReply:
            try:
                mapped(ring)
            except LostReply as exc:  # an interrupt that may not have arrived: the wait ends by itself
                raise BackendUnavailable(f"Redis is unreachable: {exc}") from None

    def renew(self, queue: str, leases: Mapping[str, str], lease: float) -> list[str]:
        args: list[Any] = [repr(lease)]
        ids = {}
        for task_id, token in leases.items():
            seq = split_id(task_id)[1]
            ids[seq] = task_id
            args += [seq, token]
        return [ids[seq.decode()] for seq in self._run("renew", prefix(queue), args, hot=False)]

    def rest(self, queues: Sequence[str], consumer: str) -> None:
        for queue in queues:
            self._run("rest", prefix(queue), [consumer], hot=False)

    # -- the rest --------------------------------------------------------------------------------

    def now(self) -> float:
        seconds, micros = mapped(self.client.time)
        return seconds + micros / 1e6

    def lock(self, name: str, lease: float) -> RedisLock:
        return RedisLock(self.client, name, lease)

    def close(self) -> None:
        self._hot.close()
        self.client.close()
        if self._probe is not None:
            self._probe.close()


__all__ = ["BackendUnavailable", "RedisBackend", "prefix"]
