"""What the dashboard's tests share: task functions (run in-process, or by real taskutils-worker
processes started with --import tests.web_fixtures), the dashboard served on a free loopback
port, and reading figures and CSRF tokens out of its pages."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import uvicorn

from taskutils.backends.base import Backend
from taskutils.web import create_app

from .redis_server import free_port

SCRIPT = "<script>alert(1)</script>"  # what an attacker puts in arguments and error messages


def double(number):
    return number * 2


def fails(text):
    raise ValueError(f"bad input {text}")


def missing(name):
    raise KeyError(name)


def nap(seconds):
    """Take some time, so that a page can see tasks queued and running."""
    time.sleep(seconds)
    return seconds


def until_flag(path):
    """Run until the file at `path` exists (a minute at most): a task that runs as long as a test needs."""
    deadline = time.monotonic() + 60
    while not Path(path).exists() and time.monotonic() < deadline:
        time.sleep(0.01)


def needs_flag(path):
    """Fail until the file at `path` exists; then succeed, returning what it says."""
    flag = Path(path)
    if not flag.exists():
        raise RuntimeError(f"no flag file at {path} yet")
    return flag.read_text()


def csrf_of(html: str) -> str:
    """The CSRF token of a page's forms."""
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


def figure(html: str, queue: str, count: str) -> int:
    """A count (scheduled, queued, running, failed, done-hour...) of a queue's row on the overview."""
    row = re.search(rf'<tr data-queue="{re.escape(queue)}">(.*?)</tr>', html, re.S)
    assert row, f"no row for queue {queue!r} on the page"
    cell = re.search(rf'data-count="{count}">(?:<a [^>]*>)?(\d+)', row.group(1))
    assert cell, f"no {count!r} count in the row of {queue!r}"
    return int(cell.group(1))


class ServedDashboard:
    """The dashboard over `backend`, served by uvicorn on a thread, on a free loopback port."""

    def __init__(self, backend: Backend, **options: object):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(create_app(backend, **options), host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="dashboard", daemon=True)

    def __enter__(self) -> "ServedDashboard":
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise AssertionError(f"the dashboard did not start on port {self.port}")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
