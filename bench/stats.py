"""Per-client tallies and the summary of one workload.

The measuring window is [t0, t1). Clients issue requests until t1 and every request begun
before t1 is awaited. A request is *measured* when it began inside the window: its outcome
counts in `ok` / `refusals`, and, when it created an order, its latency in p50/p99/max
(successful orders only). `orders/s` is the successful orders *completed* inside the
window divided by its length. Failures (anything neither an order nor an expected refusal)
are counted over every request of the workload, warm-up and drain included: any makes the
run fail. Every order created (any phase) is kept for the read-back check.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

Placed = tuple[int, tuple[int, ...]]  # (order pk, the variant pks it was asked for)
# a client stops issuing after this many failures: the run has failed already, and the
# bounded workload would otherwise go on for its 120 s against a broken server
MAX_FAILURES_PER_CLIENT = 50


@dataclass(slots=True)
class Tally:
    """What one client saw."""

    window: tuple[float, float]
    expected: frozenset[str] = frozenset()
    latencies: list[float] = field(default_factory=list)  # ms, measured successful orders
    ok: int = 0  # successful orders begun in the window
    ok_completed: int = 0  # successful orders completed in the window (orders/s)
    requests: int = 0  # requests begun in the window
    refusals: Counter[str] = field(default_factory=Counter)  # expected, begun in the window
    failures: Counter[str] = field(default_factory=Counter)  # unexpected, every request
    placed: list[Placed] = field(default_factory=list)  # every order created
    deadlocks: int = 0
    insufficient: int = 0

    @property
    def given_up(self) -> bool:
        """Too many failures to go on (MAX_FAILURES_PER_CLIENT)."""
        return sum(self.failures.values()) >= MAX_FAILURES_PER_CLIENT

    def record(self, start: float, end: float, code: str | None, deadlock: bool = False,
               placed: Placed | None = None) -> None:
        """Count one finished request (see the module docstring for which figure gets it)."""
        if code == "INSUFFICIENT_STOCK":
            self.insufficient += 1
        self.deadlocks += deadlock
        t0, t1 = self.window
        measured = t0 <= start < t1
        self.requests += measured
        if code is None:
            if placed is not None:
                self.placed.append(placed)
            self.ok_completed += t0 <= end < t1
            if measured:
                self.ok += 1
                self.latencies.append((end - start) * 1000.0)
        elif code in self.expected:
            if measured:
                self.refusals[code] += 1
        else:
            self.failures[code] += 1


def percentile(sorted_values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(pct / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass(slots=True)
class ReadBack:
    """The orders a workload created, read back from the database (and some via GraphQL)."""

    received: int = 0  # orders the clients were told about
    in_database: int = 0  # orders created since the workload began
    missing: int = 0  # received, not in the database
    unexpected: int = 0  # in the database, never received (or received twice)
    mismatched: int = 0  # lines, allocations or ledger differ from the request / response
    graphql_sampled: int = 0
    graphql_mismatched: int = 0
    problems: list[str] = field(default_factory=list)  # the first few, for the report

    @property
    def broken(self) -> int:
        return (self.missing + self.unexpected + self.mismatched + self.graphql_mismatched
                + (self.in_database != self.received))

    def note(self, problem: str) -> None:
        if len(self.problems) < 5:
            self.problems.append(problem)


@dataclass(slots=True)
class WorkloadResult:
    """One workload's figures (the window's rules are in the module docstring)."""

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
    ok_completed: int = 0
    requests: int = 0
    refusals: dict[str, int] = field(default_factory=dict)
    deadlocks: int = 0
    oversold_stocks: int | None = None
    mismatched_stocks: int | None = None
    readback: ReadBack | None = None
    run: int = 1
    placed: list[Placed] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def orders_per_s(self) -> float:
        return self.ok_completed / self.seconds if self.seconds > 0 else 0.0

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    @classmethod
    def merge(cls, name: str, transport: str, seconds: float, tallies: Iterable[Tally],
              client_cpu: float) -> WorkloadResult:
        """Combine the clients' tallies."""
        tallies = list(tallies)
        lat = sorted(x for t in tallies for x in t.latencies)
        failures: Counter[str] = Counter()
        refusals: Counter[str] = Counter()
        for t in tallies:
            failures.update(t.failures)
            refusals.update(t.refusals)
        return cls(
            name=name, transport=transport, seconds=seconds, ok=sum(t.ok for t in tallies),
            failures=dict(failures), p50_ms=percentile(lat, 50), p99_ms=percentile(lat, 99),
            mean_ms=sum(lat) / len(lat) if lat else None, max_ms=lat[-1] if lat else None,
            client_cpu=client_cpu, ok_completed=sum(t.ok_completed for t in tallies),
            requests=sum(t.requests for t in tallies), refusals=dict(refusals),
            deadlocks=sum(t.deadlocks for t in tallies),
            placed=[p for t in tallies for p in t.placed])

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        del data["placed"]  # every order's ids: too big, and checked by `readback`
        data["orders_per_s"] = round(self.orders_per_s, 1)
        data["placed_orders"] = len(self.placed)
        return data


@dataclass(frozen=True, slots=True)
class Spread:
    """Median and range of one figure over the runs of a workload."""

    median: float | None
    low: float | None
    high: float | None
    values: tuple[float | None, ...]

    @classmethod
    def of(cls, values: Sequence[float | None]) -> Spread:
        known = [v for v in values if v is not None]
        if not known:
            return cls(None, None, None, tuple(values))
        return cls(statistics.median(known), min(known), max(known), tuple(values))

    def to_json(self) -> dict[str, Any]:
        return {"median": self.median, "min": self.low, "max": self.high,
                "values": list(self.values)}
