"""The Redis backend: key layout, Lua script registration and driver-error mapping.

Keys of queue Q all start with "tu:{Q}:" (one hash tag, so one Cluster slot):

    ready:<level>  LIST   envelopes of ready tasks at one priority level ("max": recurrent runs)
    prios          ZSET   levels that have ready tasks, score = -priority
    scheduled      ZSET   "<level>|<envelope>" of delayed tasks, score = due time
    state:<bucket> HASH   task id % 64 -> s(cheduled) / q(ueued) / r(unning), for ids id // 64 == bucket (hex)
    leases         ZSET   claimed task ids, score = lease deadline in whole ms (the concurrency semaphore, less `ahead`)
    ahead          SET    ids of claims held ahead of the cap, not counted by it (see lua/_claim.lua)
    inflight       HASH   running task id -> "<token>|<level>|<envelope>"
    result:<id>    STRING outcome record (msgpack), expires after result_ttl
    failed         HASH   task id -> "<level>|<envelope>" of a task failed for good, kept until purged
    failed_info    HASH   task id -> failure record (msgpack: reason, traceback, attempts, ...)
    config         HASH   max_concurrency
    rec            ZSET   recurrent schedule names, score = next run time
    rec:<name>     HASH   body, interval, repeats (-1: forever), stop ("" : never)
    idle, wake     ZSET "<consumer>|<lease>" of consumers blocked in wait() (score: until when),
                   LIST of wake tokens for them
    wake:<consumer> LIST  tasks leased straight to that idle consumer by an enqueue ("<token>|<level>|<envelope>"),
                   or "1" to interrupt its wait (when it stops)
    seq, fence     counters for task ids and lease tokens

Outside the queues: "tu:workers" (ZSET consumer -> last heartbeat) and "tu:worker:<consumer>"
(HASH host, pid, threads, queues, heartbeat; expires unless renewed).

The envelope and every script are described in lua/_prelude.lua.
"""

from __future__ import annotations

import copy
import logging
import socket
from importlib import resources
from typing import Any, Callable, Mapping, Sequence, TypeVar

import redis
import redis.exceptions
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from ..errors import BackendUnavailable, BrokerError
from ..outage import OutageLog
from .base import (
    QUEUED,
    RETRY_KIND,
    RUNNING,
    SCHEDULED,
    Backend,
    Claim,
    ClaimBatch,
    Counts,
    NewTask,
    RecurrentRecord,
    Settlement,
)
from .memory import TOP
from .pinned import LostReply, PinnedConnections

T = TypeVar("T")
log = logging.getLogger("taskutils.redis")
STATES = {b"s": SCHEDULED, b"q": QUEUED, b"r": RUNNING}
STATE_BUCKET = 64  # task states per state hash, as in lua/_prelude.lua
# Each script: the helper files it needs (in order), then its own file.
SCRIPTS = {
    "enqueue": ("_prelude",),
    "exchange": ("_prelude", "_envelope", "_settle", "_claim"),
    "renew": ("_prelude", "_envelope"),
    "counts": ("_prelude",),
    "schedule_recurrent": ("_prelude",),
    "requeue_failed": ("_prelude", "_envelope"),
    "register_worker": ("_prelude",),
    "rest": ("_prelude", "_envelope"),
}
WORKERS = "tu:"


def prefix(queue: str) -> str:
    """The key prefix of one queue."""
    return f"tu:{{{queue}}}:"


def level_name(priority: float) -> str:
    return "max" if priority == TOP else str(int(priority))


def parse_envelope(queue: str, token: int, envelope: bytes, ahead: bool = False) -> Claim:
    """A Claim from one envelope (see lua/_prelude.lua)."""
    task_id, failures, crashes, body = envelope.split(b"|", 3)
    return Claim(queue, task_id.decode(), int(token), body, int(failures), int(crashes), ahead)


