"""The shipped examples run, and the compose file and worker image are consistent (no Docker engine here)."""

from __future__ import annotations

import ast
import os
import re
import socket
import subprocess
import sys

import yaml

from .fleet import ROOT, WorkerProcess
from .redis_server import free_port


def test_embedded_example_runs_without_a_server():
    env = {k: v for k, v in os.environ.items() if k != "TASKUTILS_REDIS_URL"}
    done = subprocess.run([sys.executable, "examples/hello.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("hello world from task") == 15
    assert sorted(re.sub(r"hello world from task \d+", " ", done.stdout).split()) == ["a", "b"]


def test_fleet_example_runs_on_redis_and_tells_workers_on_one_host_apart(redis_url):
    workers = [WorkerProcess(redis_url, "--import", "examples.fleet_tasks", "--threads", "1") for _ in range(2)]
    try:
        env = dict(os.environ, TASKUTILS_REDIS_URL=redis_url, PYTHONPATH=str(ROOT))
        done = subprocess.run(
            [sys.executable, "-m", "examples.fleet_producer"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        counts = ast.literal_eval(done.stdout.split("tasks run per worker:", 1)[1].strip())
        assert sum(counts.values()) == 100 and set(counts) <= {f"{socket.gethostname()} pid {w.pid}" for w in workers}
    finally:
        for worker in workers:
            worker.kill()


def test_compose_file_scales_workers_and_publishes_nothing():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"redis", "worker", "producer"} <= set(services)
    for name, service in services.items():
        assert "ports" not in service, f"{name} publishes a port on the host"
    worker = services["worker"]
    assert "container_name" not in worker, "a fixed container_name breaks --scale"
    assert (ROOT / worker["build"]["context"] / worker["build"]["dockerfile"]).is_file()
    env = worker["environment"]
    assert env["TASKUTILS_REDIS_URL"].startswith("redis://redis:")
    for module in env["TASKUTILS_IMPORTS"].split(","):
        assert (ROOT / (module.replace(".", "/") + ".py")).is_file()
    assert "noeviction" in services["redis"]["command"]
    cpus = float(worker["deploy"]["resources"]["limits"]["cpus"])
    assert int(env["TASKUTILS_PROCESSES"]) == cpus, "one worker process per CPU the container may use"


def test_worker_image_copies_what_exists_and_runs_the_worker():
    dockerfile = (ROOT / "worker" / "Dockerfile").read_text()
    for sources in re.findall(r"^COPY (.+) \S+$", dockerfile, re.M):
        for source in sources.split():
            assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"
    assert 'ENTRYPOINT ["taskutils-worker"]' in dockerfile
    assert re.search(r"^USER ", dockerfile, re.M), "the worker should not run as root"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    command = next(line.strip() for line in readme.splitlines() if "pip install -e '.[test]'" in line)
    assert command in (ROOT / ".ci" / "run").read_text()


def test_the_image_healthcheck_reads_livez_of_the_worker_it_runs_beside(redis_url):
    """The HEALTHCHECK's command, run as Docker would run it inside the container."""
    dockerfile = (ROOT / "worker" / "Dockerfile").read_text().replace("\\\n", " ")
    check = re.search(r"^HEALTHCHECK .*? CMD (.+)$", dockerfile, re.M).group(1)
    port = free_port()
    env = dict(os.environ, TASKUTILS_HTTP=f"127.0.0.1:{port}")
    worker = WorkerProcess(redis_url, "--import", "tests.fleet_tasks", env={"TASKUTILS_HTTP": f"127.0.0.1:{port}"})
    try:
        assert subprocess.run(check, shell=True, env=env, timeout=30).returncode == 0
    finally:
        worker.kill()
    assert subprocess.run(check, shell=True, env=env, timeout=30, capture_output=True).returncode != 0


def test_compose_monitoring_scrapes_the_ports_the_services_serve():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    prometheus = yaml.safe_load((ROOT / "examples" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    worker_port = services["worker"]["environment"]["TASKUTILS_HTTP"].rpartition(":")[2]
    assert jobs["taskutils-workers"]["dns_sd_configs"][0] == {"names": ["worker"], "type": "A", "port": int(worker_port)}
    exporter_bind = services["exporter"]["entrypoint"][-1]
    assert jobs["taskutils-queues"]["static_configs"][0]["targets"] == ["exporter:" + exporter_bind.rpartition(":")[2]]
    assert "./examples/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in services["prometheus"]["volumes"]
