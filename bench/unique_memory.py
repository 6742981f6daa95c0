"""Redis memory per unique value (Task(unique=..., unique_for=...)), for 1,000,000 values.

    python -m bench.unique_memory [--values 1000000]

Starts its own redis-server. Pending: used_memory of N queued tasks with unique values (URLs of
about 40 characters) less that of N queued tasks without. Held: used_memory once all N ran
(claimed and settled in batches of 1,000 here, outcomes not kept) and their values stay held
for unique_for, less the empty queue's.
"""

from __future__ import annotations

import argparse

import redis

from taskutils import Task, TaskHandler
from taskutils.backends.records import Ending, Exchange, Settlement
from tests.redis_server import RedisServer

NOOP = "bench.peers.tasks_plain:noop"  # named, not imported: its module needs BENCH_REDIS_URL, and no task runs here


def used(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def enqueue(handler: TaskHandler, count: int, unique: bool) -> None:
    for start in range(0, count, 10_000):
        handler.enqueue_tasks([
            Task(NOOP, unique=f"https://www.example.com/articles/{n:08d}.html" if unique else None, unique_for=3600)
            if unique else Task(NOOP)
            for n in range(start, min(start + 10_000, count))
        ])


def drain(handler: TaskHandler) -> None:
    backend, held = handler.backend, []
    while True:
        reply = backend.exchange(Exchange("default", "bench", held, 1000, 60.0))
        if not reply.claims:
            return
        held = [Settlement(claim, Ending.DONE) for claim in reply.claims]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--values", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    server = RedisServer().start()
    client = redis.Redis.from_url(server.url)
    try:
        with TaskHandler(server.url, max_num_threads=0) as handler:
            empty = used(client)
            enqueue(handler, args.values, unique=False)
            plain = used(client) - empty
            client.flushall()
            empty = used(client)
            enqueue(handler, args.values, unique=True)
            pending = used(client) - empty
            drain(handler)
            held = used(client) - empty
        print(f"{args.values:,} values: {(pending - plain) / args.values:.0f} bytes per unique value while its task "
              f"is pending (on top of {plain / args.values:.0f} bytes per queued task), "
              f"{held / args.values:.0f} bytes per value held after its task ended")
    finally:
        client.close()
        server.kill()


if __name__ == "__main__":
    main()
