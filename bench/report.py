"""The printed table, the target checks and the JSON file."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.bulk import BulkResult
from bench.stats import WorkloadResult

SPREAD_RATIO_MIN = 0.3
HOT_RATIO_MIN = 0.8
P99_MAX_MS = 150.0
BULK_ROWS = 10_000
BULK_MEDIAN_MAX_MS = 500.0  # PostgreSQL
SALEOR_1K = "Saleor: 1,000 rows in 122-148 ms"


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
           pg_deadlocks: int | None, bulk: list[BulkResult] | None = None,
           database: str = "", orders: bool = True) -> list[Check]:
    """The targets the brief sets, evaluated on this run (`orders=False`: bulk only)."""
    out = _order_checks(by_name) if orders else []
    out += _bulk_checks(bulk or [], database)
    broken = sum((r.oversold_stocks or 0) + (r.mismatched_stocks or 0)
                 for r in by_name.values())
    broken += sum((b.oversold_stocks or 0) + (b.mismatched_stocks or 0) for b in bulk or [])
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
               for r in by_name.values()) + sum(b.deadlock_log_lines for b in bulk or [])
    out.append(Check("deadlocks (errors, server log, responses)", str(seen), "0", seen == 0,
                     correctness=True))
    if pg_deadlocks is not None:
        out.append(Check("pg_stat_database.deadlocks (whole run)", str(pg_deadlocks), "0",
                         pg_deadlocks == 0, correctness=True))
    return out


def _bulk_checks(bulk: list[BulkResult], database: str) -> list[Check]:
    """Median of the big request against the target (PostgreSQL only) and per-run checks."""
    out: list[Check] = []
    if not bulk:
        return out
    big = bulk[0]
    median = big.median_ms
    rows = "10k" if big.rows == BULK_ROWS else f"{big.rows}"
    judged = median is not None and big.rows == BULK_ROWS and database == "postgresql"
    out.append(Check(f"bulk {rows} rows median ms", _ms(median),
                     f"< {BULK_MEDIAN_MAX_MS:.0f} (PostgreSQL)",
                     median < BULK_MEDIAN_MAX_MS if judged and median is not None else None))
    runs = sum(b.runs for b in bulk)
    ok = sum(b.ok_runs for b in bulk)
    out.append(Check("bulk runs: count = rows, no errors, ledger +rows", f"{ok}/{runs}",
                     "all runs", ok == runs and runs > 0, correctness=True))
    return out


def _order_checks(by_name: dict[str, WorkloadResult]) -> list[Check]:
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
    return out


def _failures(result: WorkloadResult) -> str:
    if not result.failures:
        return "0"
    return " ".join(f"{code}:{n}" for code, n in sorted(result.failures.items()))


def render(meta: dict[str, Any], results: list[WorkloadResult], found: list[Check],
           bulk: list[BulkResult] | None = None) -> str:
    """The human-readable report."""
    lines = [f"Stockyard bench: {meta['database']} ({meta['database_version']}), "
             f"{meta['clients']} clients, {meta['server_workers']} server workers, "
             f"{meta['seconds']:g} s per workload after {meta['warmup']:g} s warm-up, "
             f"HTTP client: {meta['http_client']}, {meta['cpus']} CPUs, "
             f"load average at start {meta['loadavg_start']}", ""]
    if results:
        lines += _orders_table(results)
    if bulk:
        lines += _bulk_table(bulk)
    width = max(len(c.name) for c in found)
    goal_width = max(len(c.goal) for c in found)
    for c in found:
        verdict = {True: "PASS", False: "FAIL", None: "n/a"}[c.passed]
        lines.append(f"{c.name:<{width}}  {c.value:>14}  target {c.goal:<{goal_width}}  "
                     f"{verdict}")
    return "\n".join(lines)


def _orders_table(results: list[WorkloadResult]) -> list[str]:
    head = (f"{'workload':<11}{'via':<9}{'orders/s':>9}{'p50 ms':>8}{'p99 ms':>8}"
            f"{'max ms':>8}{'ok':>8}  {'oversell':>8}{'deadlk':>7}{'client':>7}"
            f"{'server':>7}{'machine':>8}  failed")
    lines = [head, "-" * len(head)]
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
    lines += ["", "client/server: CPU cores used by the load generator / the server "
              "process tree; machine: share of all CPUs busy (anything, incl. PostgreSQL)", ""]
    return lines


def _bulk_table(bulk: list[BulkResult]) -> list[str]:
    head = (f"{'bulk rows':<11}{'runs':>5}{'median ms':>11}{'min ms':>9}{'max ms':>9}"
            f"{'rows/s':>9}{'server ms':>11}{'machine':>8}  {'ledger +/run':<14}failed")
    lines = ["stockBulkUpdate, REJECT_EVERYTHING, one request at a time (round trip "
             "measured by the client)", head, "-" * len(head)]
    for b in bulk:
        median = b.median_ms
        rate = "-" if not median else f"{b.rows / median * 1000.0:.0f}"
        moved = sorted(set(b.movements))
        failed = " ".join(f"{k}:{n}" for k, n in sorted(b.failures.items())) or "0"
        lines.append(
            f"{b.rows:<11}{b.runs:>5}{_ms(median):>11}{_ms(b.min_ms):>9}{_ms(b.max_ms):>9}"
            f"{rate:>9}{_ms(b.server_cpu_ms):>11}"
            f"{'-' if b.machine_busy is None else f'{b.machine_busy:.0%}':>8}  "
            f"{'/'.join(map(str, moved)) or '-':<14}{failed}")
    lines += ["", f"server ms: CPU of the server process tree per request; {SALEOR_1K} "
              "(for the 1,000-row line)", ""]
    return lines


def write_json(path: Path, meta: dict[str, Any], results: list[WorkloadResult],
               found: list[Check], bulk: list[BulkResult] | None = None) -> None:
    """Everything above, machine-readable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"meta": meta, "workloads": [r.to_json() for r in results],
            "bulk": [b.to_json() for b in bulk or []],
            "targets": [{"name": c.name, "value": c.value, "goal": c.goal, "passed": c.passed,
                         "correctness": c.correctness} for c in found]}
    path.write_text(json.dumps(data, indent=2) + "\n")
