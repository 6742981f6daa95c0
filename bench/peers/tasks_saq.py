"""SAQ job functions and worker settings for the peer benchmark (see base.py for noop, body, mark)."""

import os
import time

import redis.asyncio
from saq import Queue

URL = os.environ["BENCH_REDIS_URL"]
r = redis.asyncio.Redis.from_url(URL)
queue = Queue.from_url(URL)   # queue "default"


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


settings = {
    "queue": queue,
    "functions": [noop, body, mark],
    "concurrency": 8,   # non-default (10)
}
