"""taskutils-worker: parse arguments into Settings, then run one Worker (or a supervisor of several)."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading
from typing import Sequence

from . import logs, metrics
from .http_endpoints import serve
from .backends.redis import RedisBackend
from .backends.redis_url import redacted
from .config import DEFAULT_REDIS_URL, Settings
from .errors import BackendUnavailable, BrokerError
from .task import module_allowed
from .worker import Worker
from .worker.observer import Observer
from .worker.probes import worker_routes
from .worker.supervisor import BAD_SETTINGS, SUPERVISOR_ENV, Supervisor, orphaned

log = logging.getLogger("taskutils.worker")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="taskutils-worker",
        description="Run taskutils tasks from Redis. Every option also reads TASKUTILS_<OPTION> from the environment.",
    )
    parser.add_argument("--redis-url", help=f"Redis URL (TASKUTILS_REDIS_URL, default {DEFAULT_REDIS_URL})")
    parser.add_argument("--threads", type=int, help="runner threads per process (TASKUTILS_THREADS, default 3)")
    parser.add_argument("--processes", type=int, help="worker processes under one supervisor: one per free core (TASKUTILS_PROCESSES, default 1)")
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
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR (TASKUTILS_LOG_LEVEL, default INFO)")
    parser.add_argument("--http", metavar="[HOST:]PORT", help="serve /metrics, /livez and /readyz here; a bare port binds 127.0.0.1 (TASKUTILS_HTTP; default off)")
    parser.add_argument("--log-format", choices=("text", "json"), help="text lines, or one JSON object per line (TASKUTILS_LOG_FORMAT, default text)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        settings = Settings.build(**vars(parse_args(arguments)))
    except ValueError as exc:
        print(f"taskutils-worker: {exc}", file=sys.stderr)
        return BAD_SETTINGS
    logs.configure(settings.log_level, settings.log_format)
    if settings.http and not metrics.available():
        log.warning("--http: /metrics needs prometheus_client (pip install 'taskutils[metrics]'); it answers 501")
    if settings.processes > 1:
        return Supervisor(arguments, settings.processes, settings).run()
    return run_worker(settings)


def run_worker(settings: Settings) -> int:
    """One worker process until SIGTERM or SIGINT: drain and exit 0; a second signal exits 1 at once."""
    sys.path.insert(0, "")
    for module in settings.imports:
        try:
            importlib.import_module(module)
        except Exception:
            log.exception("cannot import --import module %r", module)
            return BAD_SETTINGS
    url = settings.redis_url or DEFAULT_REDIS_URL
    backend = RedisBackend.from_url(url, settings.broker_timeout)  # the URL was checked with the settings
    allowed = settings.imports + settings.allow + ("__main__",)
    if allowed == ("__main__",):
        log.warning("no --import or --allow given: this worker may run no function at all")
    counting = settings.http and metrics.available()
    observer = Observer(metrics.WorkerMetrics() if counting else None)
    if observer.metrics is not None:
        observer.metrics.threads.set(settings.threads)
    worker = Worker(backend, settings, lambda module: module_allowed(module, allowed), observer=observer)
    if settings.http and not os.environ.get(SUPERVISOR_ENV):  # under a supervisor, it serves for all
        try:
            serve(settings.http, worker_routes(worker))
        except OSError as exc:
            log.error("--http %s: cannot listen there: %s", settings.http, exc)
            backend.close()
            return 1
    stop = threading.Event()

    def hand_back_and_exit() -> None:
        worker.hand_back()
        os._exit(1)

    def on_signal(signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():  # on a thread of its own: this handler may have interrupted one holding the ledger
            log.warning("second %s: handing running tasks back and exiting now", name)
            threading.Thread(target=hand_back_and_exit, name="taskutils-exit").start()
            return
        log.info("%s: stop taking tasks, letting %d running finish (grace %.0fs)", name, worker.running, settings.grace_period)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        for warning in backend.warnings():
            log.warning(warning)
        if settings.max_concurrency is not None:
            for queue in settings.queues:
                backend.set_max_concurrency(queue, settings.max_concurrency)
        worker.start()
    except (BackendUnavailable, BrokerError) as exc:  # BrokerError: e.g. a DB index the server does not have
        log.error("cannot start on %s: %s", redacted(url), exc)
        backend.close()
        return 1
    log.info(
        "worker %s started: redis %s, queues %s, %d threads, allowed modules %s, visibility timeout %.3gs",
        worker.consumer, redacted(url), ",".join(settings.queues), settings.threads, ",".join(allowed[:-1]) or "-",
        settings.visibility_timeout,
    )
    while not stop.wait(1.0):
        if orphaned():
            log.warning("the supervisor is gone: stop taking tasks, letting %d running finish", worker.running)
            break
    if not worker.stop(settings.grace_period):
        log.warning("grace period over: running tasks were handed back to the queue")
    log.info("worker %s stopped", worker.consumer)
    backend.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
