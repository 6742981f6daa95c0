"""Task functions for the fleet example: the workers import this module (--import examples.fleet_tasks)."""

import hashlib
import socket


def fingerprint(url: str) -> dict:
    """Stand-in for crawling a page: returns who handled it and a digest of the URL."""
    return {"url": url, "worker": socket.gethostname(), "sha1": hashlib.sha1(url.encode()).hexdigest()}
