"""Every key a script may touch, overwritten with the wrong type: each step either goes through or
fails whole, leaving Redis exactly as it was (Lua does not roll back, so the scripts check before
they first write). Run against a real server and fakeredis, in a keyed, limited, unique scene."""

from __future__ import annotations

from collections.abc import Callable

import fakeredis
import pytest
import redis

from taskutils import BrokerError
from taskutils.backends.records import Claim, Ending, Exchange, NewTask, Settlement
from taskutils.backends.redis import RedisBackend, prefix

from .test_hostile import body

P = prefix("default")
TASK = body("tests.fleet_tasks:mark", ["k", "v"])


class Scene:
    """A queue with a bursty adaptive default limit and an own limit, keyed and unique tasks
    ready, one delayed, one cancelled while it waits, and two running."""

    def __init__(self, backend: RedisBackend):
        self.backend = backend
        backend.client.flushall()
        backend.limit_set("default", None, "2|1000.0|1.0|2|1")
        backend.limit_set("default", "b", "1||1.0|1|0")
        self.ids = backend.enqueue("default", [
            NewTask(TASK, 0, 0, "a", "u1", 60.0), NewTask(TASK, 0, 0, "a", "u2", 60.0),
            NewTask(TASK, 5, 0, "a", "u3", 0.0), NewTask(TASK, 0, 0, "b"), NewTask(TASK),
            NewTask(TASK, 0, 100.0, "a"),
        ])
        self.held: list[Claim] = backend.exchange(Exchange("default", "c", (), 2)).claims
        backend.cancel("default", self.ids[1], b"\xc0", 60.0)

    def settle(self, ending: Ending, delay: float = 0.0, follow_ups: tuple[NewTask, ...] = ()) -> None:
        settlement = Settlement(self.held[0], ending, b"\xc0", b"record", delay, follow_ups)
        reply = self.backend.exchange(Exchange("default", "c", (settlement,), 0, result_ttl=60.0))
        if reply.unsettled:  # follow-ups refused: the settlement is not applied either, as a refused step
            raise BrokerError(reply.unsettled_reason)


STEPS: dict[str, Callable[[Scene], object]] = {
    "enqueue": lambda s: s.backend.enqueue("default", [
        NewTask(TASK, 0, 0, "a", "u1", 60.0), NewTask(TASK, 0, 0, "a", "u9", 60.0), NewTask(TASK, 0, 0, "c", "u8"),
        NewTask(TASK, 3), NewTask(TASK, 0, 50.0, "b"),
    ]),
    "enqueue one": lambda s: s.backend.enqueue("default", [NewTask(TASK, 0, 0, "d", "u7", 60.0)]),
    "done": lambda s: s.settle(Ending.DONE),
    "done with follow-ups": lambda s: s.settle(Ending.DONE, follow_ups=(
        NewTask(TASK, 0, 0, "a", "u1", 60.0), NewTask(TASK, 0, 0, "a", "u9", 60.0), NewTask(TASK, 0, 0, "c", "u8"),
        NewTask(TASK, 3), NewTask(TASK, 0, 50.0, "b"),
    )),
    "failed": lambda s: s.settle(Ending.FAILED),
    "retry now": lambda s: s.settle(Ending.RETRY),
    "retry later": lambda s: s.settle(Ending.RETRY, 5.0),
    "hand back": lambda s: s.settle(Ending.HAND_BACK),
    "throttled": lambda s: s.settle(Ending.THROTTLE, 2.0),
    "cancel": lambda s: s.backend.cancel("default", s.ids[0], b"\xc0", 60.0),
    "claim": lambda s: s.backend.exchange(Exchange("default", "c", (), 5)),
}
# a claim takes lane by lane, and a lane whose keys are broken waits a second before it is tried
# again, so that the other lanes go on (_claim.lua): only that may change when a claim fails
MOVED_ON_FAILURE = {"claim": {P.encode() + b"turns", P.encode() + b"later"}}


def snapshot(client: redis.Redis) -> dict[bytes, object]:
    """Every key's type and content (not its time to live)."""
    reads = {
        b"string": client.get, b"hash": client.hgetall, b"set": client.smembers,
        b"list": lambda key: client.lrange(key, 0, -1), b"zset": lambda key: client.zrange(key, 0, -1, withscores=True),
    }
    kinds = {key: client.type(key) for key in client.keys("*")}
    return {key: (kind, reads[kind](key)) for key, kind in kinds.items()}


def keys_a_step_touches(make: Callable[[], RedisBackend], step: str) -> list[bytes]:
    scene = Scene(make())
    before = set(scene.backend.client.keys("*"))
    STEPS[step](scene)
    lane_keys = [f"{P}{kind}:{key}".encode() for kind in ("kp", "ks", "kl") for key in "abcd"]
    return sorted(before | set(scene.backend.client.keys("*")) | set(lane_keys))


def wrong_type(client: redis.Redis, key: bytes) -> None:
    kind = client.type(key)
    client.delete(key)
    if kind == b"string":
        client.hset(key, "not", "what taskutils keeps")
    else:
        client.set(key, "not what taskutils keeps")


def fake_backends(_url: str) -> Callable[[], RedisBackend]:
    server = fakeredis.FakeServer()
    return lambda: RedisBackend(fakeredis.FakeRedis(server=server))


BACKENDS = {"redis-server": lambda url: (lambda: RedisBackend.from_url(url)), "fakeredis": fake_backends}


@pytest.mark.parametrize("kind", sorted(BACKENDS))
@pytest.mark.parametrize("step", sorted(STEPS))
def test_a_key_of_the_wrong_type_leaves_each_step_whole(redis_url, kind, step):
    make = BACKENDS[kind](redis_url)
    refused, broken, unclear = [], [], []
    for key in keys_a_step_touches(make, step):
        scene = Scene(make())
        client = scene.backend.client
        wrong_type(client, key)
        moved = MOVED_ON_FAILURE.get(step, set())
        before = {k: v for k, v in snapshot(client).items() if k not in moved}
        try:
            STEPS[step](scene)
        except BrokerError as error:
            refused.append(key)
            if kind == "redis-server" and key.decode() not in str(error):  # fakeredis drops a script error's text
                unclear.append((key, str(error)))
            after = {k: v for k, v in snapshot(client).items() if k not in moved}
            if after != before:
                broken.append((key, sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))))
        scene.backend.close()
    assert not broken, f"{step} wrote before it failed, with these keys of the wrong type (and wrote those)"
    assert not unclear, "the refusal does not name the key of the wrong type"
    assert refused  # the scene has keys the step writes
