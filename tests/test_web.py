"""The web dashboard's routes, through Starlette's TestClient, on the embedded backend and on a
real redis-server: what each page shows, what each action changes, and the guard."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from typing import Iterator

import httpx
import pytest
from starlette.testclient import TestClient

from taskutils import Limit, Recurrent, Task, TaskHandler, browse
from taskutils.backends import Backend, MemoryBackend
from taskutils.backends.redis import RedisBackend
from taskutils.browse import Minute
from taskutils.web import create_app
from taskutils.web.charts import bar_chart, buckets, combined
from taskutils.admin_cli import main
from taskutils.web.security import check_bind

from . import web_fixtures as tasks
from .conftest import wait_for
from .fleet import ROOT
from .redis_server import free_port
from .web_fixtures import SCRIPT, csrf_of, figure

LOCAL = "http://127.0.0.1:8080"
TOKEN = "a-long-enough-test-token"


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """The backend the dashboard reads: the embedded one, or a real redis-server."""
    if request.param == "memory":
        yield MemoryBackend()
        return
    backend = RedisBackend.from_url(request.getfixturevalue("redis_url"))
    yield backend
    backend.close()


@pytest.fixture
def fleet(store: Backend) -> Iterator[dict[str, object]]:
    """A fleet with something on every page: queue "work" ran (2 done, 2 ValueError and 1 KeyError
    failures) and has no worker left; queue "waiting" holds a task with SCRIPT in its arguments,
    a delayed task, keyed tasks with a limit, and a schedule."""
    with TaskHandler(backend=store, max_num_threads=2, sleep_seconds=0.1, queue="work") as worker:
        worker.enqueue_tasks([Task(tasks.double, (1,)), Task(tasks.double, (2,)),
                              Task(tasks.fails, (SCRIPT,)), Task(tasks.fails, ("plain",)), Task(tasks.missing, ("k",))])
        assert worker.join(timeout=30)
        wait_for(lambda: ended(store, "work") == (2, 3), what="the worker's tally in the history")
    producer = TaskHandler(backend=store, max_num_threads=0, queue="waiting")
    scripted = producer.enqueue_task(Task(tasks.double, (SCRIPT,)))
    delayed = producer.enqueue_task(Task(tasks.double, (3,), delay=600))
    producer.enqueue_tasks([Task(tasks.double, (n,), key="site-a" if n % 3 else "site-b") for n in range(6)])
    producer.limits["site-a"] = Limit(concurrency=2, rate=5, per=1)
    producer.recurrent_tasks["nightly"] = Recurrent(Task(tasks.double, (7,)), interval=3600, start=store.now() + 600)
    yield {"producer": producer, "scripted": scripted, "delayed": delayed}
    producer.close()


def ended(backend: Backend, queue: str) -> tuple[int, int]:
    """Tasks of `queue` done and failed in the last hour, as the history has them."""
    hour = browse.history(backend, queue, 60)
    return sum(minute.done for minute in hour), sum(minute.failed for minute in hour)


def client_of(backend: Backend, base_url: str = LOCAL, **options: object) -> TestClient:
    return TestClient(create_app(backend, **options), base_url=base_url)


def post(client: TestClient, action: str, **fields: str) -> str:
    """Send an action as its button does (with the page's CSRF token); the page it redirects to."""
    fields.setdefault("csrf", csrf_of(client.get("/failed").text))
    response = client.post(f"/actions/{action}", data=fields, follow_redirects=False)
    assert response.status_code == 303, response.text
    return response.headers["location"]


# pages


def test_every_page_shows_the_fleet_s_figures(store, fleet):
    client = client_of(store)
    overview = client.get("/")
    assert overview.status_code == 200
    assert [figure(overview.text, "work", name) for name in ("scheduled", "queued", "running", "failed")] == [0, 0, 0, 3]
    assert [figure(overview.text, "waiting", name) for name in ("scheduled", "queued", "failed")] == [1, 7, 0]
    assert [figure(overview.text, "work", name) for name in ("done-hour", "failed-hour")] == [2, 3]
    assert 'class="done"' in overview.text  # a bar in the chart

    waiting = client.get("/queues/waiting")
    assert waiting.status_code == 200
    assert re.search(r'data-count="queued">7<', waiting.text)
    assert "site-a" in waiting.text and "2 at once, 5 per 1s" in waiting.text
    assert fleet["delayed"].id in waiting.text and fleet["scripted"].id in waiting.text
    assert "Pause queue" in waiting.text

    failed = client.get("/failed").text
    assert "3 of 3 failed tasks shown" in failed
    assert failed.count("<details>") == 3 and "KeyError" in failed

    task = client.get(f"/tasks/{fleet['delayed'].id}").text
    assert 'data-state="scheduled"' in task and "tests.web_fixtures:double" in task and "<code>3</code>" in task

    schedules = client.get("/schedules").text
    assert 'data-schedule="nightly"' in schedules and "1h 00m" in schedules
    assert client.get("/workers").status_code == 200


def test_a_task_page_shows_its_result_or_traceback_and_an_unknown_id_is_a_404(store, fleet):
    client = client_of(store)
    some_id = min(store.failed("work"))
    page = client.get(f"/tasks/{some_id}")
    assert page.status_code == 200 and "Traceback" in page.text
    missing = client.get("/tasks/0-0")
    assert missing.status_code == 404 and "No task &#39;0-0&#39;" in missing.text
    assert client.get("/queues/nope").status_code == 404
    search = client.get(f"/search?id=+{some_id}+", follow_redirects=False)
    assert search.status_code == 303 and search.headers["location"] == f"/tasks/{some_id}"


def test_workers_page_lists_a_live_worker_and_its_running_task(store, tmp_path):
    flag = tmp_path / "release"
    with TaskHandler(backend=store, max_num_threads=1, sleep_seconds=0.1, queue="slow") as worker:
        ref = worker.enqueue_task(Task(tasks.until_flag, (str(flag),)))
        wait_for(lambda: ref.status() == "running", what="the task running")
        (registered,) = store.workers()
        page = client_of(store).get("/workers").text
        flag.touch()
        assert ref.result(timeout=30) is None
    assert f'data-consumer="{registered["consumer"]}"' in page
    assert ref.id in page and "tests.web_fixtures:until_flag" in page


def test_an_htmx_refresh_gets_only_the_live_part(store, fleet):
    client = client_of(store)
    part = client.get("/", headers={"HX-Request": "true"}).text
    assert "<html" not in part and 'data-queue="waiting"' in part and "<svg" in part
    assert "<html" not in client.get("/queues/waiting", headers={"HX-Request": "true"}).text
    queued = client.get(f"/tasks/{fleet['scripted'].id}", headers={"HX-Request": "true"})
    assert queued.status_code == 200 and "<html" not in queued.text
    ended = client.get(f"/tasks/{min(store.failed('work'))}", headers={"HX-Request": "true"})
    assert ended.status_code == 286 and "<html" not in ended.text  # 286: htmx stops polling


# actions


def test_pause_and_resume_a_queue(store, fleet):
    client = client_of(store)
    back = post(client, "pause", queue="waiting")
    assert store.paused("waiting") and back.startswith("/queues/waiting?")
    assert "Paused waiting" in client.get(back).text and "Resume queue" in client.get(back).text
    post(client, "resume", queue="waiting")
    assert not store.paused("waiting")


def test_retry_one_and_all_matching_a_filter(store, fleet):
    client = client_of(store)
    failed = {task_id for task_id in store.failed("work")}
    page = client.get("/failed?exception=ValueError").text
    assert "2 of 3 failed tasks shown" in page
    value_errors = re.findall(r'<tbody class="failure" data-task="([^"]+)">', page)
    assert len(value_errors) == 2 and set(value_errors) <= failed
    post(client, "retry", queue="work", id=value_errors[0], filter_exception="ValueError")
    assert set(store.failed("work")) == failed - {value_errors[0]}
    back = post(client, "retry-matching", filter_queue="work", filter_exception="ValueError")
    assert back.startswith("/failed?queue=work&exception=ValueError&")
    assert len(store.failed("work")) == 1 and store.counts("work").queued == 2  # the KeyError one is left
    assert "Retrying 1 failed task(s)" in client.get(back).text


def test_purge_one_and_all(store, fleet):
    client = client_of(store)
    first, *rest = sorted(store.failed("work"))
    post(client, "purge", queue="work", id=first)
    assert sorted(store.failed("work")) == rest
    post(client, "purge-matching")
    assert store.failed("work") == {} and store.counts("work").failed == 0


def test_cancel_a_queued_task(store, fleet):
    client = client_of(store)
    ref = fleet["scripted"]
    back = post(client, "cancel", queue="waiting", id=ref.id)
    assert ref.status() == "cancelled"
    assert "Cancelled task" in client.get(back).text
    assert "cancelled" in client.get(f"/tasks/{ref.id}").text


def test_remove_a_schedule(store, fleet):
    post(client_of(store), "remove-schedule", queue="waiting", name="nightly")
    assert store.recurrent_names("waiting") == []


# the guard


def test_a_post_without_the_csrf_token_or_from_another_origin_is_refused(store, fleet):
    client = client_of(store)
    assert client.post("/actions/pause", data={"queue": "waiting"}).status_code == 403
    assert client.post("/actions/pause", data={"queue": "waiting", "csrf": "0" * 64}).status_code == 403
    token = csrf_of(client.get("/queues/waiting").text)
    for origin in ("http://evil.example", "http://127.0.0.1:9999", "null"):
        foreign = client.post("/actions/pause", data={"queue": "waiting", "csrf": token}, headers={"Origin": origin})
        assert foreign.status_code == 403 and not store.paused("waiting"), origin
    own = client.post("/actions/pause", data={"queue": "waiting", "csrf": token}, headers={"Origin": LOCAL},
                      follow_redirects=False)
    assert own.status_code == 303 and store.paused("waiting")
    header = client.post("/actions/resume", data={"queue": "waiting"}, headers={"X-CSRF-Token": token},
                         follow_redirects=False)
    assert header.status_code == 303 and not store.paused("waiting")


def test_read_only_shows_no_button_and_refuses_every_post(store, fleet):
    client = client_of(store, read_only=True)
    for path in ("/", "/queues/waiting", "/failed", f"/tasks/{fleet['scripted'].id}", "/workers", "/schedules"):
        page = client.get(path)
        assert page.status_code == 200 and 'method="post"' not in page.text, path
    assert client.post("/actions/pause", data={"queue": "waiting"}).status_code == 403
    assert client.post("/actions/purge-matching", data={}).status_code == 403
    assert len(store.failed("work")) == 3 and not store.paused("waiting")


def test_with_a_token_every_request_carries_it(store):
    client = client_of(store, "http://dashboard.example", token=TOKEN)
    assert client.get("/").status_code == 401
    assert client.get("/static/style.css").status_code == 401
    assert client.get("/", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert client.get("/?token=wrong").status_code == 401
    login = client.get(f"/failed?token={TOKEN}&queue=work", follow_redirects=False)
    assert login.status_code == 303 and login.headers["location"] == "/failed?queue=work"
    cookie = login.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and TOKEN not in cookie
    assert client.get("/").status_code == 200  # the cookie is kept by the client


def test_without_a_token_only_loopback_host_names_are_served(store):
    """A page of another site reaching the dashboard through a name rebound to 127.0.0.1 gets nothing."""
    assert client_of(store, "http://rebound.example:8080").get("/").status_code == 403
    assert client_of(store, "http://localhost:8080").get("/").status_code == 200
    assert client_of(store, "http://[::1]:8080").get("/").status_code == 200


def test_binding_beyond_loopback_needs_a_token(monkeypatch, capsys):
    monkeypatch.delenv("TASKUTILS_WEB_TOKEN", raising=False)
    assert main(["web", "--bind", "0.0.0.0:8080"]) == 2
    assert "without a token" in capsys.readouterr().err
    assert main(["web", "--bind", "nowhere"]) == 2
    check_bind("0.0.0.0", TOKEN)
    check_bind("127.0.0.1", None)
    check_bind("::1", None)
    with pytest.raises(ValueError):
        check_bind("192.168.1.10", None)


def test_the_command_serves_the_dashboard_until_interrupted(redis_url):
    port = free_port()
    command = ["-m", "taskutils.admin_cli", "--redis-url", redis_url, "web", "--bind", str(port), "--read-only"]
    server = subprocess.Popen([sys.executable, *command], stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        wait_for(lambda: reachable(f"http://127.0.0.1:{port}/"), timeout=30, what="the dashboard up")
        assert httpx.post(f"http://127.0.0.1:{port}/actions/pause", data={"queue": "q"}).status_code == 403
    finally:
        server.send_signal(signal.SIGINT)
        assert server.wait(30) == 0
    assert f"serving http://127.0.0.1:{port}/ (read-only)" in server.stderr.read()


def reachable(url: str) -> bool:
    try:
        return httpx.get(url).status_code == 200
    except httpx.TransportError:
        return False


def test_an_unreachable_broker_is_a_503_page():
    port = free_port()  # nothing listens there
    backend = RedisBackend.from_url(f"redis://127.0.0.1:{port}/0", broker_timeout=0.2)
    page = client_of(backend).get("/")
    assert page.status_code == 503 and "The broker cannot be reached" in page.text


def test_markup_in_arguments_and_tracebacks_is_escaped(store, fleet):
    client = client_of(store)
    pages = [client.get(path).text for path in
             ("/failed", "/queues/waiting", f"/tasks/{fleet['scripted'].id}")]
    pages += [client.get(f"/tasks/{task_id}").text for task_id in store.failed("work")]
    assert all(SCRIPT not in page for page in pages)
    assert all("&lt;script&gt;alert(1)&lt;/script&gt;" in page for page in pages[:3])


def test_a_flash_message_shows_only_when_the_dashboard_signed_it(store):
    client = client_of(store)
    assert "Redis was hacked" not in client.get("/?msg=Redis+was+hacked&sig=00").text


# charts (pure)


def test_charts_add_up_queues_and_bucket_the_newest_minutes():
    day = [Minute(60.0 * m, done=1, failed=m % 2) for m in range(1440)]
    both = combined([day, day])
    assert len(both) == 1440 and both[-1] == Minute(60.0 * 1439, done=2, failed=2)
    quarters = buckets(both, 15)
    assert len(quarters) == 96 and quarters[-1].start == 60.0 * 1425 and quarters[-1].done == 30
    assert len(buckets(both[-61:], 15)) == 4  # the incomplete oldest run is dropped
    svg = bar_chart(quarters, "test <chart>")
    assert svg.startswith("<svg") and svg.count('class="done"') == 96 and "test &lt;chart&gt;" in svg
    assert 'class="done"' not in bar_chart(buckets([Minute(0.0)] * 60, 1), "empty")
