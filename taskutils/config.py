"""One settings object for handlers and workers: arguments > TASKUTILS_* environment > defaults."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields
from typing import Any, Mapping

from .backends.redis_url import checked_url
from .http_endpoints import parse_address

DEFAULT_REDIS_URL = "redis://localhost:6379/0"


@dataclass(frozen=True)
class Settings:
    """Every tunable of a handler or worker; seconds are floats everywhere."""

    redis_url: str | None = None
    threads: int = 3
    queues: tuple[str, ...] = ("default",)
    imports: tuple[str, ...] = ()
    allow: tuple[str, ...] = ()
    max_concurrency: int | None = None
    visibility_timeout: float = 30.0
    sleep_seconds: float = 2.0
    grace_period: float = 30.0
    result_ttl: float = 3600.0
    broker_timeout: float = 10.0
    max_crashes: int = 3
    max_payload: int = 512 * 1024
    log_level: str = "INFO"
    log_format: str = "text"  # taskutils-worker only: "text" or "json" (logs.py)
    processes: int = 1  # taskutils-worker only: worker processes under one supervisor
    http: str | None = None  # taskutils-worker only: serve /metrics, /livez, /readyz on this address

    def __post_init__(self) -> None:
        if self.redis_url:
            checked_url(self.redis_url)  # InvalidRedisURL, a ValueError
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0, got {self.threads}")
        if self.http:
            parse_address(self.http)  # ValueError naming the address
        if self.processes < 1:
            raise ValueError(f"processes must be >= 1, got {self.processes}")
        if not self.queues or not all(self.queues):
            raise ValueError(f"queues must be non-empty names, got {self.queues!r}")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1 or None, got {self.max_concurrency}")
        for name in ("visibility_timeout", "sleep_seconds", "broker_timeout", "max_crashes", "max_payload"):
            if not 0 < getattr(self, name) < math.inf:
                raise ValueError(f"{name} must be > 0 and finite, got {getattr(self, name)}")
        if self.log_format not in ("text", "json"):
            raise ValueError(f"log_format must be text or json, got {self.log_format!r}")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ValueError(f"log_level must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {self.log_level!r}")
        for name in ("grace_period", "result_ttl"):
            if not 0 <= getattr(self, name) < math.inf:
                raise ValueError(f"{name} must be >= 0 seconds and finite, got {getattr(self, name)}")

    @classmethod
    def build(cls, environ: Mapping[str, str] | None = None, **given: Any) -> "Settings":
        """Settings from explicit values (None means unset), then TASKUTILS_* variables, then defaults."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for spec in fields(cls):
            value = given.get(spec.name)
            if value is None or value == ():
                raw = environ.get("TASKUTILS_" + spec.name.upper())
                if raw not in (None, ""):
                    value = _parse(spec.name, raw)
            if value is not None and value != ():
                values[spec.name] = tuple(value) if isinstance(value, list) else value
        return cls(**values)


def _parse(name: str, raw: str) -> Any:
    """Convert one environment variable's text to the field's type, with a clear error."""
    kind = {
        "threads": int,
        "max_concurrency": int,
        "visibility_timeout": float,
        "sleep_seconds": float,
        "grace_period": float,
        "result_ttl": float,
        "broker_timeout": float,
        "max_crashes": int,
        "max_payload": int,
        "processes": int,
    }.get(name)
    if name in ("queues", "imports", "allow"):
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    if kind is None:
        return raw
    try:
        return kind(raw)
    except ValueError:
        raise ValueError(f"TASKUTILS_{name.upper()}={raw!r} is not a valid {kind.__name__}") from None
