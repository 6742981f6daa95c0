"""Throughput charts: per-minute history summed into buckets, drawn on the server as inline SVG.

Why SVG written by a small Python function rather than a JavaScript chart library: there is no
build step and nothing to vendor or keep up to date, the browser fetches nothing at run time
(the dashboard works offline and under a strict Content-Security-Policy), and a chart is plain
markup inside the htmx partial that already refreshes every few seconds, so it updates with the
counts beside it. Tests read it like any other HTML. Colours come from classes in style.css.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from html import escape
from typing import Iterable, Iterator, Sequence

from markupsafe import Markup

from ..browse import Minute

WIDTH, HEIGHT = 640, 150  # the viewBox; the SVG scales to its container's width
LEFT, RIGHT, TOP, BOTTOM = 40, 8, 8, 20  # margins around the plot: axis labels go there
PLOT_W, PLOT_H = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
SERIES = ("done", "retried", "failed")  # stacked bottom to top; each is a CSS class


@dataclass(frozen=True)
class Bucket:
    """Tasks that ended in `seconds` from `start` (epoch seconds)."""

    start: float
    seconds: float
    done: int = 0
    failed: int = 0
    retried: int = 0

    @property
    def total(self) -> int:
        return self.done + self.failed + self.retried


def combined(histories: Iterable[Sequence[Minute]]) -> list[Minute]:
    """The histories of several queues added up minute by minute, oldest first."""
    sums: dict[float, list[int]] = {}
    for history in histories:
        for minute in history:
            counts = sums.setdefault(minute.start, [0, 0, 0])
            counts[0] += minute.done
            counts[1] += minute.failed
            counts[2] += minute.retried
    return [Minute(start, *counts) for start, counts in sorted(sums.items())]


def buckets(minutes: Sequence[Minute], size: int) -> list[Bucket]:
    """Consecutive runs of `size` minutes summed, the newest run ending with the last minute."""
    first = len(minutes) % size  # an incomplete run at the old end is dropped
    made = []
    for at in range(first, len(minutes), size):
        run = minutes[at : at + size]
        made.append(Bucket(
            run[0].start, 60.0 * size, sum(m.done for m in run), sum(m.failed for m in run), sum(m.retried for m in run)
        ))
    return made


def bar_chart(data: Sequence[Bucket], label: str) -> Markup:
    """Stacked bars of done, retried and failed per bucket, with a y axis, three time labels
    (UTC) and a tooltip per bar; `label` names the chart for screen readers."""
    top = _ceiling(max((bucket.total for bucket in data), default=0))
    parts = [
        (f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(label)}" '
         'xmlns="http://www.w3.org/2000/svg">'),
        *_count_axis(top),
        *_bars(data, top),
        *_time_axis(data),
        "</svg>",
    ]
    return Markup("".join(parts))


def _count_axis(top: int) -> Iterator[str]:
    """Grid lines at 0, half and `top`, labelled with whole counts."""
    for fraction in (0.0, 0.5, 1.0):
        y = TOP + PLOT_H * (1 - fraction)
        yield f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
        if (top * fraction).is_integer():
            yield f'<text class="axis" x="{LEFT - 4}" y="{y + 4:.1f}" text-anchor="end">{_count(top * fraction)}</text>'


def _bars(data: Sequence[Bucket], top: int) -> Iterator[str]:
    """One group per bucket: a hover area with its tooltip, and its series stacked."""
    slot = PLOT_W / max(len(data), 1)
    for index, bucket in enumerate(data):
        x, base = LEFT + index * slot, TOP + PLOT_H
        yield f'<g><title>{escape(_tooltip(bucket))}</title>'
        yield f'<rect class="slot" x="{x:.2f}" y="{TOP}" width="{slot:.2f}" height="{PLOT_H}"/>'
        for series in SERIES:
            height = PLOT_H * getattr(bucket, series) / top
            if height > 0:
                base -= height
                yield (f'<rect class="{series}" x="{x + slot * 0.1:.2f}" y="{base:.2f}" '
                       f'width="{slot * 0.8:.2f}" height="{height:.2f}"/>')
        yield "</g>"


def _time_axis(data: Sequence[Bucket]) -> Iterator[str]:
    """The times at the start, the middle and the end of the chart."""
    if not data:
        return
    start, span = data[0].start, len(data) * data[0].seconds
    for fraction, anchor in ((0.0, "start"), (0.5, "middle"), (1.0, "end")):
        x = LEFT + PLOT_W * fraction
        yield f'<text class="axis" x="{x:.1f}" y="{HEIGHT - 5}" text-anchor="{anchor}">{_clock(start + span * fraction, span)}</text>'


def _ceiling(peak: int) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50... at or above `peak`: the y axis's top."""
    if peak <= 1:
        return 1
    power = 10 ** int(math.log10(peak))
    return next(step * power for step in (1, 2, 5, 10) if step * power >= peak)


def _count(number: float) -> str:
    return f"{number / 1000:g}k" if number >= 10000 else f"{number:g}"


def _clock(seconds: float, span: float = 0.0) -> str:
    """A time of day in UTC, with its weekday on a chart spanning more than half a day."""
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%a %H:%M" if span > 43200 else "%H:%M")


def _tooltip(bucket: Bucket) -> str:
    span = f"{_clock(bucket.start)}–{_clock(bucket.start + bucket.seconds)} UTC"
    return f"{span}: {bucket.done} done, {bucket.retried} retried, {bucket.failed} failed"
