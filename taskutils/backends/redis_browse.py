"""Reading a Redis queue's tasks for people (browse.py): by state, by id, its keys' backlogs and
its per-minute history. Plain reads (key layout: redis.py); none of them changes a queue.

Listing reads at most what it shows. Finding one queued or scheduled task by id scans its
lists, at most SCAN_LIMIT entries: a task further back than that is reported as queued (or
scheduled) without its body. The keyed lanes with ready tasks are found where dispatch keeps
them (turns, later) and, for keys at their concurrency limit, from the keys of running tasks: no
SCAN of the keyspace, which would walk every key of the database. Only purge SCANs, to miss
nothing. Tasks cancelled while they wait stay in their lists until a claim meets them: they
count in key_backlog until then.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import redis

from .records import (
    FAILED,
    QUEUED,
    RUNNING,
    SCHEDULED,
    TOP_PRIORITY,
    StoredTask,
    failed_task,
    split_id,
)
from ..errors import BrokerError
from .redis_client import mapped
from .redis_scripts import FLEET, consumer_tag, prefix

SCAN_LIMIT = 100_000  # entries a search for one task reads at most
KEY_SCAN_LIMIT = 10_000  # task keys key_backlog looks at at most
CHUNK = 500


class RedisBrowse:
    """The browsing half of RedisInspection, on its client and script runner."""

    client: redis.Redis
    _run: Callable[..., Any]
    status: Callable[[str, str], tuple[str | None, bytes | None]]

    def tasks(self, queue: str, state: str, limit: int) -> list[StoredTask]:
        if limit <= 0:
            return []
        p, epoch = prefix(queue), self._epoch(queue)
        if state == RUNNING:
            workers = self._consumers_by_tag()
            return [_running(epoch, value, workers) for _, value in zip(range(limit), self._hash_values(p + "inflight"))]
        if state == FAILED:
            values = [value for _, value in zip(range(limit), self._hash_values(p + "failed"))]
            seqs = [_envelope_seq(value.partition(b"|")[2]) for value in values]
            records = mapped(lambda: self.client.hmget(p + "failed_info", seqs)) if seqs else []  # one round trip
            return [_failed(epoch, value, record or b"") for value, record in zip(values, records)]
        cancelled = self._members(p + ("cancel_s" if state == SCHEDULED else "cancel_q"))
        found = self._scheduled(p) if state == SCHEDULED else self._queued(p)
        tasks: list[StoredTask] = []
        for task in found:
            if task.task_id.encode() not in cancelled:
                tasks.append(task._replace(task_id=f"{epoch}-{task.task_id}"))
                if len(tasks) >= limit:
                    break
        return tasks

    def task(self, queue: str, task_id: str) -> StoredTask | None:
        state, _ = self.status(queue, task_id)
        epoch, seq = split_id(task_id)
        p = prefix(queue)
        if state == RUNNING:
            value = mapped(lambda: self.client.hget(p + "inflight", seq))
            return _running(epoch, value, self._consumers_by_tag()) if value else None
        if state is None:
            if epoch != self._epoch(queue):  # an id of a queue Redis lost and that was made again
                return None
            value = mapped(lambda: self.client.hget(p + "failed", seq))
            return _failed(epoch, value, self._failure(p, value, seq)) if value else None
        found = self._scheduled(p) if state == SCHEDULED else self._queued(p)
        for _, task in zip(range(SCAN_LIMIT), found):
            if task.task_id == seq:
                return task._replace(task_id=task_id)
        return StoredTask(task_id, state, b"")  # further back than a search reads

    def key_backlog(self, queue: str, limit: int) -> list[tuple[str, int]]:
        p = prefix(queue)
        names = self._keyed_lanes(p)
        backlog: list[tuple[str, int]] = []
        for start in range(0, len(names), CHUNK):
            batch = names[start : start + CHUNK]
            pipe = self.client.pipeline(transaction=False)
            for name in batch:
                pipe.zrange(p + "kp:" + name, 0, -1)
            levels = mapped(lambda: pipe.execute(raise_on_error=False))
            pipe = self.client.pipeline(transaction=False)
            counted = []
            for name, found in zip(batch, levels):
                for level in found if isinstance(found, list) else []:
                    pipe.llen(p + "kq:" + name + ":" + level.decode())
                    counted.append(name)
            totals: dict[str, int] = {}
            for name, length in zip(counted, mapped(lambda: pipe.execute(raise_on_error=False)) if counted else []):
                totals[name] = totals.get(name, 0) + (length if isinstance(length, int) else 0)
            backlog += totals.items()
        return sorted(backlog, key=lambda item: (-item[1], item[0]))[:limit]

    def history(self, queue: str, since_minute: int) -> dict[int, tuple[int, int, int]]:
        p = prefix(queue)
        now_minute = int(self._now() // 60)
        hours = range(since_minute // 60, now_minute // 60 + 1)
        pipe = self.client.pipeline(transaction=False)
        for hour in hours:
            pipe.hgetall(f"{p}hist:{hour}")
        counts: dict[int, list[int]] = {}
        for hour, fields in zip(hours, mapped(lambda: pipe.execute(raise_on_error=False))):
            for field, value in fields.items() if isinstance(fields, dict) else ():
                minute, kind = hour * 60 + int(field[:-1] or 0), b"dfr".find(field[-1:])
                if minute >= since_minute and kind >= 0 and value.isdigit():
                    counts.setdefault(minute, [0, 0, 0])[kind] += int(value)
        return {minute: (d, f, r) for minute, (d, f, r) in counts.items()}

    def purge(self, queue: str) -> int:
        p, purged = prefix(queue), 0
        lanes = ["s", ""] + ["@" + key[len(p) + 3 :] for key in self._scan(glob_escaped(p) + "kp:*")]
        broken: list[tuple[str, BrokerError]] = []
        for lane in lanes:
            removed = 1
            try:
                while removed:
                    removed, dropped = self._run("purge", p, [lane], hot=False)
                    purged += dropped
            except BrokerError as exc:  # a damaged key: the other lanes are purged all the same
                broken.append((lane, exc))
        if broken:
            names = ", ".join("the schedule" if lane == "s" else repr(lane[1:]) if lane else "the unkeyed lane"
                              for lane, _ in broken)
            raise BrokerError(f"purged {purged} task(s) of {queue!r}, but not those of {names}: {broken[0][1]}")
        return purged

    # -- reading --------------------------------------------------------------------------------

    def _now(self) -> float:
        seconds, micros = mapped(self.client.time)
        return seconds + micros / 1e6

    def _epoch(self, queue: str) -> str:
        return (mapped(lambda: self.client.get(prefix(queue) + "epoch")) or b"").decode()

    def _members(self, key: str) -> set[bytes]:
        try:
            return set(mapped(lambda: self.client.smembers(key)))
        except Exception:  # a mark set of the wrong type: exchanges report it
            return set()

    def _scan(self, pattern: str) -> Iterator[str]:
        for key in mapped(lambda: list(self.client.scan_iter(pattern, count=1000))):
            yield key.decode(errors="replace")

    def _hash_values(self, key: str) -> Iterator[bytes]:
        cursor = 0
        while True:
            cursor, page = mapped(lambda: self.client.hscan(key, cursor, count=CHUNK))
            yield from page.values()
            if not cursor:
                return

    def _list(self, key: str) -> Iterator[bytes]:
        for start in range(0, SCAN_LIMIT, CHUNK):
            page = mapped(lambda: self.client.lrange(key, start, start + CHUNK - 1))
            yield from page
            if len(page) < CHUNK:
                return

    def _queued(self, p: str) -> Iterator[StoredTask]:
        """Ready tasks without their epoch: the unkeyed lane by priority, then each keyed lane."""
        for level in mapped(lambda: self.client.zrange(p + "prios", 0, -1)):
            for envelope in self._list(p + "ready:" + level.decode()):
                yield _stored(QUEUED, level, envelope)
        for name in self._keyed_lanes(p):
            for level in mapped(lambda: self.client.zrange(p + "kp:" + name, 0, -1)):
                for envelope in self._list(p + "kq:" + name + ":" + level.decode()):
                    yield _stored(QUEUED, level, envelope)

    def _scheduled(self, p: str) -> Iterator[StoredTask]:
        for start in range(0, SCAN_LIMIT, CHUNK):
            page = mapped(lambda: self.client.zrange(p + "scheduled", start, start + CHUNK - 1, withscores=True))
            for member, due in page:
                level, _, envelope = member.partition(b"|")
                yield _stored(SCHEDULED, level, envelope)._replace(due=due)
            if len(page) < CHUNK:
                return

    def _keyed_lanes(self, p: str) -> list[str]:
        """Up to KEY_SCAN_LIMIT keys that may have ready tasks, in dispatch order: those in the
        turns, then in `later`, then those of running tasks (a key at its concurrency limit is in
        neither, and has tasks running)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.zrange(p + "turns", 0, KEY_SCAN_LIMIT - 1)
        pipe.zrange(p + "later", 0, KEY_SCAN_LIMIT - 1)
        turns, later = (found if isinstance(found, list) else [] for found in mapped(lambda: pipe.execute(raise_on_error=False)))
        names = dict.fromkeys(name.decode(errors="replace") for name in [*turns, *later])
        try:
            for _, value in zip(range(KEY_SCAN_LIMIT), self._hash_values(p + "inflight")):
                key = _running("", value, {}).key
                if key:
                    names.setdefault(key, None)
        except BrokerError:  # a damaged inflight key: exchanges report it
            pass
        names.pop("", None)  # the unkeyed lane
        return list(names)[:KEY_SCAN_LIMIT]

    def _failure(self, p: str, value: bytes, seq: str | None = None) -> bytes:
        seq = seq or _envelope_seq(value.partition(b"|")[2])
        return mapped(lambda: self.client.hget(p + "failed_info", seq)) or b""

    def _consumers_by_tag(self) -> dict[str, str]:
        consumers = mapped(lambda: self.client.zrange(FLEET + "workers", 0, -1))
        return {consumer_tag(c.decode()): c.decode() for c in consumers}


