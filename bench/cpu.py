"""CPU accounting from /proc: a process tree's CPU seconds and the machine's busy share."""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable
from pathlib import Path

from bench.stats import WorkloadResult

TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def tree_cpu_seconds(pid: int) -> float:
    """utime+stime of `pid` and its live descendants (0.0 where /proc is missing)."""
    total, todo, seen = 0.0, [pid], set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        try:
            stat = Path(f"/proc/{current}/stat").read_text()
            fields = stat.rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / TICKS
            for task in Path(f"/proc/{current}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
        except (OSError, ValueError, IndexError):
            continue
    return total


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot; (0, 0) without /proc."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    total = sum(values[:8])
    return total - idle, total


def busy_share(before: tuple[int, int], after: tuple[int, int]) -> float | None:
    """Fraction of all CPUs busy between two `machine_ticks()` snapshots."""
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total > 0 else None


def own_cpu_seconds() -> float:
    """CPU seconds this process (all its threads) has used."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def with_cpu(run: Callable[[], WorkloadResult], pid: int | None, run_no: int
             ) -> WorkloadResult:
    """`run()` as round `run_no`, with the machine's busy share and the CPU cores of the
    server's process tree (`pid`) while it ran."""
    ticks, server_cpu = machine_ticks(), tree_cpu_seconds(pid) if pid else 0.0
    started = time.perf_counter()
    result = run()
    elapsed = time.perf_counter() - started
    result.run = run_no
    result.extra["machine_busy"] = busy_share(ticks, machine_ticks())
    if pid:
        result.extra["server_cpu"] = (tree_cpu_seconds(pid) - server_cpu) / elapsed
    return result
