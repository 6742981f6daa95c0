"""Cron schedules and what runs after downtime (misfire), on every backend."""

from __future__ import annotations

import math
import time

import pytest

from taskutils import InvalidTask, Recurrent, Task
from taskutils.backends.records import Exchange
from taskutils.recurrent import CRON_LOW, MISFIRE_GRACE, cron_after, cron_missed

from . import jobs
from .conftest import wait_for

MINUTE = 60.0


def minutes_since(start: float, now: float) -> int:
    """How many whole minutes (times of '* * * * *') fall in [start, now]."""
    return math.floor(now / MINUTE) - math.ceil(start / MINUTE) + 1


@pytest.mark.parametrize("misfire, max_catch_up", [("coalesce", 100), ("skip", 100), ("catch_up", 3)])
def test_a_cron_schedule_after_downtime_runs_as_its_misfire_says(make_handler, key, misfire, max_catch_up):
    handler = make_handler(allow=["tests"])
    now = handler.backend.now()
    on_time = now % MINUTE <= MISFIRE_GRACE - 1  # the latest missed minute is recent enough to be on time
    if on_time and misfire == "skip" and now % MINUTE > MISFIRE_GRACE - 3:
        time.sleep(3)  # too close to call: wait until the latest minute is surely late
        now, on_time = handler.backend.now(), False
    expected = {"coalesce": 1, "skip": 1 if on_time else 0, "catch_up": 3}[misfire]
    handler.recurrent_tasks[key] = Recurrent(Task(jobs.record, (key, 1)), cron="* * * * *", start=now - 600,
                                             misfire=misfire, max_catch_up=max_catch_up)
    wait_for(lambda: handler.recurrent_tasks[key].start > now, what="the schedule to move past its missed times")
    assert handler.join(timeout=10)
    assert len(jobs.calls[key]) == expected
    upcoming = handler.recurrent_tasks[key].start
    assert upcoming == cron_after("* * * * *", "UTC", now, 1)[0]


def test_catch_up_runs_every_missed_time_when_fewer_than_its_most(make_handler, key):
    handler = make_handler(allow=["tests"])
    now = handler.backend.now()
    handler.recurrent_tasks[key] = Recurrent(Task(jobs.record, (key, 1)), cron="* * * * *", start=now - 300,
                                             misfire="catch_up")
    wait_for(lambda: handler.recurrent_tasks[key].start > now, what="the missed times to fire")
    assert handler.join(timeout=10)
    assert len(jobs.calls[key]) == minutes_since(now - 300, now)


@pytest.mark.parametrize("misfire, expected", [("coalesce", 1), ("skip", 0), ("catch_up", 4)])
def test_an_interval_schedule_after_downtime_runs_as_its_misfire_says(make_handler, key, misfire, expected):
    handler = make_handler(allow=["tests"])
    now = handler.backend.now()
    handler.recurrent_tasks[key] = Recurrent(Task(jobs.record, (key, 1)), 60.0, start=now - 645, misfire=misfire,
                                             max_catch_up=4)
    wait_for(lambda: handler.recurrent_tasks[key].start > now, what="the schedule to move past its missed times")
    assert handler.join(timeout=10)
    assert len(jobs.calls[key]) == expected
    assert handler.recurrent_tasks[key].start == pytest.approx(now - 645 + 11 * 60.0)  # the latest missed: 45 s late


def test_a_cron_schedule_in_a_time_zone(make_handler):
    handler = make_handler(max_num_threads=0)
    handler.recurrent_tasks["paris"] = Recurrent(Task(jobs.add, (1, 2)), cron="30 2 * * *", timezone="Europe/Paris")
    stored = handler.recurrent_tasks["paris"]
    assert stored.cron == "30 2 * * *" and stored.timezone == "Europe/Paris" and stored.misfire == "coalesce"
    assert stored.start == cron_after("30 2 * * *", "Europe/Paris", handler.backend.now(), 1)[0]


def test_repeats_count_each_caught_up_run(make_handler, key):
    handler = make_handler(allow=["tests"])
    now = handler.backend.now()
    handler.recurrent_tasks[key] = Recurrent(Task(jobs.record, (key, 1)), cron="* * * * *", repeats=2,
                                             start=now - 600, misfire="catch_up")
    wait_for(lambda: key not in handler.recurrent_tasks, what="the schedule to end after its 2 runs")
    assert handler.join(timeout=10)
    assert len(jobs.calls[key]) == 2


@pytest.mark.parametrize(
    "options, message",
    [
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": "* * * * * *"}, "5-field"),
        ({"cron": "* * * * *", "timezone": "Mars/Olympus"}, "timezone"),
        ({"cron": "* * * * *", "misfire": "later"}, "misfire"),
        ({"cron": "* * * * *", "max_catch_up": 0}, "max_catch_up"),
        ({"interval": 5, "cron": "* * * * *"}, "either"),
        ({}, "either"),
    ],
)
def test_bad_schedules_are_refused(options, message):
    with pytest.raises(InvalidTask, match=message):
        Recurrent(Task(jobs.add, (1, 2)), **options)


def test_cron_arithmetic_counts_missed_times_and_keeps_the_latest():
    start = 1_800_000_000.0  # a whole minute
    assert cron_missed("* * * * *", "UTC", start, start + 600, 3) == [start + 480, start + 540, start + 600]
    assert cron_missed("* * * * *", "UTC", start, start + 120, 100) == [start, start + 60, start + 120]
    assert cron_after("*/5 * * * *", "UTC", start, 2) == [start + 300 - start % 300, start + 600 - start % 300]


def test_redis_keeps_cron_times_ahead_and_workers_compute_more(backend):
    """Redis's scripts cannot compute cron times: a schedule stores them ahead, says when it runs
    low, and refill_cron (every worker heartbeat) computes more, once however many ask."""
    if backend.in_process:
        assert backend.refill_cron("q") == 0  # the embedded backend computes each next time when it fires
        return
    from taskutils.recurrent import record_of

    now = backend.now()
    record = record_of(Recurrent(Task(jobs.add, (1, 2)), cron="* * * * *", start=now - 120), now)
    short = record.__class__(**{**record.__dict__, "times": record.times[: CRON_LOW // 2]})
    backend.recurrent_put("q", "low", short)
    backend.exchange(Exchange("q", "c", (), 10, 30.0))
    assert backend.refill_cron("q") == 1
    assert backend.refill_cron("q") == 0  # nothing is short any more
    stored = backend.client.zcard("tu:{q}:rec_times:low")
    assert stored > CRON_LOW
    assert backend.recurrent_get("q", "low").next_run > now
