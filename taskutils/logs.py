"""How taskutils-worker writes its log: lines of text, or one JSON object per line.

Log calls about one task pass its fields as `extra=task_fields(...)`: the JSON format writes them
as keys of their own (task_id, queue, function, attempt, duration, outcome), so that a log store
can filter on them; the text format leaves them in the message. A failure's message ends with its
traceback, which is also passed as `error`: JSON writes it apart, as "traceback". No line holds a task's
arguments or result, or a password (Redis URLs are logged redacted); a traceback holds what the
task's own exception says.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Any

from .backends.records import Claim

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
TASK_FIELDS = ("task_id", "queue", "function", "attempt", "duration", "outcome")


def task_name(claim: Claim) -> str:
    """How log lines name a task: its id and its queue (ids repeat across queues)."""
    return f"{claim.task_id} on {claim.queue!r}"


def task_fields(
    claim: Claim, function: str | None, duration: float | None = None, outcome: str | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    """The fields of a log line about `claim` (and the traceback of its failure, if any)."""
    fields: dict[str, Any] = {"task_id": claim.task_id, "queue": claim.queue, "function": function,
                              "attempt": claim.failures + 1}
    if duration is not None:
        fields["duration"] = round(duration, 6)
    if outcome is not None:
        fields["outcome"] = outcome
    if error is not None:
        fields["error"] = error
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, the task's fields
    when the line is about a task, and the traceback of an exception if the line has one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        error = record.__dict__.get("error")
        if error:
            line["message"] = line["message"].removesuffix(error).rstrip(":\n")
            line["traceback"] = error
        for name in TASK_FIELDS:
            if name in record.__dict__:
                line[name] = record.__dict__[name]
        if record.exc_info and not error:
            line["traceback"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure(level: str, log_format: str) -> None:
    """Log to stderr at `level`, as `log_format` says ("text" or "json")."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
