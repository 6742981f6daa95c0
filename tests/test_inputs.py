"""Checking what users give: Task and Recurrent validation and encoding, function references, schedule arithmetic, settings."""

from __future__ import annotations

from datetime import datetime, timezone

import msgpack
import pytest

from taskutils import InvalidTask, PayloadError, Recurrent, Task
from taskutils.backends.redis_url import redacted
from taskutils.config import Settings
from taskutils.recurrent import epoch, next_run
from taskutils.task import MAX_DELAY, TaskBody, module_allowed, resolve

from . import jobs


def nested():
    def inner():
        pass

    return inner


def test_task_needs_an_importable_function():
    with pytest.raises(InvalidTask, match="lambda"):
        Task(lambda: None)
    with pytest.raises(InvalidTask, match="nested"):
        Task(nested())
    with pytest.raises(InvalidTask, match="package.module:function"):
        Task("no_colon")
    assert Task(jobs.add).ref == "tests.jobs:add"
    assert Task("pkg.mod:func").ref == "pkg.mod:func"


def test_task_validates_its_policy():
    for bad in ({"priority": 1.5}, {"priority": True}, {"repeats_on_failure": -1}, {"delay": -1}, {"retry_delay": -1}):
        with pytest.raises(InvalidTask):
            Task(jobs.add, **bad)


@pytest.mark.parametrize("bad, field", [
    ({"delay": float("nan")}, "delay"),
    ({"delay": float("inf")}, "delay"),
    ({"delay": MAX_DELAY * 2}, "delay"),
    ({"retry_delay": float("nan"), "repeats_on_failure": 1}, "retry_delay"),
    ({"retry_backoff": float("nan"), "repeats_on_failure": 1}, "retry_backoff"),
    ({"retry_backoff": float("inf"), "repeats_on_failure": 1}, "retry_backoff"),
    ({"retry_delay": 1, "retry_backoff": 1e18, "repeats_on_failure": 20}, "retry_backoff"),
    ({"repeats_on_failure": 10**6}, "repeats_on_failure"),
    ({"queue": ""}, "queue"),
])
def test_absurd_inputs_are_refused_naming_the_field(bad, field):
    with pytest.raises(InvalidTask, match=field):
        Task(jobs.add, **bad)


def test_absurd_payloads_are_refused_as_payload_errors():
    deep: list = []
    tip = deep
    for _ in range(3000):
        tip.append([])
        tip = tip[0]
    with pytest.raises(PayloadError, match="argument 0 .*nested too deep"):
        Task(jobs.echo, (deep,)).encode()
    assert TaskBody.decode(Task(jobs.add, retry_backoff=2**64, repeats_on_failure=0).encode()).retry_backoff == 2.0**64
    with pytest.raises(InvalidTask, match="interval"):
        Recurrent(Task(jobs.add), interval=float("inf"))


def test_payload_error_names_the_argument():
    with pytest.raises(PayloadError, match="argument 1 "):
        Task(jobs.add, (1, {1, 2})).encode()
    with pytest.raises(PayloadError, match="argument 'x'"):
        Task(jobs.add, kwargs={"x": 2**70}).encode()
    with pytest.raises(PayloadError, match="argument 0 "):
        Task(jobs.add, ({(1, 2): "tuple keys do not come back"},)).encode()
    # each failure above stopped midway through the thread's reused packer: nothing of it is left
    assert Task(jobs.add, (1, 2)).encode() == msgpack.packb(["tests.jobs:add", [1, 2], {}])


def test_body_round_trip_and_bad_bodies():
    body = TaskBody.decode(Task(jobs.add, (1, 2), repeats_on_failure=2, retry_delay=0.5).encode())
    assert (body.ref, body.args, body.kwargs, body.repeats_on_failure, body.retry_delay) == ("tests.jobs:add", [1, 2], {}, 2, 0.5)
    assert Task(jobs.add, (1, 2)).encode() == msgpack.packb(["tests.jobs:add", [1, 2], {}])
    for garbage in (b"", b"\xc1", b"\x93\x01\x02\x03", msgpack.packb(["m:f", [], {}, 0, 0, 1, 7, 8])):
        with pytest.raises(ValueError):
            TaskBody.decode(garbage)


def test_retry_backoff():
    body = TaskBody("m:f", [], {}, 3, 1.0, 2.0)
    assert [body.retry_delay_after(n) for n in (1, 2, 3)] == [1.0, 2.0, 4.0]


def test_resolve_refuses_modules_not_allowed_and_reexports():
    allow_tests = lambda module: module_allowed(module, ["tests"])  # noqa: E731
    assert resolve("tests.jobs:add", allow_tests) is jobs.add
    with pytest.raises(PermissionError, match="not allowed"):
        resolve("os:system", allow_tests)
    with pytest.raises(PermissionError, match="defined in"):
        resolve("tests.jobs:defaultdict", allow_tests)
    with pytest.raises(ImportError, match="has no function"):
        resolve("tests.jobs:nothing", allow_tests)


def test_next_run_has_no_drift_and_collapses_missed_runs():
    assert next_run(100.0, 10.0, 95.0) == 100.0
    assert next_run(100.0, 10.0, 100.0) == 110.0
    assert next_run(100.0, 10.0, 1234.5) == 1240.0


def test_epoch_accepts_datetimes_and_numbers():
    assert epoch(datetime(2030, 1, 1, tzinfo=timezone.utc)) == 1893456000.0
    assert epoch(5) == 5.0 and epoch(None) is None
    with pytest.raises(InvalidTask):
        Recurrent(Task(jobs.add), 1, start=10, stop=5)


def test_settings_precedence_and_errors():
    env = {"TASKUTILS_THREADS": "7", "TASKUTILS_QUEUES": "a, b", "TASKUTILS_SLEEP_SECONDS": "0.5"}
    settings = Settings.build(env, threads=None, sleep_seconds=2.0)
    assert (settings.threads, settings.queues, settings.sleep_seconds) == (7, ("a", "b"), 2.0)
    with pytest.raises(ValueError, match="TASKUTILS_THREADS"):
        Settings.build({"TASKUTILS_THREADS": "many"})
    with pytest.raises(ValueError, match="log_level"):
        Settings.build({}, log_level="bogus")
    with pytest.raises(ValueError, match="max_concurrency"):
        Settings.build({}, max_concurrency=0)
    assert Settings.build({"TASKUTILS_PROCESSES": "2"}).processes == 2
    with pytest.raises(ValueError, match="processes must be >= 1"):
        Settings.build({}, processes=0)
    with pytest.raises(ValueError, match="visibility_timeout must be > 0 and finite"):
        Settings.build({}, visibility_timeout=float("inf"))


def test_passwords_areredacted():
    assert redacted("redis://user:secret@host:6379/0") == "redis://user:***@host:6379/0"
    assert redacted("rediss://:secret@host") == "rediss://***@host"
    assert redacted("redis://host") == "redis://host"
