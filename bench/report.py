"""The printed table, the target checks and the JSON file."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.bulk import BulkResult
from bench.stats import Spread, WorkloadResult

SPREAD_RATIO_MIN = 0.3
ONE_STATEMENT_RATIO_MIN = 0.8  # issue 18: spread / the one-statement order (pgbench)
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


def table_top(title: str, head: str) -> list[str]:
    """A table's title, its column heads and a rule as wide as them."""
    return [title, head, "-" * len(head)]


def by_name(results: list[WorkloadResult]) -> dict[str, list[WorkloadResult]]:
    """Each workload's runs, in order."""
    out: dict[str, list[WorkloadResult]] = {}
    for r in results:
        out.setdefault(r.name, []).append(r)
    return out


def summarize(results: list[WorkloadResult]) -> dict[str, dict[str, Spread]]:
    """Per workload: median and range over its runs of orders/s, p50 and p99."""
    return {name: {"orders_per_s": Spread.of([r.orders_per_s for r in runs]),
                   "p50_ms": Spread.of([r.p50_ms for r in runs]),
                   "p99_ms": Spread.of([r.p99_ms for r in runs])}
            for name, runs in by_name(results).items()}


def checks(results: list[WorkloadResult], bounded_units: int,
           pg_deadlocks: int | None, bulk: list[BulkResult] | None = None,
           database: str = "", orders: bool = True) -> list[Check]:
    """The targets the brief sets, evaluated on this run (`orders=False`: bulk only).

    Performance targets use each workload's median over its runs (`--runs`); correctness
    checks count every run.
    """
    out = _order_checks(summarize(results)) if orders else []
    out += _bulk_checks(bulk or [], database)
    if orders:
        out += failure_checks(results)
        out += _read_back_checks(results)
    broken = sum((r.oversold_stocks or 0) + (r.mismatched_stocks or 0) for r in results)
    broken += sum((b.oversold_stocks or 0) + (b.mismatched_stocks or 0) for b in bulk or [])
    out.append(Check("oversold or unbalanced stocks (all workloads)", str(broken), "0",
                     broken == 0, correctness=True))
    bounded = by_name(results).get("bounded")
    if bounded:
        last = bounded[-1]
        allocated = last.extra.get("allocated")
        exact = last.ok == bounded_units == allocated
        out.append(Check("bounded: orders / allocated / units",
                         f"{last.ok}/{allocated}/{bounded_units}", "all equal", exact,
                         correctness=True))
    seen = sum(r.deadlocks + int(r.extra.get("deadlock_log_lines", 0))
               for r in results) + sum(b.deadlock_log_lines for b in bulk or [])
    out.append(Check("deadlocks (errors, server log, responses)", str(seen), "0", seen == 0,
                     correctness=True))
    if pg_deadlocks is not None:
        out.append(Check("pg_stat_database.deadlocks (whole run)", str(pg_deadlocks), "0",
                         pg_deadlocks == 0, correctness=True))
    return out


def failure_checks(results: list[WorkloadResult], what: str = (
        "failed requests (not an order, not an expected refusal)")) -> list[Check]:
    """Failed requests (`what`): one line in all, and one per workload that had any."""
    total = sum(r.failed for r in results)
    out = [Check(what, str(total), "0", total == 0, correctness=True)]
    for name, runs in by_name(results).items():
        codes: Counter[str] = Counter()
        for r in runs:
            codes.update(r.failures)
        if codes:
            detail = " ".join(f"{code}:{n}" for code, n in sorted(codes.items()))
            out.append(Check(f"  {name}: {detail}", str(sum(codes.values())), "0", False,
                             correctness=True))
    return out


