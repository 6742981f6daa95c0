"""Celery tasks for the peer benchmark (see base.py for what noop, body and mark do)."""

import os
import time

import redis
from celery import Celery

URL = os.environ["BENCH_REDIS_URL"]
r = redis.Redis.from_url(URL)
app = Celery("bench", broker=URL)   # no result backend (Celery's default)


@app.task
def noop(x=None):
    pass


@app.task
def body(n):
    pipe = r.pipeline(transaction=False)
    pipe.incr("bench:done")
    pipe.set("bench:last", n)
    pipe.execute()


@app.task
def mark():
    r.rpush("bench:lat", time.time())