class RedisBackend(Backend):
    """Every operation one script call or one pipeline; driver errors become BackendUnavailable."""

    def __init__(self, client: redis.Redis, blocking_client: redis.Redis | None = None):
        self.client = client
        self._blocking = blocking_client or client
        self._pinned = PinnedConnections(client)
        self._pinned_blocking = PinnedConnections(self._blocking)
        self._scripts = {name: client.register_script(_script_source(name, parts)) for name, parts in SCRIPTS.items()}

    @classmethod
    def from_url(cls, url: str, broker_timeout: float = 10.0) -> "RedisBackend":
        """A backend on its own connection pools: one for commands, one for blocking waits.

        Through an outage, each call retries with backoff for about `broker_timeout` seconds,
        then raises BackendUnavailable."""
        options: dict[str, Any] = {
            "health_check_interval": 30,
            "socket_keepalive": True,
            "socket_connect_timeout": min(2.0, broker_timeout),
            "retry": outage_retry(broker_timeout, OutageLog(log)),
        }
        client = redis.Redis.from_url(url, socket_timeout=min(5.0, broker_timeout), **options)
        blocking = redis.Redis.from_url(url, socket_timeout=None, **options)
        return cls(client, blocking)

    def _run(self, name: str, queue: str, args: Sequence[Any]) -> Any:
        return self._call(name, prefix(queue), args)

    def _call(self, name: str, key: str, args: Sequence[Any], pooled: bool = False) -> Any:
        """EVALSHA of a registered script, loading it once if the server lost it (a restart).

        redis-py's Script object does the same with more work per call; this is the hot path, so
        it goes out on the calling thread's own connection (see pinned.py), or through the pool
        when `pooled` (replies sent for with exchange_later may be pending on that connection)."""
        script = self._scripts[name]
        execute = self.client.execute_command if pooled else self._pinned.execute

        def run() -> Any:
            try:
                return execute("EVALSHA", script.sha, 1, key, *args)
            except redis.exceptions.NoScriptError:
                self.client.script_load(script.script)
                return execute("EVALSHA", script.sha, 1, key, *args)

        return _mapped(run)

    def now(self) -> float:
        seconds, micros = _mapped(self.client.time)
        return seconds + micros / 1e6

    def enqueue(self, queue: str, tasks: Sequence[NewTask]) -> list[str]:
        args: list[Any] = []
        for task in tasks:
            args += [level_name(task.priority), repr(float(task.delay)), task.body]
        return [task_id.decode() for task_id in self._run("enqueue", queue, args)] if args else []

    def exchange(
        self,
        queue: str,
        consumer: str,
        settlements: Sequence[Settlement],
        want: int,
        lease: float,
        idle_for: float = 0.0,
        result_ttl: float = 0.0,
        ahead: int = 0,
    ) -> tuple[list[bool], ClaimBatch]:
        args = _exchange_args(consumer, settlements, want, ahead, lease, idle_for, result_ttl)
        return _exchange_result(queue, want + ahead, self._run("exchange", queue, args))

    def exchange_later(
        self, queue: str, consumer: str, settlements: Sequence[Settlement], want: int, *options: float,
        ahead: int = 0,
    ) -> Callable[[], tuple[list[bool | None], ClaimBatch]]:
        """Pipelined on the thread's connection. A reply lost with the connection, or refused
        because the server lost its scripts, is made up for by running the exchange again through
        the pool (settling twice is harmless: a settled lease refuses the second; claims whose reply
        was lost come back when their lease expires)."""
        args = _exchange_args(consumer, settlements, want, ahead, *options)
        script, key = self._scripts["exchange"], prefix(queue)
        want += ahead

        def again() -> tuple[list[bool], ClaimBatch]:
            return _exchange_result(queue, want, self._call("exchange", key, args, pooled=True))

        try:
            read = self._pinned.send("EVALSHA", script.sha, 1, key, *args)
        except LostReply:  # the command may have reached the server all the same
            resent = _resent(again())
            return lambda: resent

        def result() -> tuple[list[bool | None], ClaimBatch]:
            try:
                return _exchange_result(queue, want, read())
            except LostReply:
                return _resent(again())
            except redis.exceptions.NoScriptError:  # it did not run: the second attempt is the only one
                return again()
            except redis.exceptions.ResponseError as exc:
                raise BrokerError(f"Redis refused the operation: {exc}") from None

        return result

    def wait(self, queues: Sequence[str], consumer: str, timeout: float) -> str | Claim | None:
        if timeout <= 0:
            return None
        timeout = max(timeout, 0.001)  # a server that truncates to whole ms would read less as 0: no timeout
        wake_keys = {prefix(q) + "wake": q for q in queues}
        own_keys = {prefix(q) + "wake:" + consumer: q for q in queues}
        popped = _mapped(lambda: self._pinned_blocking.execute("BLPOP", *wake_keys, *own_keys, timeout))
        if not popped:
            return None
        key, value = popped[0].decode(), popped[1]
        if key in wake_keys:
            return wake_keys[key]
        if value == b"1":  # interrupt()
            return None
        token, _, envelope = value.split(b"|", 2)  # a task handed straight to this consumer
        return parse_envelope(own_keys[key], token, envelope)

    def rest(self, queues: Sequence[str], consumer: str) -> None:
        for queue in queues:
            self._run("rest", queue, [consumer])

    def nudge(self, queue: str) -> None:
        _mapped(lambda: self.client.rpush(prefix(queue) + "wake", 1))

    def interrupt(self, queues: Sequence[str], consumer: str) -> None:
        key = prefix(queues[0]) + "wake:" + consumer
        pipe = self.client.pipeline(transaction=True)
        pipe.rpush(key, 1)
        pipe.expire(key, 60)
        _mapped(pipe.execute)

    def renew(self, queue: str, leases: Mapping[str, int], lease: float) -> list[str]:
        args: list[Any] = [repr(lease)]
        for task_id, token in leases.items():
            args += [task_id, token]
        return [task_id.decode() for task_id in self._run("renew", queue, args)]

    def status(self, queue: str, task_id: str) -> tuple[str | None, bytes | None]:
        try:
            number = int(task_id, 16)
        except ValueError:
            return None, None
        pipe = self.client.pipeline(transaction=False)
        pipe.hget(prefix(queue) + f"state:{number // STATE_BUCKET:x}", str(number % STATE_BUCKET))
        pipe.get(prefix(queue) + "result:" + task_id)
        state, outcome = _mapped(pipe.execute)
        return STATES.get(state) if state else None, outcome

    def counts(self, queue: str) -> Counts:
        return Counts(*self._run("counts", queue, []))

    def failed(self, queue: str) -> dict[str, bytes]:
        pipe = self.client.pipeline(transaction=True)
        pipe.hkeys(prefix(queue) + "failed")
        pipe.hgetall(prefix(queue) + "failed_info")
        ids, info = _mapped(pipe.execute)
        return {task_id.decode(): info.get(task_id, b"") for task_id in ids}

    def requeue_failed(self, queue: str, task_ids: Sequence[str]) -> list[str]:
        return [task_id.decode() for task_id in self._run("requeue_failed", queue, list(task_ids))] if task_ids else []

    def purge_failed(self, queue: str, task_ids: Sequence[str] | None) -> int:
        failed, info = prefix(queue) + "failed", prefix(queue) + "failed_info"
        pipe = self.client.pipeline(transaction=True)
        if task_ids is None:
            pipe.hlen(failed)
            pipe.delete(failed, info)
        elif task_ids:
            pipe.hdel(failed, *task_ids)
            pipe.hdel(info, *task_ids)
        return int(_mapped(pipe.execute)[0]) if task_ids is None or task_ids else 0

    def queues(self) -> list[str]:
        names = {key.decode()[4:-5] for key in _mapped(lambda: list(self.client.scan_iter("tu:{*}:seq", count=1000)))}
        return sorted(names)

    def register_worker(self, consumer: str, info: Mapping[str, str], ttl: float) -> None:
        fields = [item for pair in info.items() for item in pair]
        self._call("register_worker", WORKERS, [consumer, repr(ttl), *fields])

    def unregister_worker(self, consumer: str) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(WORKERS + "worker:" + consumer)
        pipe.zrem(WORKERS + "workers", consumer)
        _mapped(pipe.execute)

    def workers(self) -> list[dict[str, str]]:
        consumers = [c.decode() for c in _mapped(lambda: self.client.zrange(WORKERS + "workers", 0, -1))]
        pipe = self.client.pipeline(transaction=False)
        for consumer in consumers:
            pipe.hgetall(WORKERS + "worker:" + consumer)
        found, gone = [], []
        for consumer, fields in zip(consumers, _mapped(pipe.execute) if consumers else []):
            if fields:
                found.append({k.decode(): v.decode() for k, v in fields.items()} | {"consumer": consumer})
            else:
                gone.append(consumer)
        if gone:
            _mapped(lambda: self.client.zrem(WORKERS + "workers", *gone))
        return found

    def warnings(self) -> list[str]:
        try:
            policy = _mapped(lambda: self.client.config_get("maxmemory-policy")).get("maxmemory-policy")
        except BrokerError:
            return []  # CONFIG is not allowed for this user: nothing to check
        if policy and policy != "noeviction":
            return [f"Redis maxmemory-policy is {policy!r}: under memory pressure Redis may evict tasks; set it to 'noeviction'"]
        return []

    def set_max_concurrency(self, queue: str, limit: int | None) -> None:
        key = prefix(queue) + "config"
        if limit is None:
            _mapped(lambda: self.client.hdel(key, "max_concurrency"))
        else:
            _mapped(lambda: self.client.hset(key, "max_concurrency", limit))

    def recurrent_put(self, queue: str, name: str, record: RecurrentRecord) -> None:
        stop = "" if record.stop is None else repr(record.stop)
        args = [name, record.body, repr(record.interval), record.repeats, stop, repr(record.next_run)]
        self._run("schedule_recurrent", queue, args)

    def recurrent_get(self, queue: str, name: str) -> RecurrentRecord | None:
        pipe = self.client.pipeline(transaction=True)
        pipe.hgetall(prefix(queue) + "rec:" + name)
        pipe.zscore(prefix(queue) + "rec", name)
        fields, next_run = _mapped(pipe.execute)
        if not fields or next_run is None:
            return None
        stop = fields[b"stop"]
        return RecurrentRecord(
            fields[b"body"], float(fields[b"interval"]), int(fields[b"repeats"]), float(stop) if stop else None, next_run
        )

    def recurrent_delete(self, queue: str, name: str) -> bool:
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(prefix(queue) + "rec:" + name)
        pipe.zrem(prefix(queue) + "rec", name)
        return bool(_mapped(pipe.execute)[1])

    def recurrent_names(self, queue: str) -> list[str]:
        return [name.decode() for name in _mapped(lambda: self.client.zrange(prefix(queue) + "rec", 0, -1))]

    def lock(self, name: str, lease: float) -> redis.lock.Lock:
        return self.client.lock("tu:lock:" + name, timeout=lease, thread_local=False)

    def close(self) -> None:
        for client in {id(self.client): self.client, id(self._blocking): self._blocking}.values():
            client.close()


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