def _read_back_checks(results: list[WorkloadResult]) -> list[Check]:
    """Orders received vs the database (and the GraphQL sample): mismatching orders."""
    checked = [r for r in results if r.readback is not None]
    received = sum(r.readback.received for r in checked if r.readback is not None)
    broken = sum(r.readback.broken for r in checked if r.readback is not None)
    sampled = sum(r.readback.graphql_sampled for r in checked if r.readback is not None)
    out = [Check(f"orders read back ({received} in SQL, {sampled} via node(id:)): mismatches",
                 str(broken), "0", broken == 0 and len(checked) == len(results),
                 correctness=True)]
    for r in checked:
        if r.readback is not None and r.readback.broken:
            out.append(Check(f"  {r.name} run {r.run}: {'; '.join(r.readback.problems)}",
                             str(r.readback.broken), "0", False, correctness=True))
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


def _order_checks(summary: dict[str, dict[str, Spread]]) -> list[Check]:
    def rate(name: str) -> float | None:
        figures = summary.get(name)
        return None if figures is None else figures["orders_per_s"].median

    def ratio(num: float | None, den: float | None) -> float | None:
        return None if num is None or not den else num / den

    out: list[Check] = []
    spread_ratio = ratio(rate("spread"), rate("raw-spread"))
    hot_ratio = ratio(rate("hot"), rate("spread"))
    out.append(Check("stockyard spread / raw SQL spread (orders/s)",
                     "-" if spread_ratio is None else f"{spread_ratio:.2f}",
                     f">= {SPREAD_RATIO_MIN}",
                     None if spread_ratio is None else spread_ratio >= SPREAD_RATIO_MIN))
    if "raw-one-spread" in summary:
        one_ratio = ratio(rate("spread"), rate("raw-one-spread"))
        out.append(Check("stockyard spread / raw one-statement spread (orders/s)",
                         "-" if one_ratio is None else f"{one_ratio:.2f}",
                         f">= {ONE_STATEMENT_RATIO_MIN}",
                         None if one_ratio is None else one_ratio >= ONE_STATEMENT_RATIO_MIN))
    out.append(Check("stockyard hot / stockyard spread (orders/s)",
                     "-" if hot_ratio is None else f"{hot_ratio:.2f}", f">= {HOT_RATIO_MIN}",
                     None if hot_ratio is None else hot_ratio >= HOT_RATIO_MIN))
    for name in ("spread", "hot"):
        if name in summary:
            p99 = summary[name]["p99_ms"].median
            out.append(Check(f"{name} p99 latency (ms)", _ms(p99), f"< {P99_MAX_MS:.0f}",
                             None if p99 is None else p99 < P99_MAX_MS))
    return out


def _failures(result: WorkloadResult) -> str:
    text = " ".join(f"{code}:{n}" for code, n in sorted(result.failures.items())) or "0"
    if result.refusals:
        text += " (expected: " + " ".join(
            f"{code}:{n}" for code, n in sorted(result.refusals.items())) + ")"
    return text


def render(meta: dict[str, Any], results: list[WorkloadResult], found: list[Check],
           bulk: list[BulkResult] | None = None, sections: list[str] | None = None) -> str:
    """The human-readable report (`sections`: more table lines, before the targets)."""
    lines = [f"Stockyard bench: {meta['database']} ({meta['database_version']}), "
             f"{meta['clients']} clients, {meta['server_workers']} server workers, "
             f"{meta['seconds']:g} s per workload after {meta['warmup']:g} s warm-up, "
             f"{meta.get('runs', 1)} run(s), "
             f"HTTP client: {meta['http_client']}, {meta['cpus']} CPUs, "
             f"load average at start {meta['loadavg_start']}", ""]
    if results:
        lines += _orders_table(results)
        if any(len(runs) > 1 for runs in by_name(results).values()):
            lines += _runs_table(results)
    if bulk:
        lines += _bulk_table(bulk)
    lines += sections or []
    width = max(len(c.name) for c in found)
    goal_width = max(len(c.goal) for c in found)
    for c in found:
        verdict = {True: "PASS", False: "FAIL", None: "n/a"}[c.passed]
        lines.append(f"{c.name:<{width}}  {c.value:>14}  target {c.goal:<{goal_width}}  "
                     f"{verdict}")
    return "\n".join(lines)


