"""Crawl local sites with real taskutils-worker processes and report, from the servers' own logs,
whether each domain's limits held.

    python -m examples.crawler.run --redis-url redis://127.0.0.1:6379/0            # 3 domains
    python -m examples.crawler.run --redis-url ... --domains 100 --pages 50 --rate 2 --delay 0.01

With 3 domains (the default), the second answers in --slow seconds and the third answers 429
with Retry-After: 1 to --throttle-share of its requests. With more, each answers in --delay
seconds and any may answer 429 to --throttle-share of its requests. Exit status 0 when every
limit held, no page was fetched twice and every page was fetched; 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import redis

from taskutils import Limit, TaskHandler

from .crawl import page_task
from .sites import Site

ROOT = Path(__file__).resolve().parents[2]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", default=os.environ.get("TASKUTILS_REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--domains", type=int, default=3)
    parser.add_argument("--pages", type=int, default=200, help="pages per domain")
    parser.add_argument("--concurrency", type=int, default=2, help="requests in flight per domain")
    parser.add_argument("--rate", type=float, default=5.0, help="requests per second per domain")
    parser.add_argument("--slow", type=float, default=0.2, help="answer time of the slow domain (3 domains)")
    parser.add_argument("--delay", type=float, default=0.0, help="answer time of every other domain")
    parser.add_argument("--throttle-share", type=float, default=0.2, help="share of requests answered 429")
    parser.add_argument("--margin", type=float, default=0.05,
                        help="the crawler keeps its request rate this share below the servers' limit (see README)")
    parser.add_argument("--workers", type=int, default=2, help="taskutils-worker processes")
    parser.add_argument("--threads", type=int, default=16, help="threads per worker")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    return parser.parse_args(argv)


def make_sites(args: argparse.Namespace) -> list[Site]:
    if args.domains == 3:
        return [
            Site("fast", args.pages, args.delay, seed=1).start(),
            Site("slow", args.pages, args.slow, seed=2).start(),
            Site("throttling", args.pages, args.delay, args.throttle_share, retry_after=1.0, seed=3).start(),
        ]
    return [
        Site(f"site{n}", args.pages, args.delay, args.throttle_share, retry_after=1.0, seed=n).start()
        for n in range(args.domains)
    ]


def start_workers(args: argparse.Namespace, queue: str) -> list[subprocess.Popen[bytes]]:
    command = [
        sys.executable, "-m", "taskutils.cli", "--redis-url", args.redis_url, "--queue", queue,
        "--import", "examples.crawler.crawl", "--threads", str(args.threads), "--log-level", "WARNING",
    ]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return [subprocess.Popen(command, cwd=ROOT, env=env) for _ in range(args.workers)]


def redis_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def crawl(args: argparse.Namespace) -> dict[str, object]:
    sites = make_sites(args)
    queue = f"crawl-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(args.redis_url)
    workers: list[subprocess.Popen[bytes]] = []
    try:
        with TaskHandler(args.redis_url, max_num_threads=0, queue=queue) as producer:
            # requests reach a server a varying few ms after their task starts: keeping the rate a
            # little below the server's limit keeps that jitter from putting one request too many
            # into a window the server counts
            producer.limits.default = Limit(concurrency=args.concurrency, rate=args.rate * (1 - args.margin))
            workers = start_workers(args, queue)
            cpu_before, started = redis_cpu(client), time.time()
            producer.enqueue_tasks(page_task(site.root) for site in sites)
            if not producer.join(timeout=3600):
                raise SystemExit("the crawl did not finish within an hour")
            seconds, cpu = time.time() - started, redis_cpu(client) - cpu_before
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            worker.wait(60)
        for site in sites:
            site.stop()
        client.close()
    return summary(args, sites, seconds, cpu)


def summary(args: argparse.Namespace, sites: list[Site], seconds: float, redis_cpu_seconds: float) -> dict[str, object]:
    """The report of a crawl of `sites` that took `seconds`, from the servers' logs."""
    reports = {site.name: site.report(args.rate, 1.0, args.concurrency) for site in sites}
    pages = sum(int(report["pages"]) for report in reports.values())
    return {
        "seconds": seconds, "pages": pages, "pages_per_second": pages / seconds,
        "redis_cpu_ms_per_page": 1000 * redis_cpu_seconds / max(pages, 1), "domains": reports,
        "active_at_once": max_active_domains(sites),
    }


def max_active_domains(sites: list[Site]) -> int:
    """The most domains being crawled at one moment: between their first request and their last
    answer (from the servers' logs)."""
    spans = [(min(r.arrived for r in site.requests), max(r.answered for r in site.requests))
             for site in sites if site.requests]
    timeline = sorted([(first, 1) for first, _ in spans] + [(last, -1) for _, last in spans])
    active = peak = 0
    for _, change in timeline:
        active += change
        peak = max(peak, active)
    return peak


def held(args: argparse.Namespace, report: dict[str, object]) -> list[str]:
    """What went wrong, if anything."""
    problems = []
    for name, site in report["domains"].items():  # type: ignore[union-attr]
        if site["max_in_flight"] > args.concurrency:
            problems.append(f"{name}: {site['max_in_flight']} requests in flight, limit {args.concurrency}")
        if site["max_per_window"] > args.rate:
            starts = site["max_started_per_window"]
            why = f" (their tasks: {starts} started in any 1 s window)" if starts else ""
            problems.append(f"{name}: {site['max_per_window']} requests in a 1 s window, limit {args.rate:g}{why}")
        if site["inside_retry_after"]:
            problems.append(f"{name}: {site['inside_retry_after']} requests inside a Retry-After window")
        if site["duplicates"]:
            problems.append(f"{name}: {site['duplicates']} pages fetched twice")
        if site["pages"] != args.pages:
            problems.append(f"{name}: {site['pages']} of {args.pages} pages fetched")
    return problems


def print_report(report: dict[str, object]) -> None:
    print(f"{'domain':<12} {'pages':>5} {'dup':>4} {'429':>4} {'in flight':>9} {'per 1 s':>7} "
          f"{'in R-A':>6} {'seconds':>8} {'bound':>7} {'ratio':>6}")
    for name, site in report["domains"].items():  # type: ignore[union-attr]
        ratio = site["seconds"] / site["bound_seconds"] if site["bound_seconds"] else 0.0
        print(f"{name:<12} {site['pages']:>5} {site['duplicates']:>4} {site['throttled']:>4} "
              f"{site['max_in_flight']:>9} {site['max_per_window']:>7} {site['inside_retry_after']:>6} "
              f"{site['seconds']:>8.1f} {site['bound_seconds']:>7.1f} {ratio:>6.2f}")
    print(f"\n{report['pages']} pages in {report['seconds']:.1f} s: {report['pages_per_second']:.1f} pages/s; "
          f"{report['active_at_once']} domains active at once at most; "
          f"Redis CPU {report['redis_cpu_ms_per_page']:.3f} ms per page")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = crawl(args)
    problems = held(args, report)
    if args.json:
        print(json.dumps(dict(report, problems=problems)))
    else:
        print_report(report)
        for problem in problems:
            print("NOT HELD:", problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
