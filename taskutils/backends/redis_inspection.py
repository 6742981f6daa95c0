"""Inspection and administration of the Redis backend: task status, counts, the failed store,
queues, caps, and the fleet's worker registry (key layout: redis.py)."""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable, Mapping, Sequence

import redis

from ..errors import BrokerError
from .base import Inspection
from .records import QUEUED, RUNNING, SCHEDULED, Counts, split_id
from .redis_client import mapped
from .redis_scripts import FLEET, consumer_tag, prefix

STATES = {b"s": SCHEDULED, b"q": QUEUED, b"r": RUNNING}


class RedisInspection(Inspection):
    """The Inspection half of RedisBackend, on its client and its script runner."""

    client: redis.Redis
    _run: Callable[..., Any]

    def status(self, queue: str, task_id: str) -> tuple[str | None, bytes | None]:
        epoch, seq = split_id(task_id)
        if not seq:
            return None, None
        state, outcome = self._run("status", prefix(queue), [epoch, seq], hot=False)
        return STATES.get(state) if state else None, outcome if outcome is not None else None

    def counts(self, queue: str) -> Counts:
        return Counts(*self._run("counts", prefix(queue), [], hot=False))

    def failed(self, queue: str) -> dict[str, bytes]:
        pipe = self.client.pipeline(transaction=True)
        pipe.get(prefix(queue) + "epoch")
        pipe.hkeys(prefix(queue) + "failed")
        pipe.hgetall(prefix(queue) + "failed_info")
        epoch, seqs, info = mapped(pipe.execute)
        epoch = (epoch or b"").decode()
        return {f"{epoch}-{seq.decode()}": info.get(seq, b"") for seq in seqs}

    def requeue_failed(self, queue: str, task_ids: Sequence[str]) -> list[str]:
        seqs = {split_id(task_id)[1]: task_id for task_id in task_ids}
        seqs.pop("", None)
        if not seqs:
            return []
        return [seqs[seq.decode()] for seq in self._run("requeue_failed", prefix(queue), list(seqs), hot=False)]

    def purge_failed(self, queue: str, task_ids: Sequence[str] | None) -> int:
        failed, info = prefix(queue) + "failed", prefix(queue) + "failed_info"
        seqs = None if task_ids is None else [seq for seq in (split_id(i)[1] for i in task_ids) if seq]
        if seqs == []:
            return 0
        pipe = self.client.pipeline(transaction=True)
        if seqs is None:
            pipe.hlen(failed)
            pipe.delete(failed, info)
        else:
            pipe.hdel(failed, *seqs)
            pipe.hdel(info, *seqs)
        return int(mapped(pipe.execute)[0])

    def queues(self) -> list[str]:
        keys = mapped(lambda: list(self.client.scan_iter("tu:{*}:epoch", count=1000)))  # made with each queue
        return sorted({key.decode()[4:-7] for key in keys})

    def set_max_concurrency(self, queue: str, limit: int | None) -> None:
        key = prefix(queue) + "config"
        if limit is None:
            mapped(lambda: self.client.hdel(key, "max_concurrency"))
        else:
            mapped(lambda: self.client.hset(key, "max_concurrency", limit))

    def max_concurrency(self, queue: str) -> int | None:
        try:
            text = mapped(lambda: self.client.hget(prefix(queue) + "config", "max_concurrency"))
        except BrokerError:  # a damaged config key: exchanges report it
            return None
        return int(text) if text and text.isdigit() else None

    def register_worker(self, consumer: str, info: Mapping[str, str], ttl: float) -> None:
        fields = [item for pair in info.items() for item in pair]
        self._run("register_worker", FLEET, [consumer, repr(ttl), *fields], hot=False)

    def unregister_worker(self, consumer: str) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(FLEET + "worker:" + consumer)
        pipe.zrem(FLEET + "workers", consumer)
        mapped(pipe.execute)

    def workers(self, count_running: bool = True) -> list[dict[str, str]]:
        consumers = [c.decode() for c in mapped(lambda: self.client.zrange(FLEET + "workers", 0, -1))]
        pipe = self.client.pipeline(transaction=False)
        for consumer in consumers:
            pipe.hgetall(FLEET + "worker:" + consumer)
        found, gone = [], []
        for consumer, fields in zip(consumers, mapped(pipe.execute) if consumers else []):
            if fields:
                found.append({k.decode(): v.decode() for k, v in fields.items()} | {"consumer": consumer})
            else:
                gone.append(consumer)
        if gone:
            mapped(lambda: self.client.zrem(FLEET + "workers", *gone))
        running = self._running_by_tag() if count_running and found else Counter()
        for worker in found if count_running else ():  # counted now, from the leases (the registration's count is as old as its heartbeat)
            worker["running"] = str(running[consumer_tag(worker["consumer"])])
        return found

    def _running_by_tag(self) -> Counter[str]:
        """Running tasks of every queue, by the tag their lease tokens start with."""
        queues = self.queues()
        pipe = self.client.pipeline(transaction=False)
        for queue in queues:
            pipe.hvals(prefix(queue) + "inflight")
        counts: Counter[str] = Counter()
        for leases in mapped(lambda: pipe.execute(raise_on_error=False)) if queues else []:
            if not isinstance(leases, Exception):  # a damaged inflight key: exchanges report it
                counts.update(lease[:8].decode(errors="replace") for lease in leases)
        return counts

    def warnings(self) -> list[str]:
        try:
            policy = mapped(lambda: self.client.config_get("maxmemory-policy")).get("maxmemory-policy")
        except BrokerError:
            return []  # CONFIG is not allowed for this user: nothing to check
        if policy and policy != "noeviction":
            return [f"Redis maxmemory-policy is {policy!r}: under memory pressure Redis may evict tasks; set it to 'noeviction'"]
        return []
