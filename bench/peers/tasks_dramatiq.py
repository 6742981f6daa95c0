"""dramatiq actors for the peer benchmark (see base.py for what noop, body and mark do)."""

import os
import time

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

URL = os.environ["BENCH_REDIS_URL"]
r = redis.Redis.from_url(URL)
broker = RedisBroker(url=URL)   # default middleware, no results backend
dramatiq.set_broker(broker)


@dramatiq.actor
def noop(x=None):
    pass


@dramatiq.actor
def body(n):
    pipe = r.pipeline(transaction=False)
    pipe.incr("bench:done")
    pipe.set("bench:last", n)
    pipe.execute()


@dramatiq.actor
def mark():
    r.rpush("bench:lat", time.time())
