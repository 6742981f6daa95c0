"""The crawl of examples/crawler, run by taskutils and by Scrapy with scrapy-redis on the same
local sites, side by side: politeness as the servers saw it, time, and Redis CPU per page.

    pip install -e '.[bench]'
    python -m bench.crawl.run                      # 3 domains of 200 pages, then 100 of 50
    python -m bench.crawl.run --only three         # just the 3-domain crawl

Starts its own redis-server. Scrapy's settings are what a Scrapy user sets for "2 requests in
flight and R requests/s per domain": CONCURRENT_REQUESTS_PER_DOMAIN=2, DOWNLOAD_DELAY=1/R,
RANDOMIZE_DOWNLOAD_DELAY=False, in each of the 2 processes (Scrapy has no fleet-wide limit);
scrapy-redis shares its request queue and duplicate filter through Redis.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

from examples.crawler import run as crawler
from tests.redis_server import RedisServer

SPIDER = Path(__file__).with_name("scrapy_spider.py")
CRAWLS = {
    "three": ["--pages", "200", "--rate", "5"],
    "hundred": ["--domains", "100", "--pages", "50", "--rate", "2", "--delay", "0.01", "--throttle-share", "0.02"],
}


def scrapy_crawl(args: argparse.Namespace, url: str) -> dict[str, object]:
    """The crawl with 2 Scrapy processes; the report has the shape of examples.crawler.run's."""
    sites = crawler.make_sites(args)
    client = redis.Redis.from_url(url)
    client.flushall()
    workdir = Path(tempfile.mkdtemp(prefix="scrapy-"))
    command = [
        sys.executable, "-m", "scrapy", "runspider", str(SPIDER), "-L", "WARNING",
        "-s", f"REDIS_URL={url}", "-s", "SCHEDULER=scrapy_redis.scheduler.Scheduler",
        "-s", "DUPEFILTER_CLASS=scrapy_redis.dupefilter.RFPDupeFilter", "-s", "SCHEDULER_PERSIST=False",
        "-s", f"CONCURRENT_REQUESTS_PER_DOMAIN={args.concurrency}", "-s", f"DOWNLOAD_DELAY={1 / args.rate!r}",
        "-s", "RANDOMIZE_DOWNLOAD_DELAY=False", "-s", "ROBOTSTXT_OBEY=False", "-s", "COOKIES_ENABLED=False",
        "-s", "CONCURRENT_REQUESTS=200", "-s", "TELNETCONSOLE_ENABLED=False", "-s", "MAX_IDLE_TIME_BEFORE_CLOSE=5",
    ]
    processes = []
    try:
        cpu_before, started = crawler.redis_cpu(client), time.time()
        for n in range(args.workers):
            log = open(workdir / f"scrapy-{n}.log", "wb")
            processes.append(subprocess.Popen(command, cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
                                              env=dict(os.environ, CRAWL_START="crawl:start_urls")))
        client.rpush("crawl:start_urls", *[site.root for site in sites])
        expected = args.pages * len(sites)
        deadline = time.time() + 1800
        while time.time() < deadline and any(p.poll() is None for p in processes):
            fetched = sum(len({r.path for r in site.requests if r.status == 200}) for site in sites)
            if fetched >= expected:
                break
            time.sleep(0.2)
        seconds = time.time() - started
        cpu = crawler.redis_cpu(client) - cpu_before
    finally:
        for process in processes:
            process.send_signal(signal.SIGINT)
        for process in processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        for site in sites:
            site.stop()
        client.close()
    return crawler.summary(args, sites, seconds, cpu)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=sorted(CRAWLS))
    options = parser.parse_args(argv)
    server = RedisServer().start()
    try:
        for name, crawl_args in CRAWLS.items():
            if options.only and name != options.only:
                continue
            args = crawler.parse_args(["--redis-url", server.url, *crawl_args])
            for system, report in (("taskutils", crawler.crawl(args)), ("scrapy-redis", scrapy_crawl(args, server.url))):
                print(f"\n## {name}: {system}\n")
                crawler.print_report(report)
                for problem in crawler.held(args, report):
                    print("NOT HELD:", problem)
    finally:
        server.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
