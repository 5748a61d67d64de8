"""The printed table, the target checks and the JSON file."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.stats import WorkloadResult

SPREAD_RATIO_MIN = 0.3
HOT_RATIO_MIN = 0.8
P99_MAX_MS = 150.0


@dataclass(frozen=True, slots=True)
class Check:
    """One target: its figure, the goal, pass or fail (None: could not be computed)."""

    name: str
    value: str
    goal: str
    passed: bool | None
    correctness: bool = False  # a correctness check (not a performance target)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _ratio(num: WorkloadResult | None, den: WorkloadResult | None) -> float | None:
    if num is None or den is None or den.orders_per_s == 0:
        return None
    return num.orders_per_s / den.orders_per_s


def checks(by_name: dict[str, WorkloadResult], bounded_units: int,
           pg_deadlocks: int | None) -> list[Check]:
    """The targets the brief sets, evaluated on this run."""
    spread, hot, raw = by_name.get("spread"), by_name.get("hot"), by_name.get("raw-spread")
    out: list[Check] = []
    spread_ratio, hot_ratio = _ratio(spread, raw), _ratio(hot, spread)
    out.append(Check("stockyard spread / raw SQL spread (orders/s)",
                     "-" if spread_ratio is None else f"{spread_ratio:.2f}",
                     f">= {SPREAD_RATIO_MIN}",
                     None if spread_ratio is None else spread_ratio >= SPREAD_RATIO_MIN))
    out.append(Check("stockyard hot / stockyard spread (orders/s)",
                     "-" if hot_ratio is None else f"{hot_ratio:.2f}", f">= {HOT_RATIO_MIN}",
                     None if hot_ratio is None else hot_ratio >= HOT_RATIO_MIN))
    for result in (spread, hot):
        if result is not None:
            out.append(Check(f"{result.name} p99 latency (ms)", _ms(result.p99_ms),
                             f"< {P99_MAX_MS:.0f}",
                             None if result.p99_ms is None else result.p99_ms < P99_MAX_MS))
    broken = sum((r.oversold_stocks or 0) + (r.mismatched_stocks or 0)
                 for r in by_name.values())
    out.append(Check("oversold or unbalanced stocks (all workloads)", str(broken), "0",
                     broken == 0, correctness=True))
    bounded = by_name.get("bounded")
    if bounded is not None:
        allocated = bounded.extra.get("allocated")
        exact = bounded.ok == bounded_units == allocated
        out.append(Check("bounded: orders / allocated / units",
                         f"{bounded.ok}/{allocated}/{bounded_units}", "all equal", exact,
                         correctness=True))
    seen = sum(r.deadlocks + int(r.extra.get("deadlock_log_lines", 0))
               for r in by_name.values())
    out.append(Check("deadlocks (errors, server log, responses)", str(seen), "0", seen == 0,
                     correctness=True))
    if pg_deadlocks is not None:
        out.append(Check("pg_stat_database.deadlocks (whole run)", str(pg_deadlocks), "0",
                         pg_deadlocks == 0, correctness=True))
    return out


def _failures(result: WorkloadResult) -> str:
    if not result.failures:
        return "0"
    return " ".join(f"{code}:{n}" for code, n in sorted(result.failures.items()))


def render(meta: dict[str, Any], results: list[WorkloadResult], found: list[Check]) -> str:
    """The human-readable report."""
    lines = [f"Stockyard bench: {meta['database']} ({meta['database_version']}), "
             f"{meta['clients']} clients, {meta['server_workers']} server workers, "
             f"{meta['seconds']:g} s per workload after {meta['warmup']:g} s warm-up, "
             f"HTTP client: {meta['http_client']}, {meta['cpus']} CPUs, "
             f"load average at start {meta['loadavg_start']}", ""]
    head = (f"{'workload':<11}{'via':<9}{'orders/s':>9}{'p50 ms':>8}{'p99 ms':>8}"
            f"{'max ms':>8}{'ok':>8}  {'oversell':>8}{'deadlk':>7}{'client':>7}"
            f"{'server':>7}{'machine':>8}  failed")
    lines += [head, "-" * len(head)]
    for r in results:
        broken = (r.oversold_stocks or 0) + (r.mismatched_stocks or 0)
        server = r.extra.get("server_cpu")
        machine = r.extra.get("machine_busy")
        lines.append(
            f"{r.name:<11}{r.transport:<9}{r.orders_per_s:>9.1f}{_ms(r.p50_ms):>8}"
            f"{_ms(r.p99_ms):>8}{_ms(r.max_ms):>8}{r.ok:>8}  {broken:>8}"
            f"{r.deadlocks + int(r.extra.get('deadlock_log_lines', 0)):>7}"
            f"{r.client_cpu:>7.2f}{'-' if server is None else f'{server:.2f}':>7}"
            f"{'-' if machine is None else f'{machine:.0%}':>8}  {_failures(r)}")
    lines += ["", "client/server: CPU cores used by the load generator / the server process "
              "tree; machine: share of all CPUs busy (anything, incl. PostgreSQL)", ""]
    width = max(len(c.name) for c in found)
    for c in found:
        verdict = {True: "PASS", False: "FAIL", None: "n/a"}[c.passed]
        lines.append(f"{c.name:<{width}}  {c.value:>14}  target {c.goal:<10} {verdict}")
    return "\n".join(lines)


def write_json(path: Path, meta: dict[str, Any], results: list[WorkloadResult],
               found: list[Check]) -> None:
    """Everything above, machine-readable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"meta": meta, "workloads": [r.to_json() for r in results],
            "targets": [{"name": c.name, "value": c.value, "goal": c.goal, "passed": c.passed,
                         "correctness": c.correctness} for c in found]}
    path.write_text(json.dumps(data, indent=2) + "\n")
