"""Passwords, ACL users and TLS end to end with real workers; secrets never reach logs or errors."""

from __future__ import annotations

import os
import subprocess

import pytest

from taskutils import BackendUnavailable, Task, TaskHandler

from . import fleet_tasks
from .fleet import ROOT, WorkerProcess, worker_command
from .redis_server import RedisServer, supports_tls


def run_one_task(server: RedisServer, url: str, secret: str) -> None:
    worker = WorkerProcess(url, record_url=server.url)
    try:
        with TaskHandler(url, max_num_threads=0) as producer:
            assert producer.enqueue_task(Task(fleet_tasks.mark, ("auth", "1"))).result(timeout=30) is None
        assert worker.alive()
    finally:
        worker.kill()
    assert secret not in worker.log and "***@" in worker.log


def test_password(tmp_path):
    server = RedisServer(password="pass-word-secret").start()
    try:
        run_one_task(server, server.url, "pass-word-secret")
    finally:
        server.kill()


def test_acl_user(tmp_path):
    server = RedisServer("--user", "worker", "on", ">acl-user-secret", "~*", "&*", "+@all", password="admin-secret").start()
    try:
        run_one_task(server, server.url_for(user="worker", password="acl-user-secret"), "acl-user-secret")
    finally:
        server.kill()


def test_tls_with_password():
    if not supports_tls():
        message = "this redis-server was built without TLS (or openssl is missing): TLS is NOT tested"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    server = RedisServer(password="tls-secret", tls=True).start()
    try:
        assert server.url.startswith("rediss://")
        run_one_task(server, server.url, "tls-secret")
    finally:
        server.kill()


def test_wrong_password_fails_at_once_and_says_so_without_the_secret():
    server = RedisServer(password="right-secret").start()
    try:
        wrong = server.url_for(password="wrong-secret")
        env = {k: v for k, v in os.environ.items() if k != "TASKUTILS_REDIS_URL"} | {"PYTHONPATH": str(ROOT)}
        done = subprocess.run(
            [worker_command(), "--redis-url", wrong, "--import", "tests.fleet_tasks"],
            env=env | {"TASKUTILS_TEST_RECORD_URL": server.url}, capture_output=True, text=True, timeout=60, cwd=ROOT,
        )
        assert done.returncode == 1
        assert "refused the credentials" in done.stderr and "wrong-secret" not in done.stdout + done.stderr
        with pytest.raises(BackendUnavailable) as failure:
            TaskHandler(wrong, max_num_threads=0).enqueue_task(Task(fleet_tasks.mark, ("x", "1")))
        assert "wrong-secret" not in str(failure.value)
    finally:
        server.kill()


def test_a_unix_socket_with_a_password(tmp_path):
    socket_path = tmp_path / "redis.sock"
    server = RedisServer("--unixsocket", str(socket_path), "--unixsocketperm", "700", password="socket-secret").start()
    try:
        run_one_task(server, f"unix://:socket-secret@{socket_path}?db=0", "socket-secret")
    finally:
        server.kill()
