"""What code running inside a task can know about where it runs."""

from __future__ import annotations

import contextvars
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .backends.base import Backend

# The backend of the handler or worker running the current task (LockWrapper uses it).
current_backend: contextvars.ContextVar["Backend | None"] = contextvars.ContextVar("taskutils_backend", default=None)
