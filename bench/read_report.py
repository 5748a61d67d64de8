"""`--reads`: the read workloads' rounds, table, targets, JSON file and exit status
(bench/reads.py; README: "Read workloads")."""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

from bench import cpu, pgbench
from bench.child import run_in_child
from bench.database import VAR, BenchDatabase
from bench.load import Target
from bench.progress import say, settle
from bench.reads import (
    RAW,
    TRIVIAL,
    WORKLOADS,
    prepare,
    run_raw_availability,
    run_read_workload,
)
from bench.report import Check, by_name, failure_checks, render
from bench.seed import Seeded
from bench.server import HOST, Server
from bench.stats import Spread, WorkloadResult
from bench.workload import Timing

AVAILABILITY = "availability"
# the issue's aims: requests/s as a share of `trivial`'s on the same server, in the same run
RATIO_MIN = {AVAILABILITY: 0.3}
OTHERS_RATIO_MIN = 0.2
AVAILABILITY_P99_MAX_MS = 30.0
# the per-token limit (1,000/s by default, api/ratelimit.py) stays in the request path but
# never refuses: one storefront token asks far more often than that here
SERVER_ENV = {"STOCKYARD_RATE_PER_SECOND": "1000000", "STOCKYARD_RATE_BURST": "1000000"}


def add_read_args(p: argparse.ArgumentParser) -> None:
    """`--reads` and its options."""
    p.add_argument("--reads", action="store_true",
                   help="seed, then only the read workloads and the raw SQL read (README: "
                        "\"Read workloads\"); --runs rounds of them")
    p.add_argument("--read-workloads", default=",".join(WORKLOADS),
                   help=f"comma-separated subset of {','.join(WORKLOADS)} (trivial always "
                        "runs: the ratios need it); --skip-raw leaves out the raw SQL read")


