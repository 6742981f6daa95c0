"""Local "domains" for the crawler: one HTTP server per domain on loopback, each logging every
request it gets, so that politeness is measured where it matters: on the server side.

A site has `pages` pages; page i links to pages 2i+1, 2i+2 and i+1 of the same site, and to
page 0 (already seen), so a crawler that does not deduplicate fetches pages many times. A site
can answer slowly, and can answer 429 with a Retry-After header to a share of the requests.
"""

from __future__ import annotations

import bisect
import random
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ALREADY_SENT = 0.05  # without a start time: a request arriving this soon after a 429 began was on its way


def most_in_a_window(times: list[float], per: float) -> int:
    """The most of the sorted `times` in any window of `per` seconds."""
    return max((bisect.bisect_left(times, start + per, lo=i) - i for i, start in enumerate(times)), default=0)


def sent_before(request: "Request", moment: float) -> bool:
    """The request was on its way before `moment`: its task started before it (the crawler's
    X-Task-Started header), or, for a client that does not say, it arrived within ALREADY_SENT."""
    if request.started:
        return request.started < moment
    return request.arrived - moment < ALREADY_SENT


class AcceptStampingServer(ThreadingHTTPServer):
    """Stamps each connection when it is accepted, before a thread is started for it: the
    arrival a server in C would log, without this process's thread start-up in it."""

    daemon_threads = True

    def process_request(self, request, client_address):  # type: ignore[no-untyped-def]
        stamped = StampedSocket(request)
        super().process_request(stamped, client_address)


class StampedSocket:
    """A socket with the moment it was accepted."""

    def __init__(self, sock):  # type: ignore[no-untyped-def]
        self.accepted_at = time.time()
        self._sock = sock

    def __getattr__(self, name):  # type: ignore[no-untyped-def]
        return getattr(self._sock, name)


@dataclass
class Request:
    arrived: float
    path: str
    status: int
    answered: float = 0.0  # the answer was written
    replied: float = 0.0  # the answer began: a Retry-After counts from here (the HTTP Date of the answer)
    started: float = 0.0  # when the crawler's task started (its X-Task-Started header), for diagnosis


@dataclass
class Site:
    """One domain: its server, its behaviour and its request log."""

    name: str
    pages: int
    delay: float = 0.0  # seconds each answer takes
    throttle_share: float = 0.0  # share of requests answered 429
    retry_after: float = 1.0
    seed: int = 0
    requests: list[Request] = field(default_factory=list)
    peak_in_flight: int = 0
    _in_flight: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> "Site":
        self._random = random.Random(self.seed)
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the http.server API)
                site.serve(self)

            def log_message(self, *args: object) -> None:
                pass

        self.server = AcceptStampingServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    @property
    def root(self) -> str:
        return f"http://{self.host}/page/0"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def serve(self, handler: BaseHTTPRequestHandler) -> None:
        arrived = getattr(handler.request, "accepted_at", time.time())
        with self._lock:
            self._in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self._in_flight)
            throttled = self._random.random() < self.throttle_share
            started = float(handler.headers.get("X-Task-Started") or 0)
            request = Request(arrived, handler.path, 429 if throttled else 200, started=started)
            self.requests.append(request)
        try:
            if self.delay:
                time.sleep(self.delay)
            request.replied = time.time()
            if throttled:
                handler.send_response(429)
                handler.send_header("Retry-After", f"{self.retry_after:g}")
                handler.send_header("Content-Length", "0")
                handler.end_headers()
            else:
                body = self.page(handler.path).encode()
                handler.send_response(200)
                handler.send_header("Content-Type", "text/html")
                handler.send_header("Content-Length", str(len(body)))
                handler.end_headers()
                handler.wfile.write(body)
        finally:
            with self._lock:
                request.answered = time.time()
                self._in_flight -= 1

    def page(self, path: str) -> str:
        number = int(path.rsplit("/", 1)[-1]) if path.startswith("/page/") else 0
        links = [n for n in (2 * number + 1, 2 * number + 2, number + 1, 0) if n < self.pages]
        anchors = "".join(f'<a href="/page/{n}">page {n}</a>\n' for n in links)
        return f"<html><body><h1>{self.name} page {number}</h1>\n{anchors}</body></html>"

    # -- what the log shows ----------------------------------------------------------------------

    def report(self, rate: float, per: float, concurrency: int) -> dict[str, float]:
        """Politeness and progress as this server saw them."""
        with self._lock:
            requests = sorted(self.requests, key=lambda r: r.arrived)
        fetched = [r.path for r in requests if r.status == 200]
        arrivals = [r.arrived for r in requests]
        starts = sorted(r.started for r in requests if r.started)  # clients that send X-Task-Started
        throttles = [r for r in requests if r.status == 429]
        inside, on_the_way = [], 0
        for throttle in throttles:
            for r in requests:
                if throttle.replied < r.arrived < throttle.replied + self.retry_after:
                    if sent_before(r, throttle.replied):
                        on_the_way += 1
                    else:  # (arrived, its task started) in seconds after the 429 began
                        inside.append((round(r.arrived - throttle.replied, 3), round(r.started - throttle.replied, 3)))
        gaps = [later - earlier for earlier, later in zip(arrivals, arrivals[1:])]
        elapsed = requests[-1].answered - requests[0].arrived if requests else 0.0
        return {
            "pages": len(set(fetched)),
            "duplicates": len(fetched) - len(set(fetched)),
            "requests": len(requests),
            "throttled": len(throttles),
            "max_in_flight": self.peak_in_flight,
            "max_per_window": most_in_a_window(arrivals, per),
            "max_started_per_window": most_in_a_window(starts, per),  # of the tasks, by their headers
            "min_gap": min(gaps, default=0.0),
            "inside_retry_after": len(inside),
            "inside_after_seconds": inside,  # [arrived, task started] after the 429, per such request
            "sent_before_429_known": on_the_way,  # inside a window, but on its way before the 429 began
            "seconds": elapsed,
            "bound_seconds": self.lower_bound(len(requests), len(throttles), rate, per, concurrency),
        }

    def lower_bound(self, requests: int, throttles: int, rate: float, per: float, concurrency: int) -> float:
        """The least time the limits allow for these requests: starts spaced per/rate (a 429 makes
        the key wait retry_after instead), and at most `concurrency` answers of `delay` at once."""
        if requests == 0:
            return 0.0
        spacing = per / rate
        by_rate = (requests - 1) * spacing + throttles * max(self.retry_after - spacing, 0.0) + self.delay
        by_concurrency = requests * self.delay / concurrency
        return max(by_rate, by_concurrency)
