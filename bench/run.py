"""The benchmark: taskutils and its Python peers, same workloads, side by side in one run.

    pip install -e '.[bench]'
    python -m bench.run                       # 20,000 tasks, 3 interleaved rounds (about 30 minutes)
    python -m bench.run --tasks 2000 --rounds 1 --samples 50 --idle-samples 3 --scale 1000,10000   # a quick look

Starts its own redis-server on a free port (no persistence), measures every system in every round
in a shuffled order, prints one table of medians with taskutils' ratio to the best peer, says how
much the rounds varied, and writes the table to bench/RESULTS.md. See bench/peers/base.py for how
each figure is measured and bench/peers/<name>_peer.py for how each system is configured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path


from tests.redis_server import RedisServer, redis_server_binary

from .keys import measure_keys, render_keys
from .limits import measure_limits
from .peers import PEERS
from .peers.base import ENV_URL
from .peers.taskutils_peer import TaskutilsPeer

OUT = Path(__file__).with_name("RESULTS.md")
LIMITS = "machine limits"  # measured in the shuffled order like a system (see limits.py)
# figure -> (column title, higher is better)
FIGURES = {
    "enqueue": ("enqueue/s (one by one)", True),
    "bulk": ("bulk enqueue/s", True),
    "drain": ("drain/s", True),
    "p50": ("latency p50 ms", False),
    "p99": ("latency p99 ms", False),
    "idle_p50": ("after 1 s idle p50 ms", False),
    "idle_p99": ("after 1 s idle p99 ms", False),
    "bytes": ("Redis bytes per queued task", False),
    "kept": ("Redis bytes kept per finished task", False),
}


def measure(system, args) -> dict[str, float | None]:
    n = args.tasks
    bulk = system.enqueue_bulk(n)
    p50, p99, idle_p50, idle_p99 = system.latency(args.samples, args.idle_samples)
    drain, kept = system.drain(n)
    return {
        "enqueue": n / system.enqueue_one_by_one(n),
        "bulk": None if bulk is None else n / bulk,
        "drain": drain,
        "p50": p50, "p99": p99, "idle_p50": idle_p50, "idle_p99": idle_p99,
        "bytes": system.queued_bytes(n),
        "kept": kept,
    }


def measure_taskutils_only(system: TaskutilsPeer, args) -> dict[str, float]:
    return {
        "overhead": system.overhead(args.tasks),
        "overhead_2": system.overhead(args.tasks, processes=2),
        "drain_2": system.drain_with(args.tasks, processes=2),
        "drain_capped": system.drain_with(args.tasks, cap=8),
        **dict(zip(("drain_plain", "drain_metrics"), metrics_pair(system, args.tasks))),
    }


def metrics_pair(system: TaskutilsPeer, n: int) -> tuple[float, float]:
    """Drain rates without and with --http (metrics counted), in a random order, back to back."""
    first = random.choice([False, True])
    rates = {on: system.drain_with(n, metrics=on) for on in (first, not first)}
    return rates[False], rates[True]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=200, help="back-to-back latency samples")
    parser.add_argument("--idle-samples", type=int, default=10, help="latency samples after 1 s idle")
    parser.add_argument("--systems", default="taskutils," + ",".join(PEERS))
    parser.add_argument("--scale", default="1000,10000,100000,1000000", help="queue depths for the scale curve")
    parser.add_argument("--keys", default="1,100,10000,100000", help="distinct task keys for the keyed drains")
    parser.add_argument("--dispatch", default="10,100,1000,10000,100000", help="ready keys for the dispatch cost")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    names = args.systems.split(",")
    classes = {"taskutils": TaskutilsPeer, **PEERS}
    server = RedisServer().start()
    workdir = tempfile.mkdtemp(prefix="bench-")
    results: dict[str, list[dict[str, float | None]]] = {name: [] for name in names}
    extra: list[dict[str, float]] = []
    limits: list[dict[str, float]] = []
    started = time.monotonic()
    try:
        for round_number in range(args.rounds):
            order = random.sample([*names, LIMITS], len(names) + 1)
            for name in order:
                print(f"round {round_number + 1}/{args.rounds}: {name}", file=sys.stderr, flush=True)
                if name == LIMITS:
                    os.environ[ENV_URL] = server.url
                    limits.append(measure_limits(server.url, args.tasks, args.samples, args.idle_samples))
                    continue
                system = classes[name](server.url, workdir)
                try:
                    results[name].append(measure(system, args))
                    if name == "taskutils":
                        extra.append(measure_taskutils_only(system, args))
                finally:
                    system.close()
        curve = scale_curve(server.url, workdir, [int(d) for d in args.scale.split(",") if d]) if "taskutils" in names else []
        keyed = measure_keys(server.url, workdir, args.tasks, numbers(args.keys), numbers(args.dispatch)) \
            if "taskutils" in names else None
    finally:
        server.kill()
    report = render(results, extra, limits, curve, args, time.monotonic() - started)
    if keyed:
        report += "\n".join(render_keys(keyed)) + "\n"
    print(report)
    args.out.write_text(report)
    args.out.with_suffix(".json").write_text(json.dumps({"results": results, "taskutils_only": extra, "limits": limits,
                                                          "scale": curve, "keys": keyed}, indent=1))
    print(f"\nwritten to {args.out}", file=sys.stderr)
    return 0


def numbers(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def scale_curve(url: str, workdir: str, depths: list[int]) -> list[tuple[int, float, float]]:
    system = TaskutilsPeer(url, workdir)
    try:
        return [(depth, *system.scale(depth)) for depth in depths]
    finally:
        system.close()


def median(values: list[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def spread(values: list[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    if len(present) < 2 or not statistics.median(present):
        return None
    return (max(present) - min(present)) / statistics.median(present)


def fmt(value: float | None, figure: str) -> str:
    if value is None:
        return "—"
    if figure in ("p50", "p99", "idle_p50", "idle_p99"):
        return f"{value:,.2f}" if value < 10 else f"{value:,.0f}"
    if figure == "kept" and value < 1:  # nothing kept: used_memory moves by a byte or so per task either way
        return "0"
    return f"{value:,.0f}"


def render(results, extra, limits, curve, args, seconds: float) -> str:
    medians = {name: {figure: median([run[figure] for run in runs]) for figure in FIGURES} for name, runs in results.items()}
    spreads = [s for runs in results.values() for figure in FIGURES if (s := spread([run[figure] for run in runs])) is not None]
    peers = [name for name in medians if name != "taskutils"]
    lines = [
        f"# Benchmark results ({date.today().isoformat()})",
        "",
        f"Command: `python -m bench.run --tasks {args.tasks} --rounds {args.rounds} --samples {args.samples} "
        f"--idle-samples {args.idle_samples}`; {seconds / 60:.0f} minutes.",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}, "
        f"{_redis_version()} started by the bench (no persistence). One worker process, concurrency 8, "
        f"{args.tasks:,} tasks; medians of {args.rounds} rounds, systems in a shuffled order each round.",
    ]
    if spreads:
        lines.append(
            f"Noise: between rounds a figure varied by {statistics.median(spreads):.0%} of its median typically "
            f"(largest: {max(spreads):.0%})."
        )
    lines += ["", "| system | " + " | ".join(title for title, _ in FIGURES.values()) + " |",
              "|---|" + "---:|" * len(FIGURES)]
    for name, values in medians.items():
        lines.append(f"| {name} | " + " | ".join(fmt(values[figure], figure) for figure in FIGURES) + " |")
    if "taskutils" in medians and peers:
        ratios = []
        for figure, (_, higher) in FIGURES.items():
            ours = medians["taskutils"][figure]
            theirs = [medians[name][figure] for name in peers if medians[name][figure] is not None]
            if ours is None or not theirs:
                ratios.append("—")
                continue
            best = max(theirs) if higher else min(theirs)
            if ours <= 0 or best <= 0:  # a peer that keeps nothing: no ratio to give
                ratios.append("—")
                continue
            ratios.append(f"×{(ours / best if higher else best / ours):.1f}")
        lines.append("| **taskutils vs best peer** | " + " | ".join(ratios) + " |")
        lines += ["", "Ratios: how many times better taskutils is than the best peer on that figure (above 1: better)."]
    if extra:
        lines += [
            "",
            "## taskutils only",
            "",
            f"- framework overhead, truly empty tasks, completion seen through taskutils: "
            f"{median([e['overhead'] for e in extra]):,.0f} tasks/s (one worker process, 8 threads); "
            f"with `--processes 2`: {median([e['overhead_2'] for e in extra]):,.0f} tasks/s "
            f"(×{median([e['overhead_2'] for e in extra]) / median([e['overhead'] for e in extra]):.2f})",
            f"- drain with `--processes 2`: {median([e['drain_2'] for e in extra]):,.0f} tasks/s "
            f"(×{median([e['drain_2'] for e in extra]) / medians['taskutils']['drain']:.2f} of one process)",
            f"- drain with `max_concurrency=8`: {median([e['drain_capped'] for e in extra]):,.0f} tasks/s "
            f"({median([e['drain_capped'] for e in extra]) / medians['taskutils']['drain']:.0%} of uncapped)",
            f"- drain with Prometheus metrics on (`--http`): {median([e['drain_metrics'] for e in extra]):,.0f} tasks/s, "
            f"{median([e['drain_metrics'] / e['drain_plain'] for e in extra]):.1%} of the same drain without, "
            f"measured back to back in each round",
        ]
    if limits and "taskutils" in medians:
        lines += render_limits(medians["taskutils"], extra, limits)
    if curve:
        lines += ["", "Scale: cost per operation with the queue already holding N tasks.", "",
                  "| queued tasks | µs per enqueue | µs per claim + ack (batches of 8) |", "|---:|---:|---:|"]
        lines += [f"| {depth:,} | {enqueue:.0f} | {claim:.0f} |" for depth, enqueue, claim in curve]
    return "\n".join(lines) + "\n"


def render_limits(ours: dict[str, float | None], extra: list[dict[str, float]], limits: list[dict[str, float]]) -> list[str]:
    """The machine's ceilings in this run (limits.py) beside the taskutils figure each one bounds."""
    limit = {key: median([run[key] for run in limits]) for key in limits[0]}
    overhead = median([e["overhead"] for e in extra]) if extra else None

    def row(what: str, ceiling: float, figure: str, value: float | None, rate: bool = True) -> str:
        if value is None:
            return f"| {what} | {ceiling:,.0f} | {figure}: — | — |"
        if rate:
            return f"| {what} | {ceiling:,.0f}/s | {figure}: {value:,.0f}/s | {value / ceiling:.0%} |"
        return f"| {what} | {ceiling:,.2f} ms | {figure}: {value:,.2f} ms | ×{value / ceiling:.1f} |"

    return [
        "", "## Machine limits in this run", "",
        "What the machine allowed with no task queue at all, measured in the same rounds (bench/limits.py), "
        "beside the taskutils figure each one bounds.", "",
        "| limit | measured | taskutils | share of the limit |", "|---|---:|---|---:|",
        row("BODY on 8 threads of one process, no queue (1 thread: "
            f"{limit['body_1']:,.0f}/s)", limit["body_8"], "drain", ours["drain"]),
        row("the same 8 threads kept on one CPU (`taskset`)", limit["body_8_one_cpu"], "drain", ours["drain"]),
        row("one ZADD per round trip (redis-py)", limit["push"], "enqueue one by one", ours["enqueue"]),
        row("ZADD + ZPOPMIN pairs pipelined by 100", limit["pairs"], "truly empty tasks", overhead),
        row("RPUSH → BLPOP in another process, p50, back to back", limit["wake_p50"], "latency p50", ours["p50"], rate=False),
        row("the same after 1 s idle", limit["wake_idle_p50"], "after 1 s idle p50", ours["idle_p50"], rate=False),
    ]


def _redis_version() -> str:
    done = subprocess.run([redis_server_binary(), "--version"], capture_output=True, text=True)
    return "Redis " + done.stdout.split("v=")[1].split()[0] if "v=" in done.stdout else "Redis"


if __name__ == "__main__":
    sys.exit(main())
