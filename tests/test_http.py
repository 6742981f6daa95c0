"""taskutils-worker --http: /metrics, /livez and /readyz of real worker processes, a supervisor
serving its children's figures, and the queue exporter."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from taskutils import Task, TaskHandler

from . import fleet_tasks
from .conftest import wait_for
from .fleet import WorkerProcess
from .redis_server import RedisServer, free_port
from .test_admin_cli import taskutils
from .test_processes import children, running

pytest.importorskip("prometheus_client", reason="taskutils[metrics] is part of the test extra")


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except urllib.error.URLError:  # nothing listens (yet)
        return 0, ""


def answer(port: int, path: str, status: int) -> str:
    """Wait until `path` answers `status`; returns the body."""
    found = wait_for(lambda: (lambda reply: reply if reply[0] == status else None)(get(port, path)),
                     what=f"{path} to answer {status}")
    return found[1]


def sample(text: str, name: str, **labels: str) -> float:
    """A sample's value from Prometheus text (0 if absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and all(found.labels.get(k) == v for k, v in labels.items()):
                return found.value
    return 0.0


def test_a_worker_serves_its_metrics_and_probes(producer, workers, client):
    port = free_port()
    (worker,) = workers("--threads", "2", "--http", str(port))
    assert f"on http://127.0.0.1:{port}" in worker.log  # a bare port binds loopback
    assert get(port, "/livez") == (200, "ok\n") and get(port, "/readyz") == (200, "ok\n")
    producer.enqueue_tasks([Task(fleet_tasks.mark, ("http", i)) for i in range(5)])
    failing = producer.enqueue_task(Task(fleet_tasks.always_fails, ("http:fails",), repeats_on_failure=1))
    assert producer.join(timeout=30)
    wait_for(lambda: sample(get(port, "/metrics")[1], "taskutils_tasks_total", outcome="failed"), what="the failure counted")
    text = get(port, "/metrics")[1]
    assert sample(text, "taskutils_tasks_total", queue="default", function="tests.fleet_tasks:mark", outcome="done") == 5
    assert sample(text, "taskutils_tasks_total", function="tests.fleet_tasks:always_fails", outcome="retried") == 1
    assert sample(text, "taskutils_task_duration_seconds_count", function="tests.fleet_tasks:mark") == 5
    assert sample(text, "taskutils_queue_wait_seconds_count", queue="default") == 6
    assert sample(text, "taskutils_worker_threads") == 2 and sample(text, "taskutils_tasks_running", queue="default") == 0
    assert failing.status() == "failed" and get(port, "/nowhere")[0] == 404


def test_a_broker_outage_makes_a_worker_unready_but_never_dead():
    server = RedisServer().start()
    port = free_port()
    worker = WorkerProcess(server.url, "--import", "tests.fleet_tasks", "--http", f"127.0.0.1:{port}",
                           "--broker-timeout", "2", "--sleep-seconds", "0.5")
    try:
        assert get(port, "/readyz")[0] == 200
        server.kill()
        assert "PING" in answer(port, "/readyz", 503)
        wait_for(lambda: "broker unreachable" in worker.log, what="the outage logged")
        for _ in range(10):  # through several broker timeouts (2 s) the exchanger retries: alive all along
            assert get(port, "/livez") == (200, "ok\n")
            time.sleep(0.5)
        server.start()
        wait_for(lambda: get(port, "/readyz")[0] == 200, timeout=30, what="ready again once Redis is back")
    finally:
        worker.kill()
        server.stop()


def test_a_stopped_process_is_dead_to_livez_and_a_draining_one_unready(producer, workers, client):
    port = free_port()
    (worker,) = workers("--threads", "1", "--http", str(port), "--grace-period", "30")
    ref = producer.enqueue_task(Task(fleet_tasks.slow, ("drain-http", 2.0)))
    wait_for(lambda: client.llen("drain-http:starts") == 1, what="the task to start")
    worker.signal(signal.SIGTERM)
    assert "draining" in answer(port, "/readyz", 503) and get(port, "/livez")[0] == 200
    assert worker.wait(30) == 0 and ref.status() == "done"