def outage_retry(timeout: float, outage: OutageLog) -> ReportingRetry:
    """Backoff from 50 ms doubling to 1 s, for about `timeout` seconds in all."""
    backoff = ExponentialBackoff(cap=1.0, base=0.05)
    retries, total = 0, 0.0
    while total < timeout:
        retries += 1
        total += backoff.compute(retries)
    return ReportingRetry(backoff, retries, outage)


def _script_source(name: str, helpers: Sequence[str]) -> str:
    folder = resources.files(__package__) / "lua"
    return "\n".join((folder / f"{part}.lua").read_text() for part in (*helpers, name))


def _exchange_args(
    consumer: str, settlements: Sequence[Settlement], want: int, ahead: int, lease: float, idle_for: float = 0.0,
    result_ttl: float = 0.0,
) -> list[Any]:
    """ARGV of exchange.lua."""
    started = " ".join(
        f"{settled.passes_slot_to.task_id}:{settled.passes_slot_to.token}" for settled in settlements if settled.passes_slot_to
    )
    args: list[Any] = [consumer, want, repr(lease), repr(idle_for), repr(result_ttl), ahead, started]
    for settled in settlements:
        data = repr(settled.delay) if settled.kind == RETRY_KIND else settled.outcome
        args += [settled.kind, settled.claim.task_id, settled.claim.token, data, settled.record]
    return args


