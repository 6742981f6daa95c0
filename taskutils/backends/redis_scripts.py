"""What goes over the wire to Redis: key prefixes (the layout is in redis.py), the Lua scripts,
and the argument and reply formats of the exchange."""

from __future__ import annotations

import functools
import hashlib
import os
from importlib import resources
from typing import Any, Sequence

from .records import Claim, Ending, Exchange, ExchangeReply, NewTask

FLEET = "tu:"  # keys outside the queues
DELAYED = (Ending.RETRY, Ending.THROTTLE)  # endings whose data is a delay in seconds


def prefix(queue: str) -> str:
    """The key prefix of one queue."""
    return f"{FLEET}{{{queue}}}:"


# Each script: the helper files it needs, in order; its own file comes last.
SCRIPTS = {
    "enqueue": ("_prelude", "_store", "_unique", "_lanes", "_queue", "_enqueue"),
    "exchange": ("_prelude", "_store", "_unique", "_lanes", "_queue", "_enqueue", "_leases", "_settle", "_recurrent", "_claim"),
    "cancel": ("_prelude", "_store", "_unique"),
    "renew": ("_prelude", "_store"),
    "rest": ("_prelude", "_store", "_lanes", "_queue"),
    "counts": ("_prelude",),
    "status": ("_prelude",),
    "requeue_failed": ("_prelude", "_store", "_lanes", "_queue"),
    "schedule_recurrent": ("_prelude", "_store", "_lanes", "_queue"),
    "set_limit": ("_prelude", "_store", "_lanes", "_queue"),
    "pause": ("_prelude", "_store", "_lanes", "_queue"),
    "cron_refill": ("_prelude", "_store", "_lanes", "_queue"),
    "sweep_unique": ("_prelude", "_store", "_unique"),
    "register_worker": ("_prelude", "_store"),
    "purge": ("_prelude", "_store", "_unique", "_lanes", "_queue"),
}


READ_ONLY = ("counts", "status")  # scripts that write nothing: Redis runs them even when full


class Scripts:
    """The scripts, two ways. For EVALSHA: each script's source (its helpers, then its own file)
    and SHA1. For Redis 7 Functions: one library holding every helper once and each script as a
    function, so that a call no longer makes its helpers anew (about 25 us per call on this
    project's machine, measured). The library's name and its functions' names carry a digest of
    its text, so versions of taskutils that share a server each call their own."""

    def __init__(self) -> None:
        folder = resources.files(__package__) / "lua"
        helpers = list(dict.fromkeys(part for parts in SCRIPTS.values() for part in parts))
        text = {part: (folder / f"{part}.lua").read_text() for part in (*helpers, *SCRIPTS)}
        self._sources = {
            name: "\n".join(["local call_keys, call_args = KEYS, ARGV", *(text[part] for part in parts),
                             "begin_call(call_keys, call_args, false)", _ended(text[name])])
            for name, parts in SCRIPTS.items()
        }
        self._shas = {name: hashlib.sha1(source.encode()).hexdigest() for name, source in self._sources.items()}
        functions = [
            "redis.register_function{function_name = 'tu_VERSION_" + name + "', callback = function(call_keys, call_args)\n"
            + "begin_call(call_keys, call_args, true)\n" + _ended(text[name]) + "\nend, flags = {" + ("'no-writes'" if name in READ_ONLY else "") + "}}"
            for name in SCRIPTS
        ]
        body = "\n".join([*(text[part] for part in helpers), *functions])
        self._version = hashlib.sha1(body.encode()).hexdigest()[:12]
        self._library = f"#!lua name=taskutils_{self._version}\n" + body.replace("tu_VERSION_", f"tu_{self._version}_")

    def source(self, name: str) -> str:
        return self._sources[name]

    def sha(self, name: str) -> str:
        return self._shas[name]

    def library(self) -> str:
        """The Redis Functions library (FUNCTION LOAD)."""
        return self._library

    def function(self, name: str) -> str:
        """The name of a script's function in the library (FCALL)."""
        return f"tu_{self._version}_{name}"


