"""The routes of `taskutils-worker --http`: /metrics, /livez and /readyz, for one worker process
or for the supervisor of `--processes N` (which serves every child's metrics)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..backends.base import Backend
from ..http_endpoints import TEXT, Route, checked
from ..metrics import MISSING, prometheus_client
from .lifecycle import PING_TIMEOUT, Worker


def worker_routes(worker: Worker) -> dict[str, Route]:
    """/livez: the worker's loops turn (no broker call); /readyz: the broker answers, the
    heartbeat is current and it is not draining."""
    def live() -> tuple[int, str, bytes]:
        stalled = worker.stalled()
        return checked(stalled is None, stalled or "")

    def ready() -> tuple[int, str, bytes]:
        problem = worker.unready()
        return checked(problem is None, problem or "")

    return {"/metrics": metrics_route(before=worker.observer.fold), "/livez": live, "/readyz": ready}


def supervisor_routes(backend: Backend, folder: str, live: Callable[[], str | None],
                      ready: Callable[[], str | None]) -> dict[str, Route]:
    """The supervisor's: every child's metrics from the multiprocess `folder`; /livez and
    /readyz from its own checks (`live`, `ready` return a problem or None) and a PING."""
    def readiness() -> tuple[int, str, bytes]:
        problem = ready() or (None if backend.ping(PING_TIMEOUT) else f"the broker did not answer a PING within {PING_TIMEOUT:g}s")
        return checked(problem is None, problem or "")

    def liveness() -> tuple[int, str, bytes]:
        problem = live()
        return checked(problem is None, problem or "")

    return {"/metrics": metrics_route(folder), "/livez": liveness, "/readyz": readiness}


def metrics_route(folder: str | None = None, before: Callable[[], None] | None = None, registry: Any = None) -> Route:
    """The Prometheus text of `registry` (default: this process's, calling `before` first), or of
    every process writing to `folder`; 501 with what to install when prometheus_client is not
    installed."""
    if prometheus_client is None:
        return lambda: (501, TEXT, (MISSING + "\n").encode())
    if folder is None:
        registry = registry or prometheus_client.REGISTRY
    else:
        from prometheus_client import multiprocess

        registry = prometheus_client.CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=folder)

    def route() -> tuple[int, str, bytes]:
        if before is not None:
            before()
        return 200, prometheus_client.CONTENT_TYPE_LATEST, prometheus_client.generate_latest(registry)

    return route
