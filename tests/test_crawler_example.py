"""The crawler example, run small as a user would: real worker processes, local HTTP servers that
log every request, one of them slow and one answering 429 with Retry-After."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from .fleet import ROOT


def test_the_crawler_keeps_every_domain_limit_and_fetches_each_page_once(redis_url):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-m", "examples.crawler.run", "--redis-url", redis_url, "--pages", "30", "--rate", "5",
         "--slow", "0.3", "--threads", "4", "--json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["problems"] == [] and done.returncode == 0, done.stderr[-3000:]
    domains = report["domains"]
    assert {name: site["pages"] for name, site in domains.items()} == {"fast": 30, "slow": 30, "throttling": 30}
    assert all(site["duplicates"] == 0 and site["max_in_flight"] <= 2 and site["max_per_window"] <= 5
               and 0 < site["max_started_per_window"] <= 5 for site in domains.values())
    assert domains["throttling"]["throttled"] > 0 and domains["throttling"]["inside_retry_after"] == 0
    assert domains["slow"]["max_in_flight"] == 2  # the slow domain used both of its slots