def _orders_table(results: list[WorkloadResult]) -> list[str]:
    head = (f"{'workload':<15}{'run':>3} {'via':<8}{'orders/s':>9}{'p50 ms':>8}{'p99 ms':>8}"
            f"{'max ms':>8}{'ok':>8}  {'oversell':>8}{'deadlk':>7}{'client':>7}"
            f"{'server':>7}{'machine':>8}  failed")
    lines = [head, "-" * len(head)]
    for r in results:
        broken = (r.oversold_stocks or 0) + (r.mismatched_stocks or 0)
        server = r.extra.get("server_cpu")
        machine = r.extra.get("machine_busy")
        lines.append(
            f"{r.name:<15}{r.run:>3} {r.transport:<8}{r.orders_per_s:>9.1f}{_ms(r.p50_ms):>8}"
            f"{_ms(r.p99_ms):>8}{_ms(r.max_ms):>8}{r.ok:>8}  {broken:>8}"
            f"{r.deadlocks + int(r.extra.get('deadlock_log_lines', 0)):>7}"
            f"{r.client_cpu:>7.2f}{'-' if server is None else f'{server:.2f}':>7}"
            f"{'-' if machine is None else f'{machine:.0%}':>8}  {_failures(r)}")
    lines += ["", "orders/s: orders completed in the window / its length; p50/p99/max, ok: "
              "successful orders begun in the window; failed: every request of the workload",
              "client/server: CPU cores used by the load generator / the server "
              "process tree; machine: share of all CPUs busy (anything, incl. PostgreSQL)", ""]
    return lines


def _spread_text(spread: Spread, digits: int = 1) -> str:
    if spread.median is None or spread.low is None or spread.high is None:
        return "-"
    return f"{spread.median:.{digits}f} [{spread.low:.{digits}f}-{spread.high:.{digits}f}]"


def _runs_table(results: list[WorkloadResult]) -> list[str]:
    head = (f"{'workload':<15}{'runs':>5}  {'orders/s median [min-max]':<28}"
            f"{'p50 ms median [min-max]':<26}{'p99 ms median [min-max]'}")
    lines = table_top("Over the runs (targets use the medians):", head)
    runs_of = by_name(results)
    for name, figures in summarize(results).items():
        lines.append(f"{name:<15}{len(runs_of[name]):>5}  "
                     f"{_spread_text(figures['orders_per_s']):<28}"
                     f"{_spread_text(figures['p50_ms']):<26}"
                     f"{_spread_text(figures['p99_ms']):<26}".rstrip())
    return [*lines, ""]


def _bulk_table(bulk: list[BulkResult]) -> list[str]:
    head = (f"{'bulk rows':<11}{'runs':>5}{'median ms':>11}{'min ms':>9}{'max ms':>9}"
            f"{'rows/s':>9}{'server ms':>11}{'machine':>8}  {'ledger +/run':<14}failed")
    lines = table_top("stockBulkUpdate, REJECT_EVERYTHING, one request at a time (round "
                      "trip measured by the client)", head)
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
               found: list[Check], bulk: list[BulkResult] | None = None,
               sync: dict[str, Any] | None = None,
               batches: dict[str, Any] | None = None) -> None:
    """Everything above, machine-readable (`sync`: the sync workload's section, `batches`:
    the pick batches')."""
    path.parent.mkdir(parents=True, exist_ok=True)
    summary = [{"name": name, "runs": len(by_name(results)[name]),
                **{key: spread.to_json() for key, spread in figures.items()}}
               for name, figures in summarize(results).items()]
    data = {"meta": meta, "workloads": [r.to_json() for r in results], "summary": summary,
            "bulk": [b.to_json() for b in bulk or []],
            "targets": [{"name": c.name, "value": c.value, "goal": c.goal, "passed": c.passed,
                         "correctness": c.correctness} for c in found]}
    if sync is not None:
        data["sync"] = sync
    if batches is not None:
        data["batches"] = batches
    path.write_text(json.dumps(data, indent=2) + "\n")
