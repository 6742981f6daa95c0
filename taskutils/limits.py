"""Limit: how many tasks of one key may run at once and how fast they may start; Limits: the
mapping of a queue's limits, stored in its backend and shared by every handler and worker."""

from __future__ import annotations

import math
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any, Iterator

from .errors import InvalidTask

MAX_KEY_LENGTH = 256  # characters of a task key
MAX_PER = 366 * 24 * 3600.0  # the longest `per` accepted: a year


def check_key(key: Any) -> str:
    """A task key, checked: a non-empty string without "|" or control characters."""
    if not isinstance(key, str) or not 0 < len(key) <= MAX_KEY_LENGTH:
        raise InvalidTask(f"a task key must be a string of 1 to {MAX_KEY_LENGTH} characters, got {key!r}")
    if "|" in key or not key.isprintable():
        raise InvalidTask(f"a task key must not hold '|' or control characters, got {key!r}")
    return key


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Limit:
    """At most `concurrency` tasks of a key running at once, fleet-wide, and starts spaced so
    that at most `burst` start at once and at most `rate` start in any `per` seconds (None:
    no such bound). `adaptive`: a Throttled task halves the key's rate (down to rate/16), and
    each success adds rate/32 back."""

    concurrency: int | None = None
    rate: float | None = None
    per: float = 1.0
    burst: int = 1
    adaptive: bool = False

    def __post_init__(self) -> None:
        if self.concurrency is not None and (
            not isinstance(self.concurrency, int) or isinstance(self.concurrency, bool) or self.concurrency < 1
        ):
            raise InvalidTask(f"Limit concurrency must be an int >= 1 or None, got {self.concurrency!r}")
        if self.rate is not None and (not _number(self.rate) or not 0 < self.rate < math.inf):
            raise InvalidTask(f"Limit rate must be a finite number > 0 or None, got {self.rate!r}")
        if not _number(self.per) or not 0 < self.per <= MAX_PER:
            raise InvalidTask(f"Limit per must be a number of seconds > 0 and up to a year, got {self.per!r}")
        if not isinstance(self.burst, int) or isinstance(self.burst, bool) or self.burst < 1:
            raise InvalidTask(f"Limit burst must be an int >= 1, got {self.burst!r}")
        if self.burst > 1 and (self.rate is None or self.burst > self.rate):
            raise InvalidTask(
                f"Limit burst={self.burst} needs a rate of at least {self.burst} per {self.per:g}s: "
                "a burst is that many starts at once, within the rate"
            )
        if not isinstance(self.adaptive, bool):
            raise InvalidTask(f"Limit adaptive must be True or False, got {self.adaptive!r}")
        if self.adaptive and self.rate is None:
            raise InvalidTask("Limit(adaptive=True) needs a rate to adapt")
        object.__setattr__(self, "per", float(self.per))
        if self.rate is not None:
            object.__setattr__(self, "rate", float(self.rate))

    @property
    def interval(self) -> float | None:
        """Seconds between starts at the full rate, or None without a rate."""
        return None if self.rate is None else self.per / self.rate

    def encode(self) -> str:
        """The stored form: "<concurrency>|<rate>|<per>|<burst>|<adaptive 1/0>"."""
        concurrency = "" if self.concurrency is None else str(self.concurrency)
        rate = "" if self.rate is None else repr(self.rate)
        return f"{concurrency}|{rate}|{self.per!r}|{self.burst}|{int(self.adaptive)}"

    @classmethod
    def decode(cls, text: str) -> "Limit":
        concurrency, rate, per, burst, adaptive = text.split("|")
        return cls(
            int(concurrency) if concurrency else None, float(rate) if rate else None, float(per), int(burst),
            adaptive == "1",
        )


class Limits(MutableMapping[str, Limit]):
    """key -> Limit of one queue, and `default`: the Limit of every key without its own (None:
    unlimited). Changes apply from each key's next start."""

    def __init__(self, backend: Any, queue: str):
        self._backend, self._queue = backend, queue

    @property
    def default(self) -> Limit | None:
        text = self._backend.limit_get(self._queue, None)
        return None if text is None else Limit.decode(text)

    @default.setter
    def default(self, limit: Limit | None) -> None:
        self._backend.limit_set(self._queue, None, None if limit is None else _checked(limit, "limits.default").encode())

    def __setitem__(self, key: str, limit: Limit) -> None:
        self._backend.limit_set(self._queue, check_key(key), _checked(limit, f"limits[{key!r}]").encode())

    def __getitem__(self, key: str) -> Limit:
        text = self._backend.limit_get(self._queue, check_key(key)) if isinstance(key, str) and key else None
        if text is None:
            raise KeyError(key)
        return Limit.decode(text)

    def __delitem__(self, key: str) -> None:
        if not self._backend.limit_set(self._queue, check_key(key), None):
            raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._backend.limit_keys(self._queue))

    def __len__(self) -> int:
        return len(self._backend.limit_keys(self._queue))


def _checked(limit: Any, where: str) -> Limit:
    if not isinstance(limit, Limit):
        raise InvalidTask(f"{where} must be a Limit, got {limit!r}")
    return limit
