"""Fixtures: a real redis-server per session, and the backend each behaviour test runs against."""

from __future__ import annotations

import time
from typing import Callable, Iterator

import fakeredis
import pytest
import redis

from taskutils.backends import MemoryBackend
from taskutils.backends.redis import RedisBackend

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


@pytest.fixture(params=["memory", "fakeredis", "redis"])
def backend(request: pytest.FixtureRequest) -> Iterator[MemoryBackend | RedisBackend]:
    """The same behaviour suite runs on every backend."""
    if request.param == "memory":
        made: MemoryBackend | RedisBackend = MemoryBackend()
    elif request.param == "fakeredis":
        server = fakeredis.FakeServer()
        made = RedisBackend(fakeredis.FakeRedis(server=server), fakeredis.FakeRedis(server=server))
    else:
        made = RedisBackend.from_url(request.getfixturevalue("redis_url"))
    yield made
    made.close()


def wait_for(condition: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> object:
    """Poll `condition` until it is truthy; fail the test with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)
