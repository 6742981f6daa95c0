"""Task functions for the fleet example: the workers import this module (--import examples.fleet_tasks)."""

import hashlib
import os
import socket


def fingerprint(url: str) -> dict:
    """Stand-in for crawling a page: returns who handled it (host and process: two worker
    processes on one host are two workers) and a digest of the URL."""
    return {"url": url, "worker": f"{socket.gethostname()} pid {os.getpid()}", "sha1": hashlib.sha1(url.encode()).hexdigest()}
