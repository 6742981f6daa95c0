"""One process's worker, in parts (see lifecycle.py); a supervisor runs several (supervisor.py)."""

from .lifecycle import Worker

__all__ = ["Worker"]