def check_read_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse unknown read workloads and modes that exclude each other."""
    names = [n.strip() for n in args.read_workloads.split(",") if n.strip()]
    unknown = sorted(set(names) - set(WORKLOADS))
    if unknown:
        p.error(f"--read-workloads: unknown {', '.join(unknown)} (known: "
                f"{', '.join(WORKLOADS)})")
    args.read_workloads = [n for n in WORKLOADS if n == TRIVIAL or n in names]
    if args.reads and (args.sync or args.feeds_hooks or args.only_bulk or args.only_batches):
        p.error("--reads excludes --sync, --feeds-hooks, --only-bulk and --only-batches")


def read_rounds(runs: int, names: list[str], raw: bool) -> list[tuple[int, str]]:
    """(round, workload): trivial, the reads, the raw read; every other round the other way
    round, so drifts of the shared machine fall on both ends alike."""
    order = [*names, RAW] if raw else list(names)
    return [(n, name) for n in range(1, runs + 1) for name in (order if n % 2 else order[::-1])]


def measured(run: Callable[[], WorkloadResult], server: Server, run_no: int) -> WorkloadResult:
    """Run one read workload after the server is idle; attach CPU figures and the ERROR
    lines the server logged meanwhile."""
    settle(server.pid)
    since = server.log_size()
    result = cpu.with_cpu(run, server.pid, run_no)
    result.extra["server_error_lines"] = _error_lines(server, since)
    say(f"{result.name} #{run_no} ({result.transport}): {result.orders_per_s:.1f}/s, p99 "
        f"{_ms(result.p99_ms)} ms, ok {result.ok}, failed {result.failed}")
    for problem in result.extra.get("problems", [])[:3]:
        say(f"  {problem}")
    return result


def _error_lines(server: Server, since: int) -> int:
    with open(server.log_path, "rb") as log:
        log.seek(since)
        return sum(b" ERROR " in line or b"Traceback" in line for line in log)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _median_rate(runs: list[WorkloadResult]) -> float | None:
    return statistics.median(r.orders_per_s for r in runs) if runs else None


def _median_p99(runs: list[WorkloadResult]) -> float | None:
    known = [r.p99_ms for r in runs if r.p99_ms is not None]
    return statistics.median(known) if known else None


def read_table(results: list[WorkloadResult]) -> list[str]:
    """One row per run of a read workload, with its rate over `trivial`'s of its round."""
    trivial = {r.run: r.orders_per_s for r in results if r.name == TRIVIAL}
    head = (f"{'read workload':<20}{'run':>3} {'via':<8}{'req/s':>9}{'p50 ms':>8}{'p99 ms':>8}"
            f"{'max ms':>8}{'ok':>9}{'x trivial':>10}{'client':>7}{'server':>7}"
            f"{'machine':>8}{'log err':>8}  failed")
    lines = ["Reads: every answer checked (shape and figures); x trivial: requests/s over "
             "`trivial`'s in the same round; the server's per-token rate limit raised so that "
             "it never refuses", head, "-" * len(head)]
    for r in results:
        base = trivial.get(r.run)
        share = f"{r.orders_per_s / base:.3f}" if base else "-"
        server, machine = r.extra.get("server_cpu"), r.extra.get("machine_busy")
        failed = " ".join(f"{c}:{n}" for c, n in sorted(r.failures.items())) or "0"
        lines.append(
            f"{r.name:<20}{r.run:>3} {r.transport:<8}{r.orders_per_s:>9.1f}{_ms(r.p50_ms):>8}"
            f"{_ms(r.p99_ms):>8}{_ms(r.max_ms):>8}{r.ok:>9}{share:>10}{r.client_cpu:>7.2f}"
            f"{'-' if server is None else f'{server:.2f}':>7}"
            f"{'-' if machine is None else f'{machine:.0%}':>8}"
            f"{r.extra.get('server_error_lines', 0):>8}  {failed}")
    runs = by_name(results)
    app, raw = _median_rate(runs.get(AVAILABILITY, [])), _median_rate(runs.get(RAW, []))
    lines += ["", "req/s: answers completed in the window / its length (raw-availability: "
              "pgbench's transactions/s, or sqlite3 threads' statements/s); p50/p99/max, ok: "
              "right answers begun in the window; failed: every request (warm-up included)",
              "client/server: CPU cores of the load generator (or pgbench) / the server "
              "process tree; machine: share of all CPUs busy; log err: ERROR lines in the "
              "server's log meanwhile"]
    if app is not None and raw:
        lines.append(f"availability / raw-availability (medians): {app / raw:.3f}")
    if any(len(v) > 1 for v in runs.values()):
        lines += ["", "Over the runs (targets use the medians):",
                  f"{'read workload':<20}{'runs':>5}  {'req/s median [min-max]':<28}"
                  f"{'p99 ms median [min-max]'}"]
        for name, group in runs.items():
            rate = Spread.of([r.orders_per_s for r in group])
            p99 = Spread.of([r.p99_ms for r in group])
            lines.append(f"{name:<20}{len(group):>5}  {_spread(rate):<28}{_spread(p99)}")
    return [*lines, ""]


def _spread(spread: Spread) -> str:
    if spread.median is None or spread.low is None or spread.high is None:
        return "-"
    return f"{spread.median:.1f} [{spread.low:.1f}-{spread.high:.1f}]"


def read_checks(results: list[WorkloadResult]) -> list[Check]:
    """The issue's aims (medians over the runs) and correctness: every answer right."""
    runs = by_name(results)
    trivial = _median_rate(runs.get(TRIVIAL, []))
    out: list[Check] = []
    for name, group in runs.items():
        if name in (TRIVIAL, RAW):
            continue
        goal = RATIO_MIN.get(name, OTHERS_RATIO_MIN)
        rate = _median_rate(group)
        ratio = rate / trivial if rate is not None and trivial else None
        out.append(Check(f"{name} / trivial (requests/s)",
                         "-" if ratio is None else f"{ratio:.3f}", f">= {goal}",
                         None if ratio is None else ratio >= goal))
        if name == AVAILABILITY:
            p99 = _median_p99(group)
            out.append(Check("availability p99 latency (ms)", _ms(p99),
                             f"< {AVAILABILITY_P99_MAX_MS:.0f}",
                             None if p99 is None else p99 < AVAILABILITY_P99_MAX_MS))
    return out + failure_checks(
        results, "failed reads (non-200, GraphQL errors, wrong answers; raw read errors)")


