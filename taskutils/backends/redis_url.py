"""Redis URLs: checked before anything connects (with redis-py's own parser), and shown without
their password."""

from __future__ import annotations

from redis.connection import parse_url

from ..errors import InvalidRedisURL

ACCEPTED = (
    "redis://[[user]:password@]host[:port][/db]",
    "rediss://[[user]:password@]host[:port][/db]  (TLS)",
    "unix://[[user]:password@]/path/to/redis.sock[?db=N]",
)


def redacted(url: str) -> str:
    """The URL with its password replaced by ***."""
    scheme, sep, rest = url.partition("://")
    if "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    user = credentials.partition(":")[0]
    return f"{scheme}{sep}{user + ':***' if user else '***'}@{host}"


def checked_url(url: object) -> str:
    """`url` if redis-py can connect by it; else InvalidRedisURL naming it (password masked) and
    showing the accepted forms."""
    if not isinstance(url, str):
        raise InvalidRedisURL(f"a Redis URL must be a string, got {type(url).__name__}; accepted forms: "
                              + "; ".join(ACCEPTED))
    try:
        parse_url(url)
    except (ValueError, TypeError) as exc:
        forms = "\n  ".join(ACCEPTED)
        raise InvalidRedisURL(f"{redacted(url)!r} is not a Redis URL: {exc}\naccepted forms:\n  {forms}") from None
    return url
