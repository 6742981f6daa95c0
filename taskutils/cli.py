"""taskutils-worker: parse arguments into Settings, start a Worker, drain on SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading
from typing import Sequence

from .affinity import CpuPin, can_pin
from .backends.redis import RedisBackend
from .config import DEFAULT_REDIS_URL, Settings
from .errors import BackendUnavailable
from .worker import Worker, module_allowed

log = logging.getLogger("taskutils.worker")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="taskutils-worker",
        description="Run taskutils tasks from Redis. Every option also reads TASKUTILS_<OPTION> from the environment.",
    )
    parser.add_argument("--redis-url", help=f"Redis URL (TASKUTILS_REDIS_URL, default {DEFAULT_REDIS_URL})")
    parser.add_argument("--threads", type=int, help="runner threads (TASKUTILS_THREADS, default 3)")
    parser.add_argument("--queue", dest="queues", action="append", help="queue to consume, repeatable, in precedence order (TASKUTILS_QUEUES, comma-separated; default 'default')")
    parser.add_argument("--import", dest="imports", action="append", help="module to import at start; its functions (and its submodules') may run (TASKUTILS_IMPORTS)")
    parser.add_argument("--allow", action="append", help="another module whose functions may run, imported on demand (TASKUTILS_ALLOW)")
    parser.add_argument("--max-concurrency", type=int, help="fleet-wide cap of running tasks per queue, stored with the queue (TASKUTILS_MAX_CONCURRENCY)")
    parser.add_argument("--visibility-timeout", type=float, help="seconds a task may go without this worker's heartbeat before another worker gets it (TASKUTILS_VISIBILITY_TIMEOUT, default 30)")
    parser.add_argument("--sleep-seconds", type=float, help="longest an idle worker goes without checking for due work (TASKUTILS_SLEEP_SECONDS, default 2)")
    parser.add_argument("--grace-period", type=float, help="seconds running tasks get to finish after SIGTERM (TASKUTILS_GRACE_PERIOD, default 30)")
    parser.add_argument("--result-ttl", type=float, help="seconds results and status are kept (TASKUTILS_RESULT_TTL, default 3600)")
    parser.add_argument("--broker-timeout", type=float, help="seconds a Redis call retries through an outage before it fails (TASKUTILS_BROKER_TIMEOUT, default 10)")
    parser.add_argument("--max-crashes", type=int, help="crash redeliveries after which a task is quarantined (TASKUTILS_MAX_CRASHES, default 3)")
    parser.add_argument("--max-payload", type=int, help="largest task payload in bytes (TASKUTILS_MAX_PAYLOAD, default 524288)")
    parser.add_argument("--pin-cpu", choices=("auto", "off"), help="auto: while its tasks keep the interpreter busy, keep this process on one CPU no other worker here holds; off: never (TASKUTILS_PIN_CPU, default auto)")
    parser.add_argument("--cpu-locks", help="directory where the worker processes of one machine claim their CPUs; share it between containers of one host (TASKUTILS_CPU_LOCKS, default a folder in the temporary directory)")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR (TASKUTILS_LOG_LEVEL, default INFO)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = Settings.build(**vars(args))
    except ValueError as exc:
        print(f"taskutils-worker: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.path.insert(0, "")
    for module in settings.imports:
        try:
            importlib.import_module(module)
        except Exception:
            log.exception("cannot import --import module %r", module)
            return 2
    url = settings.redis_url or DEFAULT_REDIS_URL
    backend = RedisBackend.from_url(url, settings.broker_timeout)
    allowed = settings.imports + settings.allow + ("__main__",)
    if allowed == ("__main__",):
        log.warning("no --import or --allow given: this worker may run no function at all")
    try:
        for warning in backend.warnings():
            log.warning(warning)
        if settings.max_concurrency is not None:
            for queue in settings.queues:
                backend.set_max_concurrency(queue, settings.max_concurrency)
        pin = CpuPin(settings.cpu_locks) if settings.pin_cpu == "auto" and can_pin() else None
        worker = Worker(backend, settings, lambda module: module_allowed(module, allowed), pin)
    except BackendUnavailable as exc:
        log.error("cannot start: %s", exc)
        return 1
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():
            log.warning("second %s: handing running tasks back and exiting now", name)
            worker.hand_back()
            os._exit(1)
        log.info("%s: stop taking tasks, letting %d running finish (grace %.0fs)", name, worker.running, settings.grace_period)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info(
        "worker %s started: redis %s, queues %s, %d threads, allowed modules %s, visibility timeout %.3gs",
        worker.consumer, _redacted(url), ",".join(settings.queues), settings.threads, ",".join(allowed[:-1]) or "-",
        settings.visibility_timeout,
    )
    try:
        worker.start()
    except BackendUnavailable as exc:
        log.error("cannot start: %s", exc)
        return 1
    while not stop.wait(1.0):
        pass
    finished = worker.stop(settings.grace_period)
    if not finished:
        log.warning("grace period over: running tasks were handed back to the queue")
    log.info("worker %s stopped", worker.consumer)
    backend.close()
    return 0


def _redacted(url: str) -> str:
    """The URL without its password."""
    scheme, sep, rest = url.partition("://")
    if "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    user = credentials.partition(":")[0]
    return f"{scheme}{sep}{user + ':***' if user else '***'}@{host}"


if __name__ == "__main__":
    sys.exit(main())
