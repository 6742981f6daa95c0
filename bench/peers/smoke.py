"""Sanity check of the peer adapters: every phase once, for every peer, at a small size.

    python -m bench.peers.smoke --redis-url redis://127.0.0.1:PORT --tasks 500
    python -m bench.peers.smoke --tasks 500              # starts its own redis-server on a free port

Each peer gets its own database of that server (db 1, 2, ... in PEERS order), flushed between
phases; used_memory is server-wide, so give it a Redis nobody else is using. Not the benchmark:
the figures at this size are noisy.
"""

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from urllib.parse import urlsplit, urlunsplit

import redis

from . import PEERS


def start_redis(workdir):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", workdir], stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(200):
        try:
            redis.Redis.from_url(url).ping()
            return proc, url
        except redis.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("redis-server did not start")


def with_db(url, db):
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{db}"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--redis-url", help="a Redis of your own (default: start one on a free port)")
    ap.add_argument("--tasks", type=int, default=500)
    ap.add_argument("--samples", type=int, default=50, help="back-to-back latency samples")
    ap.add_argument("--idle-samples", type=int, default=5, help="latency samples after 1 s idle each")
    ap.add_argument("--peers", default=",".join(PEERS), help="comma-separated subset of " + ",".join(PEERS))
    ap.add_argument("--workdir", help="worker logs (default: a temporary directory)")
    args = ap.parse_args(argv)

    workdir = args.workdir or tempfile.mkdtemp(prefix="peers-smoke-")
    os.makedirs(workdir, exist_ok=True)
    server = None
    url = args.redis_url
    if url is None:
        server, url = start_redis(workdir)
    print(f"redis {url}  worker logs in {workdir}  n={args.tasks}", flush=True)
    head = f"{'peer':38} {'enq 1x1 /s':>11} {'bulk /s':>9} {'B/task':>7} {'drain /s':>9} " \
           f"{'p50 ms':>7} {'p99 ms':>7} {'idle p50':>8} {'idle p99':>8}"
    print(head, flush=True)
    failed = 0
    try:
        for i, key in enumerate(k.strip() for k in args.peers.split(",")):
            n = args.tasks
            try:
                peer = PEERS[key](with_db(url, i + 1), workdir)
            except Exception:
                failed += 1
                print(f"{key:38} cannot start:\n{traceback.format_exc()}", flush=True)
                continue
            try:
                one = n / peer.enqueue_one_by_one(n)
                bulk = peer.enqueue_bulk(n)
                bulk = f"{n / bulk:9.0f}" if bulk else f"{'-':>9}"
                size = peer.queued_bytes(n)
                drain = peer.drain(n)
                p50, p99, ip50, ip99 = peer.latency(args.samples, args.idle_samples)
                print(f"{peer.name:38} {one:11.0f} {bulk} {size:7.0f} {drain:9.0f} "
                      f"{p50:7.2f} {p99:7.2f} {ip50:8.2f} {ip99:8.2f}", flush=True)
            except Exception:
                failed += 1
                print(f"{peer.name:38} FAILED:\n{traceback.format_exc()}", flush=True)
            finally:
                peer.close()
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
            if not args.workdir and not failed:
                shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