def _exchange_result(queue: str, want: int, reply: list[Any]) -> tuple[list[bool], ClaimBatch]:
    """What exchange.lua returned, as exchange() returns it."""
    applied = [flag == ord("1") for flag in reply[0]]
    if want <= 0:
        return applied, ClaimBatch([], None)
    next_due = float(reply[1])
    first_ahead = len(reply) - 2 * reply[3]
    claims = [parse_envelope(queue, reply[i], reply[i + 1], i >= first_ahead) for i in range(4, len(reply), 2)]
    return applied, ClaimBatch(claims, None if next_due < 0 else next_due, reply[2] == 1)


def _resent(result: tuple[list[bool], ClaimBatch]) -> tuple[list[bool | None], ClaimBatch]:
    """The result of an exchange sent again after its reply was lost: a refusal may mean that
    the lost attempt settled that task, so it is unknown (None), not False."""
    applied, batch = result
    return [True if done else None for done in applied], batch


def _mapped(call: Callable[[], T]) -> T:
    """Run a driver call, turning connection failures into BackendUnavailable."""
    try:
        return call()
    except redis.exceptions.AuthenticationError as exc:
        raise BackendUnavailable(f"Redis refused the credentials in the URL: {exc}") from None
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, socket.timeout) as exc:
        raise BackendUnavailable(f"Redis is unreachable: {type(exc).__name__}: {exc}") from None
    except redis.exceptions.ResponseError as exc:
        raise BrokerError(f"Redis refused the operation: {exc}") from None