def glob_escaped(text: str) -> str:
    """`text` as a literal in a SCAN MATCH pattern (a queue named "a*" matches only itself)."""
    return "".join("\\" + char if char in "\\*?[]" else char for char in text)


def _envelope_seq(envelope: bytes) -> str:
    return envelope.partition(b"|")[0].decode(errors="replace")


def _stored(state: str, level: bytes, envelope: bytes) -> StoredTask:
    """A task from "<level>" and its envelope "<seq>|<failures>|<crashes>|<body>"; its id is its seq."""
    parts = envelope.split(b"|", 3)
    if len(parts) < 4 or not parts[1].isdigit() or not parts[2].isdigit():
        return StoredTask(_envelope_seq(envelope), state, envelope)
    seq, failures, crashes, body = parts
    key = None
    if body[:1] == b"@" and b"|" in body:
        name, body = body[1:].split(b"|", 1)
        key = name.decode(errors="replace")
    priority = TOP_PRIORITY if level == b"max" else int(level) if level.lstrip(b"-").isdigit() else 0
    return StoredTask(seq.decode(), state, body, priority, key, int(failures), int(crashes))


def _running(epoch: str, value: bytes, workers: dict[str, str]) -> StoredTask:
    token, _, rest = value.partition(b"|")
    level, _, envelope = rest.partition(b"|")
    task = _stored(RUNNING, level, envelope)
    tag = token[:8].decode(errors="replace")
    return task._replace(task_id=f"{epoch}-{task.task_id}", worker=workers.get(tag, tag))


def _failed(epoch: str, value: bytes, record: bytes) -> StoredTask:
    level, _, envelope = value.partition(b"|")
    task = _stored(FAILED, level, envelope)
    return failed_task(task._replace(task_id=f"{epoch}-{task.task_id}"), record)