def _ended(script: str) -> str:
    """A script's own text, run so that end_call (lua/_prelude.lua) follows it, whether it returns
    or raises (a step may raise after earlier steps of the call wrote)."""
    return ("local call_done, call_result = pcall(function()\n" + script + "\nend)\nend_call()\n"
            "if not call_done then error(call_result, 0) end\nreturn call_result")


@functools.lru_cache(maxsize=64)  # once per consumer, not at every exchange
def consumer_tag(consumer: str) -> str:
    """The first 8 characters of the lease tokens a consumer gets: who holds a running task."""
    return hashlib.sha1(consumer.encode()).hexdigest()[:8]


def exchange_args(request: Exchange) -> list[Any]:
    """ARGV of exchange.lua; its lease tokens start with the consumer's tag (consumer_tag)."""
    args: list[Any] = [
        request.consumer, request.want, repr(request.lease), repr(request.idle_for), repr(request.result_ttl),
        consumer_tag(request.consumer) + os.urandom(3).hex(), tally_text(request.tally),
    ]
    args.append(len(request.settlements))
    for settled in request.settlements:
        claim = settled.claim
        data = repr(settled.delay) if settled.ending in DELAYED else settled.outcome
        args += [settled.ending.value, claim.task_id.rpartition("-")[2], claim.token, data, settled.record,
                 len(settled.follow_ups)]
    for settled in request.settlements:
        for task in settled.follow_ups:
            args += task_args(task)
    return args


def task_args(task: NewTask) -> list[Any]:
    """A task's group of ARGV in enqueue.lua and exchange.lua (lua/_enqueue.lua)."""
    return [str(task.priority), repr(float(task.delay)), task.key or "", unique_digest(task.unique),
            repr(float(task.unique_for)), task.body]


def tally_text(tally: Sequence[tuple[int, int, int, int]]) -> str:
    """Exchange.tally as exchange.lua reads it: "<minute> <done> <failed> <retried>" groups, ";" between."""
    return ";".join(" ".join(map(str, counts)) for counts in tally)


def exchange_reply(request: Exchange, reply: list[Any]) -> ExchangeReply:
    """What exchange.lua returned, as records."""
    flags, _, reason = reply[0].partition(b"\n")
    applied: list[bool | None] = [flag == ord("1") for flag in flags]
    unsettled = tuple(k for k, flag in enumerate(flags) if flag == ord("e")) if b"e" in flags else ()
    refused = {"unsettled": unsettled, "unsettled_reason": reason.decode(errors="replace")} if unsettled else {}
    if request.want <= 0:
        return ExchangeReply(applied, [], **refused)
    epoch, queue, claims = reply[1].decode(), request.queue, []
    for i in range(5, len(reply), 2):
        seq, failures, crashes, body = reply[i + 1].split(b"|", 3)
        key = None
        if body[:1] == b"@" and b"|" in body:  # a keyed task (lua/_lanes.lua)
            name, body = body[1:].split(b"|", 1)
            key = name.decode(errors="replace") or None
        claims.append(
            Claim(queue, f"{epoch}-{seq.decode()}", reply[i].decode(), body, int(failures), int(crashes), key)
        )
    next_due, work_due = (float(due) for due in (reply[3].split() + [b"-1"])[:2])
    return ExchangeReply(applied, claims, None if next_due < 0 else next_due, reply[2] == 1, reply[4] == 1,
                         None if work_due < 0 else work_due, **refused)


def unknown_outcomes(reply: ExchangeReply) -> ExchangeReply:
    """The reply of an exchange sent again after its first reply was lost: a refusal may mean
    that the lost attempt settled that task, so it is unknown (None), not False."""
    return reply._replace(applied=[True if done else None for done in reply.applied])


def unique_digest(value: str | None) -> str:
    """How lua/_unique.lua keeps a unique value: the first 24 hex digits of its SHA-1 ("" for none)."""
    return "" if value is None else hashlib.sha1(value.encode()).hexdigest()[:24]
