"""SAQ 0.26, Redis queue, asyncio.

Configuration: ``Queue.from_url(url)`` (queue "default") and worker settings
``{"queue", "functions", "concurrency": 8}`` (non-default: 10); everything else default
(dequeue by blocking BLMOVE, so an idle worker is woken by the push; sweep/stats timers; job
keys kept after completion for their ttl). Worker: ``saq bench.peers.tasks_saq.settings
--workers 1`` (1 is the default; its default log level is ERROR). Enqueue:
``await queue.enqueue(name, **kwargs)``. Bulk: SAQ has none that only enqueues (``Queue.map``
enqueues with asyncio.gather but then waits for every result; ``Queue.batch`` is an abort scope).
"""

from .base import Peer, bin_path


class SaqPeer(Peer):
    name = "saq 0.26 (asyncio)"
    key = "saq"
    tasks_module = "bench.peers.tasks_saq"
    is_async = True

    def setup(self):
        self.queue = self.tasks.queue
        self.run(self.queue.connect())

    async def asend(self, task, kwargs):
        await self.queue.enqueue(task, **kwargs)

    def worker_command(self):
        return [bin_path("saq"), "bench.peers.tasks_saq.settings", "--workers", "1"]

    def teardown(self):
        self.run(self.queue.disconnect())
