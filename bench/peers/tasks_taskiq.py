"""taskiq tasks on the taskiq-redis streams broker for the peer benchmark (see base.py)."""

import os
import time

import redis.asyncio
from taskiq_redis import RedisStreamBroker

URL = os.environ["BENCH_REDIS_URL"]
r = redis.asyncio.Redis.from_url(URL)
broker = RedisStreamBroker(URL)   # defaults: stream "taskiq", group "taskiq", no result backend


@broker.task
async def noop(x: int | None = None) -> None:
    pass


@broker.task
async def body(n: int) -> None:
    async with r.pipeline(transaction=False) as pipe:
        pipe.incr("bench:done")
        pipe.set("bench:last", n)
        await pipe.execute()


@broker.task
async def mark() -> None:
    t = time.time()
    await r.rpush("bench:lat", t)
