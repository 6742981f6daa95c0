"""dramatiq 2.x, Redis broker, one worker process with 8 threads.

Configuration: ``RedisBroker(url=...)`` with the default middleware (AgeLimit, TimeLimit,
ShutdownNotifications, Callbacks, Pipelines, Retries) and no results backend. Worker:
``dramatiq bench.peers.tasks_dramatiq --processes 1 --threads 8`` (8 threads is dramatiq's
default; ``--processes 1`` is not: the default is one process per CPU). The CLI runs a supervisor
process that forks the one worker process. Library defaults kept: queue prefetch = 2 x threads,
worker_timeout 1000 ms. An idle Redis consumer polls (Lua fetch) with an exponential, jittered
back-off of 5 ms up to that 1 s timeout: this is what the idle latency shows.
Enqueue: ``actor.send(**kwargs)`` (one call of its Lua dispatch script). Bulk: ``dramatiq.group(messages).run()``,
which still makes one broker call per message (no pipelining).
"""

import dramatiq

from .base import Peer, bin_path


class DramatiqPeer(Peer):
    name = "dramatiq 2.2 (threads)"
    key = "dramatiq"
    tasks_module = "bench.peers.tasks_dramatiq"

    def send(self, task, kwargs):
        getattr(self.tasks, task).send(**kwargs)

    def send_bulk(self, task, n):
        actor = getattr(self.tasks, task)
        dramatiq.group([actor.message() for _ in range(n)]).run()

    def worker_command(self):
        return [bin_path("dramatiq"), "bench.peers.tasks_dramatiq", "--processes", "1", "--threads", "8"]
