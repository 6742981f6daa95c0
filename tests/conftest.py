"""Fixtures: a real redis-server per session, and the backend each behaviour test runs against."""

from __future__ import annotations

import signal
import time
import uuid
from typing import Callable, Iterator

import fakeredis
import pytest
import redis

from taskutils import TaskHandler
from taskutils.backends import Backend, MemoryBackend
from taskutils.backends.redis import RedisBackend

from .fleet import WorkerProcess
from .redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """A clean database on the session's redis-server."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    yield redis_server.url


@pytest.fixture(params=["memory", "fakeredis", "redis", "redis-evalsha"])
def connect(request: pytest.FixtureRequest) -> Iterator[Callable[[], Backend]]:
    """Opens backends on one store: each call is a new client of the same data (embedded: the same object).

    The same behaviour suite runs on every backend, and on a real server both ways the scripts
    run: as Redis Functions and by EVALSHA (Redis before 7)."""
    if request.param == "memory":
        shared = MemoryBackend()
        factory: Callable[[], Backend] = lambda: shared  # noqa: E731
    elif request.param == "fakeredis":
        server = fakeredis.FakeServer()
        factory = lambda: RedisBackend(fakeredis.FakeRedis(server=server))  # noqa: E731
    elif request.param == "redis":
        url = request.getfixturevalue("redis_url")
        factory = lambda: RedisBackend.from_url(url)  # noqa: E731
    else:
        url = request.getfixturevalue("redis_url")
        factory = lambda: RedisBackend(redis.Redis.from_url(url), functions=False)  # noqa: E731
    made: list[Backend] = []

    def open_backend() -> Backend:
        made.append(factory())
        return made[-1]

    yield open_backend
    for backend in made:
        backend.close()


@pytest.fixture
def backend(connect: Callable[[], Backend]) -> Backend:
    return connect()


@pytest.fixture
def key() -> str:
    """A fresh name that keeps one test's records apart from the others'."""
    return uuid.uuid4().hex


@pytest.fixture
def make_handler(backend, connect):
    """Makes TaskHandlers on the test's backend; with own_client=True each gets its own client of it."""
    made = []

    def make(own_client: bool = False, **options) -> TaskHandler:
        options.setdefault("sleep_seconds", 0.5)
        handler = TaskHandler(backend=connect() if own_client else backend, **options)
        made.append(handler)
        return handler

    yield make
    for handler in made:
        handler.close(timeout=10)


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    """A plain client of the test's Redis, to look at what tasks recorded."""
    made = redis.Redis.from_url(redis_url)
    yield made
    made.close()


@pytest.fixture
def producer(redis_url: str) -> Iterator[TaskHandler]:
    """A pure producer on the test's Redis."""
    handler = TaskHandler(redis_url, max_num_threads=0)
    yield handler
    handler.close()


@pytest.fixture
def workers(redis_url: str) -> Iterator[Callable[..., list[WorkerProcess]]]:
    """Starts `count` real taskutils-worker processes that may run tests.fleet_tasks; kills them after."""
    started: list[WorkerProcess] = []

    def start(*args: str, count: int = 1, **options: object) -> list[WorkerProcess]:
        new = [WorkerProcess(redis_url, "--import", "tests.fleet_tasks", *args, **options) for _ in range(count)]
        started.extend(new)
        return new

    yield start
    for worker in started:
        worker.signal(signal.SIGCONT)
        worker.kill()


def wait_for(condition: Callable[[], object], timeout: float = 10.0, what: str = "condition", fail: bool = True) -> object:
    """Poll `condition` until it is truthy; after `timeout` seconds fail the test with `what`
    (or, with fail=False, return the last value and let the caller's assertion judge it)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            if not fail:
                return value
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)
