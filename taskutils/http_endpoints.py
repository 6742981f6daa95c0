"""A worker's (or supervisor's, or exporter's) small HTTP server: /metrics, /livez, /readyz.

The standard library's threading HTTP server in a daemon thread: a few routes answered from
memory need no framework. It binds what it is given; `--http PORT` alone binds loopback.
Each route returns (status, content type, body): 200 when healthy, 503 when not.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger("taskutils.http")
Route = Callable[[], "tuple[int, str, bytes]"]
TEXT = "text/plain; charset=utf-8"


def parse_address(text: str) -> tuple[str, int]:
    """"PORT", "HOST:PORT" or "[IPv6]:PORT" -> (host, port); a bare port binds 127.0.0.1.
    ValueError says what is wrong."""
    host, _, port = text.strip().rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"http address {text!r} needs a port from 1 to 65535: give PORT or HOST:PORT (e.g. 127.0.0.1:9464)")
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"http address {text!r}: {host!r} is not an IP address (or localhost)") from None
    return host, int(port)


def checked(status: bool, reason: str) -> tuple[int, str, bytes]:
    """A probe's answer: 200 "ok", or 503 with the reason."""
    return (200, TEXT, b"ok\n") if status else (503, TEXT, (reason + "\n").encode())


def serve(address: str, routes: Mapping[str, Route]) -> ThreadingHTTPServer:
    """Start serving `routes` (path -> Route) on `address` in a daemon thread; OSError if the
    address cannot be bound."""
    host, port = parse_address(address)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            route = routes.get(self.path.split("?", 1)[0])
            try:
                status, kind, body = route() if route else (404, TEXT, b"not found: try /metrics, /livez or /readyz\n")
            except Exception as exc:  # a probe that fails answers 503, and the server goes on
                log.exception("http %s failed", self.path)
                status, kind, body = 503, TEXT, f"error: {type(exc).__name__}\n".encode()
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # probes every few seconds: not logged
            return

    server_class = type("Server", (ThreadingHTTPServer,), {"address_family": _family(host), "daemon_threads": True})
    server = server_class((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="taskutils-http", daemon=True).start()
    log.info("serving %s on http://%s:%d", ", ".join(sorted(routes)), host if ":" not in host else f"[{host}]", server.server_port)
    return server


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET
