"""Plain module-level task functions, for the systems that run any importable function (rq, taskutils).

See base.py for what noop, body and mark do."""

import os
import time

import redis

URL = os.environ["BENCH_REDIS_URL"]
r = redis.Redis.from_url(URL)


def noop(x=None):
    pass


def body(n):
    pipe = r.pipeline(transaction=False)
    pipe.incr("bench:done")
    pipe.set("bench:last", n)
    pipe.execute()


def mark():
    r.rpush("bench:lat", time.time())
