"""RQ 3.0, SimpleWorker.

Configuration: ``Queue("default", connection=Redis.from_url(url))``, library defaults (result_ttl
500 s, job hash + queue list per job, pickle serializer). Worker:
``rq worker -w rq.worker.SimpleWorker -u <url> default``: SimpleWorker runs jobs in the worker
process itself, one at a time, so its concurrency is 1, not 8 (RQ has no thread pool; its
``worker-pool`` command runs several processes, which is not "one worker process"). The worker
logs each job at INFO by default, kept as is. Enqueue: ``queue.enqueue(func, **kwargs)``. Bulk:
``queue.enqueue_many([Queue.prepare_data(func), ...])``, which writes all jobs in one pipeline.
"""

from redis import Redis
from rq import Queue

from .base import Peer, bin_path


class RqPeer(Peer):
    name = "rq 3.0 (SimpleWorker, 1 at a time)"
    key = "rq"
    tasks_module = "bench.peers.tasks_plain"

    def setup(self):
        self.queue = Queue("default", connection=Redis.from_url(self.redis_url))

    def send(self, task, kwargs):
        self.queue.enqueue(getattr(self.tasks, task), **kwargs)

    def send_bulk(self, task, n):
        func = getattr(self.tasks, task)
        self.queue.enqueue_many([Queue.prepare_data(func) for _ in range(n)])

    def worker_command(self):
        return [bin_path("rq"), "worker", "-w", "rq.worker.SimpleWorker", "-u", self.redis_url, "default"]

    def teardown(self):
        self.queue.connection.close()
