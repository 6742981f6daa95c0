"""Celery 5.x, Redis broker (kombu), threads pool.

Configuration: ``Celery("bench", broker=url)``, no result backend, everything else default (json
serializer, acks early, ``worker_prefetch_multiplier`` 4, so the worker reserves up to 4 x 8 = 32
messages; mingle, gossip and heartbeat on, which only cost start-up time, excluded).
Worker: ``celery -A bench.peers.tasks_celery worker --pool threads --concurrency 8`` (non-default:
the threads pool instead of prefork, and 8 instead of one per CPU). Default log level WARNING.
Enqueue: ``task.apply_async(kwargs=...)`` (what ``delay`` calls). Bulk:
``group(sig, ...).apply_async()``, which publishes one message per task over one producer
(no pipelining).
"""

from celery import group

from .base import Peer, bin_path


class CeleryPeer(Peer):
    name = "celery 5.7 (threads)"
    key = "celery"
    tasks_module = "bench.peers.tasks_celery"

    def send(self, task, kwargs):
        getattr(self.tasks, task).apply_async(kwargs=kwargs)

    def send_bulk(self, task, n):
        sig = getattr(self.tasks, task).s()
        group(sig.clone() for _ in range(n)).apply_async()

    def worker_command(self):
        return [bin_path("celery"), "-A", "bench.peers.tasks_celery", "worker",
                "--pool", "threads", "--concurrency", "8"]