def test_a_supervisor_serves_every_childs_metrics_and_keeps_the_counts_of_a_dead_one(producer, workers, client):
    port = free_port()
    (supervisor,) = workers("--processes", "2", "--threads", "2", "--http", str(port), "--visibility-timeout", "2")
    wait_for(lambda: len(children(supervisor)) == 2 and running(supervisor, children(supervisor)), what="two workers")
    producer.enqueue_tasks([Task(fleet_tasks.slow, ("both", 0.05)) for _ in range(40)])
    assert producer.join(timeout=60)
    assert len(set(client.lrange("both:starts", 0, -1))) == 2  # both processes ran some
    done = lambda: sample(get(port, "/metrics")[1], "taskutils_tasks_total", function="tests.fleet_tasks:slow", outcome="done")
    wait_for(lambda: done() == 40, what=f"40 tasks counted across the processes ({done()})")
    assert sample(get(port, "/metrics")[1], "taskutils_worker_threads") == 4
    victim = next(iter(children(supervisor)))
    subprocess.run(["kill", "-KILL", str(victim)], check=True)
    wait_for(lambda: victim not in children(supervisor) and len(children(supervisor)) == 2, timeout=20, what="a replacement")
    wait_for(lambda: running(supervisor, children(supervisor)), what="the replacement started")
    assert done() == 40  # a dead child's counts stay in the sums
    assert sample(get(port, "/metrics")[1], "taskutils_worker_threads") == 4  # its live gauge went with it
    assert get(port, "/livez")[0] == 200 and get(port, "/readyz")[0] == 200
    folder = [line for line in supervisor.log.splitlines() if "taskutils-metrics-" in line]
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait(30) == 0 and folder == []  # the folder is private: not even logged


def test_bad_http_addresses_are_refused_before_anything_starts(redis_url):
    for address, message in (("nonsense", "needs a port"), ("example.org:80", "not an IP address"), ("1:99999", "port")):
        done = subprocess.run([sys.executable, "-m", "taskutils.cli", "--redis-url", redis_url, "--http", address],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 2 and message in done.stderr, (address, done.stderr)


def test_an_address_in_use_stops_the_worker_with_a_clear_error(redis_url):
    port = free_port()
    holder = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: get(port, "/")[0] in (200, 404), what="the port taken")
        done = subprocess.run([sys.executable, "-m", "taskutils.cli", "--redis-url", redis_url, "--http", str(port)],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 1 and "cannot listen there" in done.stderr
    finally:
        holder.kill()


def test_the_exporter_reads_queue_gauges_from_redis_at_each_scrape(redis_url, producer, workers, client):
    port = free_port()
    exporter = subprocess.Popen([sys.executable, "-m", "taskutils.admin_cli", "exporter", "--bind", str(port)],
                                env={**os.environ, "TASKUTILS_REDIS_URL": redis_url}, stdout=subprocess.DEVNULL)
    try:
        keyed = TaskHandler(redis_url, max_num_threads=0, queue="crawl")
        keyed.enqueue_tasks([Task(fleet_tasks.noop, key=f"site{i % 3}") for i in range(7)])
        producer.enqueue_task(Task(fleet_tasks.noop, delay=300))
        assert taskutils(redis_url, "pause", "crawl").returncode == 0
        workers("--queue", "crawl")
        text = answer(port, "/metrics", 200)
        assert sample(text, "taskutils_queue_tasks", queue="crawl", state="queued") == 7
        assert sample(text, "taskutils_queue_tasks", queue="default", state="scheduled") == 1
        assert sample(text, "taskutils_queue_paused", queue="crawl") == 1
        assert sample(text, "taskutils_key_backlog", queue="crawl", key="site0") == 3
        assert sample(text, "taskutils_oldest_queued_seconds", queue="crawl") >= 0
        assert sample(get(port, "/metrics")[1], "taskutils_workers", queue="crawl") == 1
        keyed.close()
    finally:
        exporter.kill()
        exporter.wait()
