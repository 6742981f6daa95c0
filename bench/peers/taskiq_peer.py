"""taskiq 0.13 with taskiq-redis ``RedisStreamBroker`` (Redis streams, consumer group).

Configuration: ``RedisStreamBroker(url)`` with its defaults (XREADGROUP blocking 2 s, 100 messages
per read, no maxlen, no result backend; the worker acks WHEN_SAVED, i.e. after the task ran).
Worker:
``taskiq worker bench.peers.tasks_taskiq:broker --workers 1 --max-async-tasks 8`` (non-default:
1 worker process instead of 2, 8 concurrent async tasks instead of 100); the CLI runs a supervisor
process that starts the worker process, which logs each task at INFO by default (kept as is).
Enqueue: ``await task.kiq(**kwargs)`` (one XADD).
Bulk: taskiq has none.

The broker creates its consumer group at "$" (new messages only) on start-up, so the bench calls
``broker.startup()`` on its side after every FLUSHDB, before it enqueues: otherwise a backlog
enqueued before the worker starts would never be delivered.
"""

from .base import Peer, bin_path


class TaskiqPeer(Peer):
    name = "taskiq 0.13 (redis streams, asyncio)"
    key = "taskiq"
    tasks_module = "bench.peers.tasks_taskiq"
    is_async = True

    def setup(self):
        self.broker = self.tasks.broker
        self.run(self.broker.startup())

    def after_flush(self):
        self.run(self.broker.startup())   # re-creates the stream's consumer group

    async def asend(self, task, kwargs):
        await getattr(self.tasks, task).kiq(**kwargs)

    def worker_command(self):
        return [bin_path("taskiq"), "worker", "bench.peers.tasks_taskiq:broker",
                "--workers", "1", "--max-async-tasks", "8"]

    def teardown(self):
        self.run(self.broker.shutdown())
