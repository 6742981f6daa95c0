"""huey tasks for the peer benchmark (see base.py for what noop, body and mark do)."""

import os
import time

import redis
from huey import RedisHuey

URL = os.environ["BENCH_REDIS_URL"]
r = redis.Redis.from_url(URL)
huey = RedisHuey("bench", url=URL)   # defaults: blocking BRPOP dequeue, results kept if not None


@huey.task()
def noop(x=None):
    pass


@huey.task()
def body(n):
    pipe = r.pipeline(transaction=False)
    pipe.incr("bench:done")
    pipe.set("bench:last", n)
    pipe.execute()


@huey.task()
def mark():
    r.rpush("bench:lat", time.time())
