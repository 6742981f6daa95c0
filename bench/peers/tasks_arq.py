"""arq job functions and WorkerSettings for the peer benchmark (see base.py for noop, body, mark)."""

import os
import time

import redis.asyncio
from arq.connections import RedisSettings

URL = os.environ["BENCH_REDIS_URL"]
r = redis.asyncio.Redis.from_url(URL)


async def noop(ctx, x=None):
    pass


async def body(ctx, n):
    async with r.pipeline(transaction=False) as pipe:
        pipe.incr("bench:done")
        pipe.set("bench:last", n)
        await pipe.execute()


async def mark(ctx):
    t = time.time()
    await r.rpush("bench:lat", t)


class WorkerSettings:
    functions = [noop, body, mark]
    redis_settings = RedisSettings.from_dsn(URL)
    max_jobs = 8   # non-default (10)