def _json(result: WorkloadResult) -> dict[str, Any]:
    data = result.to_json()
    data["requests_per_s"] = data.pop("orders_per_s")
    for key in ("placed_orders", "readback", "oversold_stocks", "mismatched_stocks",
                "refusals"):
        data.pop(key, None)
    return data


def reads_bench(args: argparse.Namespace, db: BenchDatabase, seeded: Seeded,
                meta: dict[str, Any]) -> int:
    """`--reads`: prepare, serve, the rounds, the report, the JSON file; the exit status."""
    timing = Timing(args.clients, args.warmup, args.seconds)
    started = time.perf_counter()
    data = prepare(db, args.variants, seeded.token, seeded.actor)
    say(f"reads: prepared in {time.perf_counter() - started:.1f} s ({len(data.products)} "
        f"products, {len(data.low_stock_page)} low stocks on the page, "
        f"{len(data.movement_variants)} variants with a ledger page)")
    raw, raw_note = _raw_baseline(args, db)
    meta.update(reads=True, read_workloads=args.read_workloads, raw_read=raw_note,
                server_env=SERVER_ENV)
    results: list[WorkloadResult] = []
    log = VAR / f"server-{db.kind}-reads.log"
    with Server(db.url, args.workers, log, env=SERVER_ENV) as server:
        say(f"server up on {server.url} (stderr: {log})")
        target = Target(HOST, server.port, "", args.http_client)
        for run_no, name in read_rounds(args.runs, args.read_workloads, raw):
            say(f"{name} #{run_no}: {args.clients} clients, {args.warmup:g}+{args.seconds:g} s")
            if name == RAW:
                run = functools.partial(run_raw_availability, db, data, timing)
            else:
                run = functools.partial(run_in_child, run_read_workload, target, name, data,
                                        timing)
            results.append(measured(run, server, run_no))
    found = read_checks(results)
    sections = read_table(results) + ([f"raw read: {raw_note}", ""] if not raw else [])
    print(render(meta, [], found, sections=sections), flush=True)
    out = VAR / f"results-{db.kind}-reads.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    runs = by_name(results)
    summary = [{"name": name, "runs": len(group),
                "requests_per_s": Spread.of([r.orders_per_s for r in group]).to_json(),
                "p50_ms": Spread.of([r.p50_ms for r in group]).to_json(),
                "p99_ms": Spread.of([r.p99_ms for r in group]).to_json()}
               for name, group in runs.items()]
    payload = {"meta": meta,
               "targets": [{"name": c.name, "value": c.value, "goal": c.goal,
                            "passed": c.passed, "correctness": c.correctness} for c in found],
               "reads": {"workloads": [_json(r) for r in results], "summary": summary}}
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"\nJSON: {out}")
    failed = [c for c in found if c.passed is False and (c.correctness or args.strict)]
    return 1 if failed else 0


def _raw_baseline(args: argparse.Namespace, db: BenchDatabase) -> tuple[bool, str]:
    """Whether the raw SQL read runs, and how (or why not)."""
    if args.skip_raw:
        return False, "skipped (--skip-raw)"
    if db.kind == "sqlite":
        return True, (f"sqlite3: {args.clients} threads in the bench process, one connection "
                      "each (pgbench is PostgreSQL's)")
    if pgbench.available() is None:
        return False, "skipped: pgbench not found on PATH or in /usr/bin"
    return True, f"pgbench -n -M prepared -c {args.clients} -j {pgbench.THREADS}"
