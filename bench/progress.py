"""Progress lines on stderr, and waiting until the server is idle between workloads."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from bench import cpu

if TYPE_CHECKING:
    from bench.database import BenchDatabase


def say(message: str) -> None:
    """Progress on stderr (the report goes to stdout)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def settle(*pids: int | None, timeout: float = 10.0) -> None:
    """Wait until the process trees are idle (< 5% of a core over 0.5 s): the event worker
    may still be working off the previous workload's events."""
    alive = [pid for pid in pids if pid]
    if not alive:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = sum(cpu.tree_cpu_seconds(pid) for pid in alive)
        time.sleep(0.5)
        if sum(cpu.tree_cpu_seconds(pid) for pid in alive) - before < 0.025:
            return


def run_then_drop(work: Callable[[], int], db: BenchDatabase, keep_db: bool) -> int:
    """`work()`'s exit status (130 when interrupted); then the bench database is dropped
    unless `keep_db`."""
    try:
        return work()
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    finally:
        if not keep_db:
            db.drop()
