"""The feeds-and-hooks workload's table, targets, JSON file and exit status
(bench/hooks.py)."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from bench import checks
from bench.database import VAR, BenchDatabase
from bench.hooks import FEED_PHASE, HOOK_PHASE, FeedsHooksRun, run_feeds_hooks
from bench.report import Check, render
from bench.seed import Seeded
from bench.sync import SyncConfig, SyncPhase
from bench.workload import Timing

FEED_P99_MAX_MS = 1_500.0  # supplier order -> merchant channel
HOOK_P99_MAX_MS = 1_000.0  # order -> webhook event
GOALS = {FEED_PHASE: FEED_P99_MAX_MS, HOOK_PHASE: HOOK_P99_MAX_MS}
WHAT = {FEED_PHASE: "supplier orderCreate -> merchant channel push",
        HOOK_PHASE: "orderCreate -> stock webhook event"}


def _ms(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(run: FeedsHooksRun, rate: float) -> list[str]:
    """One row per phase."""
    head = (f"{'phase':<10}{'watched':>8}{'orders/s':>9}{'ord p99':>8}{'measured':>9}"
            f"{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}{'target':>8}{'unsynced':>9}"
            f"{'drain s':>8}{'requests':>9}{'updates':>8}{'server':>7}{'bench':>6}"
            f"{'machine':>8}  failed")
    lines = [f"Feeds and webhooks at {rate:g} orders/s, embedded (no broker); latency: "
             f"answer -> first arrival reflecting the order (bench/README.md \"Feeds and "
             f"hooks workload\")", head, "-" * len(head)]
    for p in run.phases:
        failed = " ".join(f"{c}:{n}" for c, n in sorted(p.load.failures.items())) or "0"
        lines.append(
            f"{p.name:<10}{p.listings:>8}{p.load.orders_per_s:>9.1f}"
            f"{_ms(p.load.p99_ms, 1):>8}{len(p.latencies_ms):>9}{_ms(p.sync_ms(50)):>8}"
            f"{_ms(p.sync_ms(99)):>8}{_ms(p.sync_max_ms):>8}{f'<{GOALS[p.name]:.0f}':>8}"
            f"{p.unsynced:>9}{_ms(p.drain_s, 2):>8}{p.pushes:>9}{p.updates:>8}"
            f"{_ms(p.server_cpu, 2):>7}{_ms(p.bench_cpu, 2):>6}"
            f"{'-' if p.machine_busy is None else f'{p.machine_busy:.0%}':>8}  {failed}")
    events = " ".join(f"{t}:{n}" for t, n in sorted(run.events.items())) or "none"
    lines += ["", f"{FEED_PHASE}: {WHAT[FEED_PHASE]} (watched: merchant listings); "
              f"{HOOK_PHASE}: {WHAT[HOOK_PHASE]} (watched: stocks of the pool's variants; "
              f"events received: {events})",
              "ord p99: orderCreate p99 (ms, client); measured: orders begun in the window "
              "with a latency; unsynced: orders never reflected; drain s: last answer -> "
              "every figure final; requests: pushes or events received, updates: listing "
              "or stock figures they carried; server/bench: CPU cores (load + drain), "
              "machine: share of all CPUs busy", ""]
    return lines


def feeds_hooks_checks(run: FeedsHooksRun) -> list[Check]:
    """The two latency targets, and correctness."""
    out: list[Check] = []
    for p in run.phases:
        p99, goal = p.sync_ms(99), GOALS[p.name]
        out.append(Check(f"{p.name}: latency p99 ({WHAT[p.name]}), ms", _ms(p99, 1),
                         f"< {goal:.0f}", None if p99 is None else p99 < goal))
    failed = sum(p.load.failed for p in run.phases)
    out.append(Check("feeds-hooks: failed orderCreate requests", str(failed), "0",
                     failed == 0, correctness=True))
    unsynced = sum(p.unsynced for p in run.phases)
    out.append(Check("feeds-hooks: orders whose figure never arrived", str(unsynced), "0",
                     unsynced == 0, correctness=True))
    whole = sum(p.synced_before and p.drained and not p.problems for p in run.phases)
    out.append(Check("feeds-hooks: phases at their figures before and after, no problem",
                     f"{whole}/{len(run.phases)}", "all", whole == len(run.phases) == 2,
                     correctness=True))
    seen = run.receiver
    for key, label in (("bad_signatures", "requests failing Standard Webhooks verification"),
                       ("bad_bodies", "requests with a malformed body"),
                       ("version_regressions", "figures older than one received before"),
                       ("version_conflicts", "one version with two figures")):
        value = seen.get(key, 0)
        out.append(Check(f"feeds-hooks: {label}", str(value), "0", value == 0,
                         correctness=True))
    return out


def _phase_json(phase: SyncPhase) -> dict[str, Any]:
    data = phase.to_json()
    data["watched"] = data.pop("listings")
    for old in ("sync_orders", "sync_unsynced", "sync_before_answer", "sync_p50_ms",
                "sync_p99_ms", "sync_max_ms", "sync_mean_ms"):
        data[old.replace("sync_", "latency_")] = data.pop(old)
    data["target_p99_ms"] = GOALS[phase.name]
    del data["channels"], data["worker_cpu"]
    return data


def feeds_hooks_bench(args: argparse.Namespace, db: BenchDatabase, seeded: Seeded,
                      meta: dict[str, Any]) -> int:
    """`--feeds-hooks`: both phases, the report, the JSON file; the exit status."""
    config = SyncConfig(("embedded",), "", args.hooks_rate, args.hooks_pool, 1,
                        Timing(args.clients, args.warmup, args.seconds), args.workers,
                        args.http_client)
    meta.update(feeds_hooks=True, hooks_rate=args.hooks_rate, hooks_pool=args.hooks_pool)
    run = run_feeds_hooks(db, seeded, config)
    books = checks.integrity(db)
    time.sleep(0.5)  # backends flush their statistics on exit
    pg_deadlocks = db.pg_deadlocks()
    meta["pg_stat_deadlocks"] = pg_deadlocks
    found = feeds_hooks_checks(run)
    broken = books.oversold + books.mismatched
    found.append(Check("oversold or unbalanced stocks (after the workload)", str(broken), "0",
                       broken == 0, correctness=True))
    if pg_deadlocks is not None:
        found.append(Check("pg_stat_database.deadlocks (whole run)", str(pg_deadlocks), "0",
                           pg_deadlocks == 0, correctness=True))
    print(render(meta, [], found, sections=table(run, args.hooks_rate)), flush=True)
    out = VAR / f"results-{db.kind}-feeds-hooks.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    data = {"meta": meta,
            "targets": [{"name": c.name, "value": c.value, "goal": c.goal,
                         "passed": c.passed, "correctness": c.correctness} for c in found],
            "feeds_hooks": {**run.to_json(), "phases": [_phase_json(p) for p in run.phases]}}
    out.write_text(json.dumps(data, indent=2) + "\n")
    print(f"\nJSON: {out}")
    failed = [c for c in found if c.passed is False and (c.correctness or args.strict)]
    return 1 if failed else 0
