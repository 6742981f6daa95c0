"""Keys: what the fair turns between task keys cost (taskutils only; no peer has them).

Keyed drain: one worker (8 threads) over a backlog of BODY tasks spread over K distinct keys
without limits, beside the unkeyed drain of as many tasks measured just before it (same worker,
same block of the run). Dispatch cost: µs per claim + ack, made as a worker of 8 threads makes
them, with K keys ready throughout.
"""

from __future__ import annotations

from .peers.taskutils_peer import TaskutilsPeer


def measure_keys(url: str, workdir: str, tasks: int, drain_keys: list[int], dispatch_keys: list[int]) -> dict:
    system = TaskutilsPeer(url, workdir)
    try:
        drains = []
        for keys in drain_keys:
            n = max(tasks, keys)
            unkeyed = system.drain_with(n)
            drains.append((keys, n, system.drain_with(n, keys=keys), unkeyed))
        costs = [(keys, system.dispatch_cost(keys)) for keys in dispatch_keys]
        return {"drain": drains, "dispatch": costs}
    finally:
        system.close()


def render_keys(figures: dict) -> list[str]:
    lines = ["", "## Task keys", "",
             "Keyed drain: BODY tasks spread over K keys without limits, one worker of 8 threads, beside the "
             "unkeyed drain of as many tasks measured just before it.", "",
             "| keys | tasks | keyed drain/s | unkeyed drain/s | keyed / unkeyed |", "|---:|---:|---:|---:|---:|"]
    lines += [f"| {keys:,} | {n:,} | {keyed:,.0f} | {unkeyed:,.0f} | {keyed / unkeyed:.0%} |"
              for keys, n, keyed, unkeyed in figures["drain"]]
    dispatch = figures["dispatch"]
    if dispatch:
        base = dispatch[0][1]
        lines += ["", "Dispatch cost: µs per claim + ack (batches of 8) with K keys ready.", "",
                  "| ready keys | µs per claim + ack | × the first row |", "|---:|---:|---:|"]
        lines += [f"| {keys:,} | {cost:.0f} | ×{cost / base:.2f} |" for keys, cost in dispatch]
    return lines
