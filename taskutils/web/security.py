"""Who may use the dashboard, and how: the bind rule, the access token, CSRF tokens and the
Origin check on every POST, read-only mode, signed flash messages and the security headers.

The rules:
- Bound to a loopback address, no token is needed; then only loopback Host names are served, so
  a web page cannot reach the dashboard through a DNS name rebound to 127.0.0.1.
- Bound to any other address, a token is required (`check_bind`). With a token, every request
  carries it: `Authorization: Bearer <token>`, or the cookie that `?token=<token>` sets once
  (HttpOnly, SameSite=Strict; it holds a value derived from the token, not the token).
- Every state change is a POST carrying the process's CSRF token (form field `csrf` or header
  `X-CSRF-Token`); a POST whose Origin names another host is refused; `--read-only` refuses
  every POST. A random secret made at start-up backs the CSRF token and the flash signatures.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from urllib.parse import urlencode, urlsplit

from starlette.datastructures import URL, Headers, QueryParams
from starlette.requests import cookie_parser
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

COOKIE = "taskutils_web"
SAFE_METHODS = ("GET", "HEAD")
HEADERS = {  # sent with every response: no framing, no sniffing, nothing but our own files
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # "no-referrer" makes Chromium send "Origin: null" with forms
    "Cache-Control": "no-store",
    "Vary": "HX-Request, Cookie, Authorization",
}


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address, IPv6 with or without brackets) is this machine only."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """ValueError unless the dashboard may listen on `host`: loopback, or any address with a token."""
    if not is_loopback(host) and not token:
        raise ValueError(
            f"refusing to serve on {host}, reachable from other machines, without a token: "
            "set TASKUTILS_WEB_TOKEN (or pass --token), or bind a loopback address such as 127.0.0.1"
        )


class Guard:
    """The secrets of one dashboard process and the checks made with them."""

    def __init__(self, token: str | None, read_only: bool):
        self.token = token or None
        self.read_only = read_only
        self._secret = secrets.token_bytes(32)
        self.csrf_token = self._sign("csrf")

    def _sign(self, text: str) -> str:
        return hmac.new(self._secret, text.encode(), hashlib.sha256).hexdigest()

    def session(self) -> str:
        """The cookie's value: derived from the token, so it stays valid across restarts."""
        assert self.token is not None
        return hmac.new(self.token.encode(), b"taskutils web session", hashlib.sha256).hexdigest()

    def authorized(self, headers: Headers, cookies: dict[str, str]) -> bool:
        if self.token is None:
            return True
        scheme, _, given = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self.token.encode()):
            return True
        return hmac.compare_digest(cookies.get(COOKIE, "").encode(), self.session().encode())

    def csrf_ok(self, given: str) -> bool:
        return hmac.compare_digest(given.encode(), self.csrf_token.encode())

    def flash(self, path: str, message: str) -> str:
        """`path` with a message to show once there, signed so that no link can make the
        dashboard say something it did not."""
        joiner = "&" if "?" in path else "?"
        return f"{path}{joiner}{urlencode({'msg': message, 'sig': self._sign('flash:' + message)})}"

    def flashed(self, message: str | None, signature: str | None) -> str | None:
        """The message of a flash link, if the signature is ours."""
        if message and signature and hmac.compare_digest(signature.encode(), self._sign("flash:" + message).encode()):
            return message
        return None


class GuardMiddleware:
    """Applies the Guard to every HTTP request before any route sees it."""

    def __init__(self, app: ASGIApp, guard: Guard):
        self.app, self.guard = app, guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(name.lower().encode(), value.encode()) for name, value in HEADERS.items()]
                message = {**message, "headers": headers}
            await send(message)

        await (refusal or self.app)(scope, receive, send_with_headers)

    def _refusal(self, scope: Scope) -> Response | None:
        """The answer to a request that may not go through, or None."""
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        if self.guard.token is None and not is_loopback(_hostname(host)):
            return PlainTextResponse(f"this dashboard answers only to loopback host names, not {host!r}", 403)
        if not self.guard.authorized(headers, cookie_parser(headers.get("cookie", ""))):
            return self._login(scope)
        if scope["method"] in SAFE_METHODS:
            return None
        if self.guard.read_only:
            return PlainTextResponse("this dashboard is read-only", 403)
        origin = headers.get("origin")
        if origin is not None and origin.lower().partition("://")[2] != host.lower():
            return PlainTextResponse(f"refused: a request from {origin} to {host}", 403)
        return None

    def _login(self, scope: Scope) -> Response:
        """A GET with the right ?token= sets the cookie and reloads without it; anything else is 401."""
        url = URL(scope=scope)
        given = QueryParams(scope["query_string"]).get("token", "")
        assert self.guard.token is not None
        if scope["method"] in SAFE_METHODS and hmac.compare_digest(given.encode(), self.guard.token.encode()):
            rest = url.remove_query_params("token")
            path = "/" + rest.path.lstrip("/")  # "//host" would send the browser elsewhere
            response = RedirectResponse(path + (f"?{rest.query}" if rest.query else ""), 303)
            response.set_cookie(COOKIE, self.guard.session(), httponly=True, samesite="strict", path="/",
                                secure=url.scheme == "https")
            return response
        return PlainTextResponse(
            "this dashboard needs its token: open it once with ?token=<token>, "
            "or send the header Authorization: Bearer <token>", 401, headers={"WWW-Authenticate": "Bearer"},
        )


def _hostname(host: str) -> str:
    """The name or address in a Host header ("[::1]:8080" -> "::1"); "" if malformed."""
    try:
        return urlsplit("//" + host).hostname or ""
    except ValueError:
        return ""
