"""Structured logs of a real worker (--log-format json)."""

from __future__ import annotations

import json

from taskutils import Task

from . import fleet_tasks
from .conftest import wait_for


def test_json_logs_are_one_object_per_line_with_the_task_fields(producer, workers, client):
    (worker,) = workers("--threads", "1", "--log-format", "json", "--log-level", "DEBUG")
    done = producer.enqueue_task(Task(fleet_tasks.mark, ("logs", "secret-argument-value")))
    failed = producer.enqueue_task(Task(fleet_tasks.always_fails, ("logs:count",), repeats_on_failure=1))
    assert done.result(timeout=20) is None
    wait_for(lambda: producer.backend.counts("default").failed == 1, what="the failing task to fail for good")
    wait_for(lambda: "failed for good" in worker.log, what="the failure logged")
    lines = [json.loads(line) for line in worker.log.splitlines() if line.strip()]  # every line is JSON
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    ended = [line for line in lines if line.get("task_id") == done.id and line.get("outcome") == "done"]
    assert ended and ended[0]["level"] == "DEBUG" and ended[0]["queue"] == "default"
    assert ended[0]["function"] == "tests.fleet_tasks:mark" and ended[0]["attempt"] == 1 and ended[0]["duration"] >= 0
    assert any(line.get("task_id") == done.id and line["message"].endswith("started") for line in lines)
    retried, final = [line for line in lines if line.get("task_id") == failed.id and line["level"] != "DEBUG"]
    assert retried["level"] == "WARNING" and retried["outcome"] == "retried" and retried["attempt"] == 1
    assert final["level"] == "ERROR" and final["outcome"] == "failed" and final["attempt"] == 2
    assert "RuntimeError: this task always fails" in final["traceback"] and "Traceback" not in final["message"]
    assert "secret-argument-value" not in worker.log
