"""The sync workload's tables, targets and JSON section (bench/sync.py)."""

from __future__ import annotations

from typing import Any

from bench.report import Check
from bench.sync import SyncPhase, SyncRun

RATE_P99_MAX_MS = 1_000.0  # sync p99 at the fixed rate
FULL_P99_MAX_MS = 2_000.0  # sync p99 at full rate


def _ms(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _cores(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _failed(phase: SyncPhase) -> str:
    return " ".join(f"{code}:{n}" for code, n in sorted(phase.load.failures.items())) or "0"


def phase_table(run: SyncRun) -> list[str]:
    """One row per phase of every mode."""
    head = (f"{'mode':<9}{'phase':<9}{'chans':>6}{'listings':>9}{'orders/s':>9}"
            f"{'ord p99':>8}{'synced':>7}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}"
            f"{'unsynced':>9}{'drain s':>8}{'pushes':>7}{'updates':>8}{'server':>7}"
            f"{'worker':>7}{'bench':>6}{'machine':>8}  failed")
    lines = ["Sync: orderCreate -> signed push to a loopback channel receiver "
             "(sync latency: bench/README.md \"Sync workload\")", head, "-" * len(head)]
    for p in run.phases:
        synced = str(len(p.latencies_ms)) if p.channels else "-"
        lines.append(
            f"{p.mode:<9}{p.name:<9}{p.channels:>6}{p.listings:>9}"
            f"{p.load.orders_per_s:>9.1f}{_ms(p.load.p99_ms):>8}{synced:>7}"
            f"{_ms(p.sync_ms(50), 0):>8}{_ms(p.sync_ms(99), 0):>8}{_ms(p.sync_max_ms, 0):>8}"
            f"{p.unsynced if p.channels else '-':>9}{_ms(p.drain_s, 2):>8}{p.pushes:>7}"
            f"{p.updates:>8}{_cores(p.server_cpu):>7}{_cores(p.worker_cpu):>7}"
            f"{_cores(p.bench_cpu):>6}"
            f"{'-' if p.machine_busy is None else f'{p.machine_busy:.0%}':>8}  {_failed(p)}")
    lines += ["", "ord p99: orderCreate p99 (ms, client); synced: orders begun in the window "
              "with a sync latency; p50/p99/max ms: sync latency, answer -> first push "
              "showing it (last channel);",
              "unsynced: orders whose figure never arrived; drain s: last answer -> every "
              "listing at its final figure; server/worker/bench (the receiver's process): "
              "CPU cores, machine: share of all CPUs busy (load + drain)", ""]
    return lines


def cost(run: SyncRun) -> list[dict[str, Any]]:
    """Per mode: the full-rate workload with 0 channels vs N channels listing its pool."""
    out: list[dict[str, Any]] = []
    modes = dict.fromkeys(p.mode for p in run.phases)
    for mode in modes:
        zero = next((p for p in run.phases if p.mode == mode and p.name == "cost-0"), None)
        many = next((p for p in run.phases if p.mode == mode and p.name.startswith("cost-")
                     and p.channels > 0), None)
        if zero is None or many is None:
            continue
        rate0, rate_n = zero.load.orders_per_s, many.load.orders_per_s
        p99_0, p99_n = zero.load.p99_ms, many.load.p99_ms
        out.append({
            "mode": mode, "channels": many.channels,
            "orders_per_s_0": round(rate0, 1), "orders_per_s_n": round(rate_n, 1),
            "orders_per_s_ratio": rate_n / rate0 if rate0 else None,
            "order_p99_ms_0": p99_0, "order_p99_ms_n": p99_n,
            "order_p99_ratio": p99_n / p99_0 if p99_0 and p99_n else None,
            "sync_p50_ms_n": many.sync_ms(50), "sync_p99_ms_n": many.sync_ms(99),
            "server_cpu_0": zero.server_cpu, "server_cpu_n": many.server_cpu})
    return out


def cost_table(run: SyncRun) -> list[str]:
    """The cost of N channels on orderCreate, per mode."""
    rows = cost(run)
    if not rows:
        return []
    n = rows[0]["channels"]
    head = (f"{'mode':<9}{'orders/s 0ch':>13}{f'{n}ch':>8}{'ratio':>7}"
            f"{'ord p99 0ch':>12}{f'{n}ch':>8}{'ratio':>7}{f'sync p50 {n}ch':>15}"
            f"{f'p99 {n}ch':>9}{'server 0ch':>11}{f'{n}ch':>6}")
    lines = [f"Cost of {n} channels each listing every SKU of the pool (full rate, "
             f"orderCreate figures from the client)", head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['mode']:<9}{r['orders_per_s_0']:>13.1f}{r['orders_per_s_n']:>8.1f}"
            f"{_ms(r['orders_per_s_ratio'], 2):>7}{_ms(r['order_p99_ms_0']):>12}"
            f"{_ms(r['order_p99_ms_n']):>8}{_ms(r['order_p99_ratio'], 2):>7}"
            f"{_ms(r['sync_p50_ms_n'], 0):>15}{_ms(r['sync_p99_ms_n'], 0):>9}"
            f"{_cores(r['server_cpu_0']):>11}{_cores(r['server_cpu_n']):>6}")
    return [*lines, ""]


def sync_checks(run: SyncRun, rate_name: str) -> list[Check]:
    """Targets (p99 at the fixed rate and at full rate, per mode) and correctness."""
    out: list[Check] = []
    for p in run.phases:
        goal = RATE_P99_MAX_MS if p.name == rate_name else \
            FULL_P99_MAX_MS if p.name == "full" else None
        if goal is None:
            continue
        p99 = p.sync_ms(99)
        out.append(Check(f"sync p99 at {p.name} ({p.mode}), ms", _ms(p99), f"< {goal:.0f}",
                         None if p99 is None else p99 < goal))
    failed = sum(p.load.failed for p in run.phases)
    out.append(Check("sync: failed orderCreate requests (all phases)", str(failed), "0",
                     failed == 0, correctness=True))
    unsynced = sum(p.unsynced for p in run.phases)
    out.append(Check("sync: orders whose figure never reached a channel", str(unsynced), "0",
                     unsynced == 0, correctness=True))
    synced = [p for p in run.phases if p.channels]
    drained = sum(p.drained and p.synced_before for p in synced)
    out.append(Check("sync: phases whose listings all showed their figures before and after",
                     f"{drained}/{len(synced)}", "all", drained == len(synced) > 0,
                     correctness=True))
    seen = run.receiver
    for key, label in (("bad_signatures", "pushes failing Standard Webhooks verification"),
                       ("bad_bodies", "pushes with a malformed body"),
                       ("version_regressions", "updates older than one received before"),
                       ("version_conflicts", "one listing version with two figures")):
        value = seen.get(key, 0)
        out.append(Check(f"sync: {label}", str(value), "0", value == 0, correctness=True))
    return out
