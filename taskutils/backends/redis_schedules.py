"""The Redis backend's schedules (recurrent, cron), key limits, cancellation and the sweep of
unique values (redis.py holds the hot path), on its client and its script runner."""

from __future__ import annotations

from typing import Any, Callable

import redis

from ..errors import BrokerError
from ..recurrent import more_cron_times
from .records import RecurrentRecord, split_id
from .redis_client import mapped
from .redis_scripts import prefix

UNIQUE_SWEEP = 256  # value hashes each heartbeat sweeps of expired holds: all 65,536 in 256 heartbeats


class RedisSchedules:
    """Everything of RedisBackend that is neither the hot path nor inspection."""

    client: redis.Redis
    _run: Callable[..., Any]
    now: Callable[[], float]

    # -- schedules -------------------------------------------------------------------------------

    def recurrent_put(self, queue: str, name: str, record: RecurrentRecord) -> bool:
        stop = "" if record.stop is None else repr(record.stop)
        args = [
            name, record.body, repr(record.interval), record.repeats, stop, repr(record.next_run), record.definition,
            record.cron, record.timezone, record.misfire, record.max_catch_up, *map(repr, record.times),
        ]
        return bool(self._run("schedule_recurrent", prefix(queue), args, hot=False))

    def recurrent_get(self, queue: str, name: str) -> RecurrentRecord | None:
        pipe = self.client.pipeline(transaction=True)
        pipe.hgetall(prefix(queue) + "rec:" + name)
        pipe.zscore(prefix(queue) + "rec", name)
        fields, next_run = mapped(pipe.execute)
        if not fields or next_run is None or b"body" not in fields:
            return None
        text = {key.decode(): value.decode(errors="replace") for key, value in fields.items() if key != b"body"}
        return RecurrentRecord(
            fields[b"body"], float(text.get("interval") or 0), int(text.get("repeats") or 1),
            float(text["stop"]) if text.get("stop") else None, next_run, fields.get(b"definition", b""),
            text.get("cron", ""), text.get("tz", ""), text.get("misfire") or "coalesce",
            int(text.get("max_catch_up") or 100), last_run=float(text["last"]) if text.get("last") else None,
        )

    def sweep_unique(self, queue: str) -> int:
        return int(self._run("sweep_unique", prefix(queue), [UNIQUE_SWEEP], hot=False))

    def refill_cron(self, queue: str) -> int:
        """Compute more run times for the cron schedules of `queue` that are running low."""
        refilled = 0
        for raw in mapped(lambda: self.client.smembers(prefix(queue) + "cron_low")):
            name = raw.decode(errors="replace")
            fields = mapped(lambda: self.client.hmget(
                prefix(queue) + "rec:" + name, "cron", "tz", "through", "stop", "max_catch_up"
            ))
            cron, zone, through, stop, most = (value.decode() if value else "" for value in fields)
            times = more_cron_times(cron, zone, float(through or 0), float(stop) if stop else None, int(most or 100),
                                    self.now()) if cron else []
            refilled += bool(self._run("cron_refill", prefix(queue), [name, through, *map(repr, times)], hot=False))
        return refilled

    def recurrent_delete(self, queue: str, name: str) -> bool:
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(prefix(queue) + "rec:" + name)
        pipe.zrem(prefix(queue) + "rec", name)
        return bool(mapped(pipe.execute)[1])

    def recurrent_names(self, queue: str) -> list[str]:
        return [name.decode() for name in mapped(lambda: self.client.zrange(prefix(queue) + "rec", 0, -1))]

    # -- cancellation ----------------------------------------------------------------------------

    def cancel(self, queue: str, task_id: str, outcome: bytes, result_ttl: float) -> bool:
        epoch, seq = split_id(task_id)
        if not seq:
            return False
        return bool(self._run("cancel", prefix(queue), [epoch, seq, repr(float(result_ttl)), outcome], hot=False))

    def cancel_requested(self, queue: str, task_id: str) -> bool:
        seq = split_id(task_id)[1]
        return bool(seq) and bool(mapped(lambda: self.client.sismember(prefix(queue) + "cancel_run", seq)))

    # -- pausing a queue across the fleet -------------------------------------------------------------

    def set_paused(self, queue: str, paused: bool) -> bool:
        return bool(self._run("pause", prefix(queue), ["1" if paused else "0"], hot=False))

    def paused(self, queue: str) -> bool:
        """False also when the queue's config key holds the wrong type: its exchanges report that."""
        try:
            return mapped(lambda: self.client.hget(prefix(queue) + "config", "paused")) is not None
        except BrokerError:
            return False

    # -- limits of task keys ----------------------------------------------------------------------

    def limit_set(self, queue: str, key: str | None, limit: str | None) -> bool:
        return bool(self._run("set_limit", prefix(queue), [key or "", limit or ""], hot=False))

    def limit_get(self, queue: str, key: str | None) -> str | None:
        if key is None:
            text = mapped(lambda: self.client.hget(prefix(queue) + "config", "default_limit"))
        else:
            text = mapped(lambda: self.client.hget(prefix(queue) + "limits", key))
        return None if text is None else text.decode()

    def limit_keys(self, queue: str) -> list[str]:
        return sorted(key.decode() for key in mapped(lambda: self.client.hkeys(prefix(queue) + "limits")))
