"""The dashboard in a real browser: headless Chromium driven by Playwright, over a real
redis-server and real taskutils-worker processes. Each test does what an operator would, waits
on what the page shows (Playwright's expect polls until its deadline), and saves a screenshot
of the page at 1366x768 to tests/output/screenshots/ for people to look at."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

from taskutils import Recurrent, Task
from taskutils.backends.redis import RedisBackend

from . import web_fixtures as tasks
from .conftest import wait_for
from .fleet import ROOT
from .web_fixtures import SCRIPT, ServedDashboard

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # the tests skip, saying so (browser_missing)
    expect = sync_playwright = None

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = ROOT / "tests" / "output" / "screenshots"
SECONDS = 1000  # Playwright counts milliseconds
TASKS = ("--import", "tests.web_fixtures")


def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if sync_playwright is None:
        return "playwright is not installed: pip install playwright"
    if not Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM}: apt-get install chromium"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    missing = browser_missing()
    if missing:  # loud: the reason shows in the summary; on CI it is a failure
        (pytest.fail if os.environ.get("CI") else pytest.skip)(f"BROWSER TESTS NOT RUN: {missing}")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def dashboard(redis_url: str) -> Iterator[ServedDashboard]:
    backend = RedisBackend.from_url(redis_url)
    with ServedDashboard(backend) as served:
        yield served
    backend.close()


@pytest.fixture
def page(browser, dashboard: ServedDashboard) -> Iterator[object]:
    """A 1366x768 tab on the dashboard that accepts confirmations; the test fails on any script
    error, console error (a CSP violation) or failed file or htmx refresh (pages may be 404s)."""
    context = browser.new_context(viewport={"width": 1366, "height": 768}, base_url=dashboard.url)
    tab = context.new_page()
    problems: list[str] = []
    tab.on("dialog", lambda dialog: dialog.accept())
    tab.on("pageerror", lambda error: problems.append(str(error)))
    tab.on("console", lambda message: problems.append(message.text) if message.type == "error"
           and not message.text.startswith("Failed to load resource") else None)
    tab.on("response", lambda response: problems.append(f"{response.status} {response.url}")
           if response.status >= 400 and response.request.resource_type != "document" else None)
    yield tab
    context.close()
    assert problems == []


def screenshot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


def count(page, queue: str, name: str):
    return page.locator(f'tr[data-queue="{queue}"] td[data-count="{name}"]')


def test_the_overview_follows_the_counts_as_workers_run_tasks(page, producer, workers):
    producer.enqueue_tasks([Task(tasks.nap, (0.2,)) for _ in range(20)])
    page.goto("/")
    expect(count(page, "default", "queued")).to_have_text("20")
    page.evaluate("window.notReloaded = true")
    workers(*TASKS, "--threads", "2")
    expect(count(page, "default", "queued")).to_have_text("0", timeout=60 * SECONDS)
    expect(count(page, "default", "done-hour")).to_have_text("20", timeout=60 * SECONDS)
    assert page.evaluate("window.notReloaded") is True  # htmx refreshed the figures in place
    expect(page.locator("svg.chart rect.done").first).to_be_visible()
    screenshot(page, "overview")


def test_a_failed_task_retried_from_the_failed_page_is_done_on_its_page(page, producer, workers, tmp_path):
    flag = tmp_path / "flag"
    workers(*TASKS)
    ref = producer.enqueue_task(Task(tasks.needs_flag, (str(flag),)))
    wait_for(lambda: ref.status() == "failed", timeout=30, what="the task failed")
    page.goto("/failed")
    row = page.locator(f'tbody[data-task="{ref.id}"]')
    expect(row).to_contain_text("RuntimeError: no flag file")
    row.locator("summary").click()
    expect(row.locator("pre.traceback")).to_contain_text("Traceback (most recent call last)")
    screenshot(page, "failed")
    flag.write_text("the flag is up")
    row.get_by_role("button", name="Retry").click()
    expect(page.locator(".flash")).to_have_text(f"Retrying task {ref.id}.")
    page.goto(f"/tasks/{ref.id}")
    expect(page.locator("[data-state]")).to_have_text("done", timeout=30 * SECONDS)
    expect(page.locator("pre.result")).to_have_text("'the flag is up'")
    screenshot(page, "task")


def test_pausing_a_queue_from_its_page_stops_the_workers_taking_it(page, producer, workers, client):
    """Paused, the queue keeps its tasks while the same workers run a task of their other queue;
    resumed, it drains."""
    workers(*TASKS, "--queue", "default", "--queue", "other", "--threads", "2")
    assert producer.enqueue_task(Task(tasks.double, (1,))).result(timeout=30) == 2
    page.goto("/queues/default")
    page.get_by_role("button", name="Pause queue").click()
    expect(page.locator(".flash")).to_contain_text("Paused default")
    expect(page.locator(".badge.paused")).to_be_visible()
    producer.enqueue_tasks([Task(tasks.double, (n,)) for n in range(5)])
    assert producer.enqueue_task(Task(tasks.double, (2,), queue="other")).result(timeout=30) == 4
    assert producer.backend.counts("default").queued == 5
    expect(page.locator('dd[data-count="queued"]')).to_have_text("5", timeout=10 * SECONDS)
    screenshot(page, "queue")
    page.get_by_role("button", name="Resume queue").click()
    expect(page.locator(".flash")).to_contain_text("Resumed default")
    expect(page.locator('dd[data-count="queued"]')).to_have_text("0", timeout=30 * SECONDS)
    assert producer.join(timeout=30)


def test_the_search_box_finds_a_task_by_id(page, producer, dashboard):
    ref = producer.enqueue_task(Task(tasks.double, (SCRIPT,), delay=600))
    page.goto("/")
    page.get_by_label("Task id").fill(ref.id)
    page.get_by_label("Task id").press("Enter")
    expect(page).to_have_url(f"{dashboard.url}/tasks/{ref.id}")
    expect(page.locator("h1")).to_contain_text(ref.id)
    expect(page.locator("dd.args code")).to_have_text(repr(SCRIPT))  # shown as text, not run
    page.get_by_label("Task id").fill("0-0")
    page.get_by_label("Task id").press("Enter")
    expect(page.locator("h1")).to_have_text("Not found")


def test_workers_and_schedules_pages(page, producer, workers, tmp_path):
    flag = tmp_path / "release"
    (worker,) = workers(*TASKS, "--threads", "2", "--visibility-timeout", "3")
    ref = producer.enqueue_task(Task(tasks.until_flag, (str(flag),)))
    producer.recurrent_tasks["hourly-report"] = Recurrent(Task(tasks.double, (1,)), interval=3600,
                                                          start=producer.backend.now() + 900)
    producer.recurrent_tasks["weekday-digest"] = Recurrent(Task(tasks.double, (2,)), cron="0 7 * * 1-5",
                                                           timezone="Europe/Paris")
    try:
        wait_for(lambda: ref.status() == "running", timeout=30, what="the task running")
        page.goto("/workers")
        expect(page.locator("table.workers tbody tr")).to_contain_text(str(worker.pid))
        running = page.locator("table.tasks tbody tr", has_text=ref.id)
        expect(running.locator("td.num")).not_to_have_text("starting", timeout=30 * SECONDS)  # a heartbeat told
        screenshot(page, "workers")
        running.locator("a").click()
        expect(page.locator("[data-state]")).to_have_text("running")
    finally:
        flag.touch()
    expect(page.locator("[data-state]")).to_have_text("done", timeout=30 * SECONDS)  # refreshed in place
    expect(page.locator("header.top")).to_have_count(1)
    page.goto("/schedules")
    expect(page.locator('tr[data-schedule="weekday-digest"]')).to_contain_text("Europe/Paris")
    screenshot(page, "schedules")
    page.locator('tr[data-schedule="hourly-report"]').get_by_role("button", name="Remove").click()
    expect(page.locator(".flash")).to_have_text("Removed schedule hourly-report of default.")
    assert producer.backend.recurrent_names("default") == ["weekday-digest"]
