"""Per-client tallies and the summary of one workload."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(slots=True)
class Tally:
    """What one client saw inside the measuring window."""

    window: tuple[float, float]
    latencies: list[float] = field(default_factory=list)
    ok: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    deadlocks: int = 0
    insufficient: int = 0

    def record(self, start: float, end: float, code: str | None, deadlock: bool = False) -> None:
        """Count a finished request if it completed inside the window."""
        if code == "INSUFFICIENT_STOCK":
            self.insufficient += 1
        if not self.window[0] <= end <= self.window[1]:
            return
        self.latencies.append((end - start) * 1000.0)
        if code is None:
            self.ok += 1
        else:
            self.failures[code] += 1
        self.deadlocks += deadlock


def percentile(sorted_values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(pct / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass(slots=True)
class WorkloadResult:
    """One workload's figures (all requests completed inside the window)."""

    name: str
    transport: str
    seconds: float
    ok: int
    failures: dict[str, int]
    p50_ms: float | None
    p99_ms: float | None
    mean_ms: float | None
    max_ms: float | None
    client_cpu: float
    deadlocks: int = 0
    oversold_stocks: int | None = None
    mismatched_stocks: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def orders_per_s(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    @property
    def requests(self) -> int:
        return self.ok + sum(self.failures.values())

    @classmethod
    def merge(cls, name: str, transport: str, seconds: float, tallies: Iterable[Tally],
              client_cpu: float) -> WorkloadResult:
        """Combine the clients' tallies."""
        tallies = list(tallies)
        lat = sorted(x for t in tallies for x in t.latencies)
        failures: Counter[str] = Counter()
        for t in tallies:
            failures.update(t.failures)
        return cls(
            name=name, transport=transport, seconds=seconds, ok=sum(t.ok for t in tallies),
            failures=dict(failures), p50_ms=percentile(lat, 50), p99_ms=percentile(lat, 99),
            mean_ms=sum(lat) / len(lat) if lat else None, max_ms=lat[-1] if lat else None,
            client_cpu=client_cpu, deadlocks=sum(t.deadlocks for t in tallies))

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["orders_per_s"] = round(self.orders_per_s, 1)
        data["requests"] = self.requests
        return data
