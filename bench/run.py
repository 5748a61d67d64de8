"""`make bench`: seed a bench database, load Stockyard over HTTP, compare with raw SQL,
then time stockBulkUpdate."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from bench import checks, cpu, pgbench
from bench.batches import BatchResult, batch_checks, batch_table, run_batches
from bench.books import REFUSED, grow_books, scaled
from bench.bulk import BulkResult, Client, Levels, run_bulk
from bench.child import run_in_child
from bench.database import ROOT, VAR, BenchDatabase
from bench.hooks_report import feeds_hooks_bench
from bench.load import Target, run_http_workload
from bench.one_statement import NAME as ONE_SPREAD
from bench.one_statement import run_one_statement
from bench.progress import run_then_drop, say, settle
from bench.raw_sql import run_sql_workload
from bench.read_report import add_read_args, check_read_args, reads_bench
from bench.report import Check, render, write_json
from bench.report import checks as evaluate
from bench.seed import Seeded, migrate, seed
from bench.server import HOST, Server
from bench.stats import WorkloadResult
from bench.sync import MODES, SyncConfig, run_sync
from bench.sync_report import cost, cost_table, phase_table, sync_checks
from bench.workload import Timing, Workload


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    p.add_argument("--seconds", type=float, default=15.0, help="measured seconds per workload")
    p.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each")
    p.add_argument("--clients", type=int, default=32, help="concurrent clients")
    p.add_argument("--workers", type=int, default=2, help="stockyard serve --workers")
    p.add_argument("--variants", type=int, default=10_000, help="spread workload variants")
    p.add_argument("--bounded-units", type=int, default=300,
                   help="units of the oversell-check variant")
    p.add_argument("--http-client", choices=("raw", "httpx"), default="raw",
                   help="raw asyncio streams (light) or httpx.AsyncClient")
    p.add_argument("--pg-database", default="stockyard_bench",
                   help="name of the throw-away database on the PostgreSQL server")
    p.add_argument("--keep-db", action="store_true", help="do not drop the bench database")
    p.add_argument("--skip-raw", action="store_true", help="skip the raw SQL baseline")
    p.add_argument("--bulk-runs", type=int, default=7,
                   help="stockBulkUpdate requests per size (10,000 and 1,000 rows)")
    p.add_argument("--bulk-rows", type=int, default=10_000,
                   help="rows of the big stockBulkUpdate request (at most --variants)")
    p.add_argument("--only-bulk", action="store_true",
                   help="seed and serve, then only the stockBulkUpdate timing "
                        "(no raw SQL, no order workloads, no pick batches)")
    p.add_argument("--batch-runs", type=int, default=5,
                   help="pick batch rounds (place orders, pickBatchCreate, pickBatchComplete) "
                        "after the bulk part; 0: none")
    p.add_argument("--batch-orders", type=int, default=500,
                   help="orders per pick batch (the target is for 500)")
    p.add_argument("--only-batches", action="store_true",
                   help="seed and serve, then only the pick batch rounds "
                        "(no raw SQL, no order workloads, no bulk)")
    p.add_argument("--runs", type=int, default=1,
                   help="rounds of the order workloads (raw-spread, spread, raw-hot, hot; "
                        "every other round app first); figures: median and range")
    p.add_argument("--strict", action="store_true",
                   help="exit 1 when a performance target is missed too (not only correctness)")
    p.add_argument("--sync", action="store_true",
                   help="seed, then only the sales-channel sync workload (README: "
                        "\"Sync workload\"): push latency and the cost of channels")
    p.add_argument("--sync-broker", choices=("embedded", "redis", "both"), default="both",
                   help="who pushes: the serve processes (embedded), one `stockyard worker` "
                        "on Redis, or both one after the other")
    p.add_argument("--sync-redis-url", default="redis://127.0.0.1:6379/9",
                   help="STOCKYARD_BROKER_URL of the redis mode; the bench flushes this "
                        "database, so never db 0")
    p.add_argument("--sync-rate", type=float, default=50.0,
                   help="orders/s of the fixed-rate sync phase")
    p.add_argument("--sync-pool", type=int, default=200,
                   help="SKUs each sync phase orders (and its channels list)")
    p.add_argument("--sync-channels", type=int, default=10,
                   help="channels of the cost phase, each listing every SKU of its pool")
    p.add_argument("--feeds-hooks", action="store_true",
                   help="seed, then only the supplier feed and stock webhook latencies "
                        "(README: \"Feeds and hooks workload\"), embedded (no broker)")
    p.add_argument("--hooks-rate", type=float, default=50.0,
                   help="orders/s of each --feeds-hooks phase")
    p.add_argument("--hooks-pool", type=int, default=200,
                   help="SKUs each --feeds-hooks phase orders (the feed's items, the "
                        "merchant channel's listings)")
    p.add_argument("--books", action="store_true",
                   help="after seeding, grow big books (README: \"Big books\"; PostgreSQL "
                        "only): 100,000 more variants, 1M orders, 10M movements")
    p.add_argument("--books-scale", type=float, default=1.0,
                   help="scale of --books (0.1: a tenth of each)")
    add_read_args(p)
    args = p.parse_args(argv)
    check_read_args(p, args)
    if args.books_scale <= 0:
        p.error("--books-scale must be positive")
    if not 0 < args.bulk_rows <= args.variants:
        p.error("--bulk-rows must be between 1 and --variants")
    if args.bulk_runs < 1:
        p.error("--bulk-runs must be at least 1")
    if args.runs < 1:
        p.error("--runs must be at least 1")
    if args.batch_runs < (1 if args.only_batches else 0) or args.batch_orders < 1:
        p.error("--batch-orders must be positive, --batch-runs at least 1 with "
                "--only-batches (0: no pick batches)")
    if args.only_batches and (args.only_bulk or args.sync):
        p.error("--only-batches excludes --only-bulk and --sync")
    if args.sync:
        _check_sync_args(p, args)
    if args.feeds_hooks:
        if args.sync or args.only_bulk or args.only_batches:
            p.error("--feeds-hooks excludes --sync, --only-bulk and --only-batches")
        if args.hooks_pool < 1 or args.hooks_rate <= 0:
            p.error("--hooks-pool and --hooks-rate must be positive")
        if 2 * args.hooks_pool > args.variants:
            p.error("--hooks-pool: the two phases need two pools of it in --variants")
    return args


def _check_sync_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    modes = 2 if args.sync_broker == "both" else 1
    if args.only_bulk:
        p.error("--sync and --only-bulk exclude each other")
    if args.sync_pool < 1 or args.sync_channels < 1 or args.sync_rate <= 0:
        p.error("--sync-pool, --sync-channels and --sync-rate must be positive")
    if 2 * args.sync_pool * modes > args.variants:
        p.error(f"--sync-pool: {modes} mode(s) need {2 * modes} pools of it in --variants")
    if args.sync_broker != "embedded":
        db = urlsplit(args.sync_redis_url).path.strip("/") or "0"
        if not args.sync_redis_url.startswith("redis://") or db == "0":
            p.error("--sync-redis-url must be redis://host:port/<db other than 0> "
                    "(the bench flushes it)")


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def measured(db: BenchDatabase, run: Callable[[], WorkloadResult], server: Server,
             run_no: int = 1, reader: Client | None = None) -> WorkloadResult:
    """Run a workload; attach integrity, the read-back of its orders, deadlock log lines
    and CPU figures (`reader`: read a sample of the orders back through GraphQL too)."""
    settle(server.pid)
    since_order = checks.last_order_id(db)
    since = server.log_size()
    result = cpu.with_cpu(run, server.pid, run_no)
    result.extra["deadlock_log_lines"] = server.deadlocks_logged(since)
    books = checks.integrity(db)
    result.oversold_stocks, result.mismatched_stocks = books.oversold, books.mismatched
    readback = checks.read_back(db, result.placed, since_order)
    if reader is not None:
        checks.read_back_graphql(reader.post, reader.close, result.placed, readback,
                                 seed=run_no)
    result.readback = readback
    say(f"{result.name} #{run_no} ({result.transport}): {result.orders_per_s:.1f} orders/s, "
        f"ok {result.ok}, failed {result.failed}, read back {readback.received} orders "
        f"({readback.graphql_sampled} via GraphQL), {readback.broken} mismatched")
    for problem in readback.problems:
        say(f"  read-back: {problem}")
    if result.failures:
        say(f"  failures: {result.failures}")
    return result


def rounds(runs: int, raw: bool, one: bool = False) -> list[tuple[int, str]]:
    """(round, workload) in the order run: raw-spread, spread, raw-hot, hot; every other
    round each pair the other way round (spread, raw-spread, hot, raw-hot). `one`: the
    one-statement baseline too, beside raw-spread (raw-spread, raw-one-spread, spread)."""
    out: list[tuple[int, str]] = []
    for n in range(1, runs + 1):
        for name in ("spread", "hot"):
            pair = [f"raw-{name}", name] if raw else [name]
            if raw and one and name == "spread":
                pair.insert(1, ONE_SPREAD)
            out += [(n, w) for w in (pair if n % 2 else pair[::-1])]
    return out


def bulk_workloads(args: argparse.Namespace, db: BenchDatabase, server: Server,
                   variants: tuple[int, ...], token: str) -> list[BulkResult]:
    """stockBulkUpdate of `--bulk-rows` rows, then of 1,000 rows, `--bulk-runs` times each."""
    sizes = [args.bulk_rows] + ([1_000] if args.bulk_rows > 1_000 else [])
    client, levels = Client(HOST, server.port, token), Levels()
    out: list[BulkResult] = []
    try:
        for rows in sizes:
            say(f"bulk: stockBulkUpdate of {rows} rows, {args.bulk_runs} runs")
            since = server.log_size()
            result = run_bulk(db, client, variants[:rows], args.bulk_runs, levels, server.pid)
            result.deadlock_log_lines = server.deadlocks_logged(since)
            say(f"bulk {rows} rows: median {result.median_ms:.0f} ms, min "
                f"{result.min_ms:.0f}, max {result.max_ms:.0f}, ok runs "
                f"{result.ok_runs}/{result.runs}")
            out.append(result)
    finally:
        client.close()
    return out


def batch_workloads(args: argparse.Namespace, db: BenchDatabase, server: Server,
                    seeded: Seeded) -> BatchResult | None:
    """`--batch-runs` rounds of a `--batch-orders` pick batch (README: "Pick batches")."""
    if not args.batch_runs:
        return None
    say(f"pick batches: {args.batch_runs} runs of {args.batch_orders} orders")
    since = server.log_size()
    result = run_batches(db, HOST, server.port, seeded.token, seeded.spread_variants,
                         args.batch_orders, args.batch_runs, server.pid)
    result.deadlock_log_lines = server.deadlocks_logged(since)
    say(f"pick batches: pickBatchComplete median {result.complete.median or 0:.0f} ms, "
        f"pickBatchCreate median {result.create.median or 0:.0f} ms, ok runs "
        f"{result.ok_runs}/{len(result.runs)}")
    return result


def git_commit() -> str | None:
    """HEAD of the repository, '+dirty' when the tree has changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                              capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, text=True,
                               capture_output=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def bench(args: argparse.Namespace, db: BenchDatabase) -> int:
    """Seed, baseline, serve, load, check, report."""
    timing = Timing(args.clients, args.warmup, args.seconds)
    meta: dict[str, Any] = {
        "database": db.kind, "clients": args.clients, "server_workers": args.workers,
        "seconds": args.seconds, "warmup": args.warmup, "http_client": args.http_client,
        "variants": args.variants, "bounded_units": args.bounded_units,
        "runs": args.runs, "bulk_runs": args.bulk_runs, "bulk_rows": args.bulk_rows,
        "only_bulk": args.only_bulk, "sync": args.sync, "only_batches": args.only_batches,
        "batch_runs": args.batch_runs, "batch_orders": args.batch_orders,
        "cpus": os.cpu_count(), "loadavg_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"), "commit": git_commit()}
    say(f"database: {db.kind} ({db.url})")
    started = time.perf_counter()
    db.create()
    migrate(db)
    seeded = seed(db, args.variants, args.bounded_units)
    meta["database_version"] = db.server_version()
    say(f"migrated and seeded {args.variants + 2} variants in "
        f"{time.perf_counter() - started:.1f} s")
    if args.books:
        meta["books"] = grow_books(db, **scaled(args.books_scale)).to_json()
    if args.sync:
        return sync_bench(args, db, seeded, meta)
    if args.feeds_hooks:
        return feeds_hooks_bench(args, db, seeded, meta)
    if args.reads:
        return reads_bench(args, db, seeded, meta)

    spread = Workload("spread", seeded.spread_variants, lines=3)
    hot = Workload("hot", (seeded.hot_variant,), lines=1)
    bounded = Workload("bounded", (seeded.bounded_variant,), lines=1, stop_after_insufficient=3,
                       expected_refusals=frozenset({"INSUFFICIENT_STOCK"}))
    workloads = {w.name: w for w in (spread, hot, bounded)}
    workloads |= {f"raw-{w.name}": dataclasses.replace(w, name=f"raw-{w.name}")
                  for w in (spread, hot)}
    results: list[WorkloadResult] = []
    log = VAR / f"server-{db.kind}.log"
    with Server(db.url, args.workers, log) as server:
        say(f"server up on {server.url} (stderr: {log})")
        target = Target(HOST, server.port, seeded.token, args.http_client)
        reader = Client(HOST, server.port, seeded.token)  # reads orders back via GraphQL
        try:
            one = db.kind == "postgresql" and pgbench.available() is not None
            order_runs = [] if args.only_bulk or args.only_batches else \
                [*rounds(args.runs, raw=not args.skip_raw, one=one), (1, "bounded")]
            for run_no, name in order_runs:
                if name == ONE_SPREAD:
                    say(f"{name} #{run_no}: pgbench, {args.clients} clients, "
                        f"{args.warmup:g}+{args.seconds:g} s")
                    results.append(measured(db, functools.partial(
                        run_one_statement, db, args.variants, timing, seeded.actor),
                        server, run_no))
                    continue
                workload = workloads[name]
                if name.startswith("raw-"):
                    say(f"{name} #{run_no}: {args.clients} SQL clients, "
                        f"{args.warmup:g}+{args.seconds:g} s")
                    results.append(measured(db, functools.partial(
                        run_sql_workload, db, workload, timing, seeded.actor), server, run_no))
                else:
                    say(f"{name} #{run_no}: {args.clients} GraphQL clients")
                    results.append(measured(db, functools.partial(
                        run_in_child, run_http_workload, target, workload, timing),
                        server, run_no, reader=reader))
        finally:
            reader.close()
        bulk = [] if args.only_batches else \
            bulk_workloads(args, db, server, seeded.spread_variants, seeded.token)
        batches = None if args.only_bulk else batch_workloads(args, db, server, seeded)
    if results:
        figures = checks.variant_figures(db, seeded.bounded_variant)
        results[-1].extra.update(allocated=figures.allocated, order_lines=figures.order_lines,
                                 units=figures.quantity)
    time.sleep(0.5)  # backends flush their statistics on exit
    pg_deadlocks = db.pg_deadlocks()
    meta["pg_stat_deadlocks"] = pg_deadlocks
    found = evaluate(results, seeded.bounded_units, pg_deadlocks, bulk, db.kind,
                     orders=bool(results))
    found += batch_checks(batches, db.kind) if batches is not None else []
    sections = batch_table(batches) if batches is not None else []
    print(render(meta, results, found, bulk, sections), flush=True)
    out = VAR / f"results-{db.kind}.json"
    write_json(out, meta, results, found, bulk,
               batches=batches.to_json() if batches is not None else None)
    print(f"\nJSON: {out}")
    failed = [c for c in found if c.passed is False and (c.correctness or args.strict)]
    return 1 if failed else 0


