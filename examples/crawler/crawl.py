"""The crawler's one task: fetch a page, enqueue the links it finds. Workers import this module
(`taskutils-worker --import examples.crawler.crawl`)."""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request
from urllib.parse import urljoin, urlsplit

from taskutils import Task, Throttled, current_task

LINK = re.compile(r'href="([^"]+)"')
SEEN_FOR = 24 * 3600.0  # a URL is fetched once a day at most


def page_task(url: str) -> Task:
    """The task fetching `url`: keyed by its host (the per-domain limits apply), once per URL."""
    return Task(fetch, (url,), key=urlsplit(url).netloc, unique=url, unique_for=SEEN_FOR)


def fetch(url: str) -> int:
    """Fetch one page and enqueue the pages it links to on the same host; returns how many links."""
    # the servers of the example log when each task started, to tell a request sent late from one
    # started late (examples/crawler/sites.py); a real crawler has no need of this header
    request = urllib.request.Request(url, headers={"X-Task-Started": repr(time.time())})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        if exc.code == 429:  # the server asks us to slow down: the domain waits, no attempt is used
            raise Throttled(retry_after=float(exc.headers.get("Retry-After") or 30)) from None
        raise
    host = urlsplit(url).netloc
    links = [urljoin(url, href) for href in LINK.findall(body)]
    same_host = [link for link in links if urlsplit(link).netloc == host]
    # enqueued with this task's outcome, in the same round trip: if the fetch fails or its worker
    # dies, no link of this run is enqueued (the next run finds them again)
    current_task().enqueue_on_success(page_task(link) for link in same_host)
    return len(same_host)
