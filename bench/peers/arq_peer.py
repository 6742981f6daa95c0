"""arq 0.25, defaults.

Configuration: ``WorkerSettings`` with ``redis_settings = RedisSettings.from_dsn(url)`` and
``max_jobs = 8`` (non-default: 10); every other setting default: ``poll_delay`` 0.5 s (an idle
worker looks at the queue sorted set every 0.5 s, so a task waits up to 0.5 s), queue_read_limit
100, keep_result 3600 s (the worker writes a result key for every job), job ids are random uuids.
Worker: ``arq bench.peers.tasks_arq.WorkerSettings``, which logs each job at INFO by default, kept
as is. Enqueue: ``await pool.enqueue_job(name, **kwargs)`` from ``create_pool(...)`` (a WATCH/MULTI
transaction: job key + sorted-set entry). Bulk: arq has none.
"""

from arq.connections import RedisSettings, create_pool

from .base import Peer, bin_path


class ArqPeer(Peer):
    name = "arq 0.25 (asyncio)"
    key = "arq"
    tasks_module = "bench.peers.tasks_arq"
    is_async = True

    def setup(self):
        self.pool = self.run(create_pool(RedisSettings.from_dsn(self.redis_url)))

    async def asend(self, task, kwargs):
        await self.pool.enqueue_job(task, **kwargs)

    def worker_command(self):
        return [bin_path("arq"), "bench.peers.tasks_arq.WorkerSettings"]

    def teardown(self):
        self.run(self.pool.aclose())