def sync_bench(args: argparse.Namespace, db: BenchDatabase, seeded: Seeded,
               meta: dict[str, Any]) -> int:
    """`--sync`: the sync workload in each broker mode, its report and JSON."""
    modes = MODES if args.sync_broker == "both" else (args.sync_broker,)
    config = SyncConfig(modes, args.sync_redis_url, args.sync_rate, args.sync_pool,
                        args.sync_channels, Timing(args.clients, args.warmup, args.seconds),
                        args.workers, args.http_client)
    meta.update(sync_modes=list(modes), sync_rate=args.sync_rate,
                sync_pool=args.sync_pool, sync_channels=args.sync_channels,
                sync_redis_url=args.sync_redis_url if "redis" in modes else None)
    run = run_sync(db, seeded, config)
    books = checks.integrity(db)
    time.sleep(0.5)  # backends flush their statistics on exit
    pg_deadlocks = db.pg_deadlocks()
    meta["pg_stat_deadlocks"] = pg_deadlocks
    found = sync_checks(run, f"{args.sync_rate:g}/s")
    broken = books.oversold + books.mismatched
    found.append(Check("oversold or unbalanced stocks (after the sync workload)", str(broken),
                       "0", broken == 0, correctness=True))
    if pg_deadlocks is not None:
        found.append(Check("pg_stat_database.deadlocks (whole run)", str(pg_deadlocks), "0",
                           pg_deadlocks == 0, correctness=True))
    print(render(meta, [], found, sections=phase_table(run) + cost_table(run)), flush=True)
    out = VAR / f"results-{db.kind}.json"
    write_json(out, meta, [], found, sync={**run.to_json(), "cost": cost(run)})
    print(f"\nJSON: {out}")
    failed = [c for c in found if c.passed is False and (c.correctness or args.strict)]
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    db = BenchDatabase.choose(os.environ.get("STOCKYARD_DATABASE_URL"), args.pg_database)
    if args.books and db.kind != "postgresql":
        print(f"bench: --books: {REFUSED}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupt)
    return run_then_drop(lambda: bench(args, db), db, args.keep_db)


if __name__ == "__main__":
    sys.exit(main())
