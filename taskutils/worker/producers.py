"""The producers tasks enqueue follow-up work with (current_task().handler): one per queue, on
the worker's own backend and connections, made on first use."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from ..backends.base import Backend
from ..config import Settings

if TYPE_CHECKING:
    from ..handler import TaskHandler


class Producers:
    """queue -> a TaskHandler without threads of its own, sharing the worker's backend."""

    def __init__(self, backend: Backend, settings: Settings):
        self._backend, self._settings = backend, settings
        self._made: dict[str, TaskHandler] = {}
        self._guard = threading.Lock()

    def __call__(self, queue: str) -> TaskHandler:
        made = self._made.get(queue)
        if made is not None:
            return made
        from ..handler import TaskHandler  # the handler module runs workers: imported when first needed

        with self._guard:
            if queue not in self._made:
                self._made[queue] = TaskHandler(
                    backend=self._backend, max_num_threads=0, queue=queue, result_ttl=self._settings.result_ttl,
                    max_payload=self._settings.max_payload, broker_timeout=self._settings.broker_timeout,
                )
            return self._made[queue]
