"""huey 3.5, Redis storage, thread workers.

Configuration: ``RedisHuey("bench", url=...)`` with library defaults (blocking BRPOP dequeue with
a 1 s read timeout, so an idle worker is woken by the push; result store on, but our tasks return
None and huey stores no None result). Worker: ``huey_consumer bench.peers.tasks_huey.huey -w 8
-k thread`` (non-default: 8 workers instead of 1). The consumer logs each task at INFO by default,
kept as is. Enqueue: calling the task (``noop()``). Bulk: huey has none that batches Redis calls;
``TaskWrapper.map()`` enqueues one LPUSH per task, and is what is timed as "bulk".
"""

from .base import Peer, bin_path


class HueyPeer(Peer):
    name = "huey 3.5 (threads)"
    key = "huey"
    tasks_module = "bench.peers.tasks_huey"

    def send(self, task, kwargs):
        getattr(self.tasks, task)(**kwargs)

    def send_bulk(self, task, n):
        getattr(self.tasks, task).map([()] * n)

    def worker_command(self):
        return [bin_path("huey_consumer"), "bench.peers.tasks_huey.huey", "-w", "8", "-k", "thread"]
