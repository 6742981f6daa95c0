"""How the dashboard writes values for people: times, ages, and task data shortened to a glance."""

from __future__ import annotations

import math
import reprlib
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

from markupsafe import Markup, escape

from ..limits import Limit

SHORT = 200  # characters of an argument list shown on a page
LONG = 2000  # characters of a result shown on a task page


def moment(seconds: float | None) -> str:
    """An epoch time as UTC date and time to the second; "never" for None."""
    if seconds is None:
        return "never"
    if math.isinf(seconds):  # a cron schedule whose next times a worker has yet to compute
        return "once a worker has computed it"
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(seconds: float | None) -> str:
    """A span of time in its two largest units: "45s", "3m 05s", "2h 10m", "3d 4h"."""
    if seconds is None or math.isinf(seconds):
        return "-"
    whole = int(max(seconds, 0.0))
    if whole < 60:
        return (f"{seconds:.1f}".rstrip("0").rstrip(".") if seconds < 10 else str(whole)) + "s"
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h {whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d {whole % 86400 // 3600}h"


def relative(seconds: float | None, now: float) -> str:
    """An epoch time relative to `now`: "in 12s" or "3m 05s ago"."""
    if seconds is None or math.isinf(seconds):
        return ""
    span = duration(abs(seconds - now))
    return f"in {span}" if seconds > now else f"{span} ago"


def shorten(text: str, limit: int = SHORT) -> str:
    """`text` cut to `limit` characters, with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def call(args: Any, kwargs: Any, limit: int = SHORT) -> str:
    """A task's arguments as Python would write the call's parentheses, shortened: no argument
    can flood a page, and repr shows strings as data, never as markup."""
    if args is None and kwargs is None:
        return "(cannot be decoded)"
    shown = reprlib.Repr()
    shown.maxstring = shown.maxother = shown.maxlong = limit
    shown.maxlist = shown.maxtuple = shown.maxdict = shown.maxset = 20
    parts = [shown.repr(value) for value in args or ()]
    parts += [f"{name}={shown.repr(value)}" for name, value in (kwargs or {}).items()]
    return shorten(", ".join(parts), limit)


def value(result: Any, limit: int = LONG) -> str:
    """A task's result, shortened."""
    return shorten(repr(result), limit)


def limit_text(limit: Limit | None) -> str:
    """A key's limit in words: "2 at once, 5 per 1s (burst 1, adaptive)"; "none" for None."""
    if limit is None:
        return "none"
    parts = [] if limit.concurrency is None else [f"{limit.concurrency} at once"]
    if limit.rate is not None:
        parts.append(f"{limit.rate:g} per {duration(limit.per)} (burst {limit.burst}{', adaptive' if limit.adaptive else ''})")
    return ", ".join(parts) or "none"


def path_part(text: str) -> str:
    """`text` quoted to be one part of a URL path or one query value."""
    return quote(text, safe="")


def breakable(ref: str) -> Markup:
    """A function reference, escaped, that may wrap after its dots and its colon."""
    return Markup(str(escape(ref)).replace(".", ".<wbr>").replace(":", ":<wbr>"))
