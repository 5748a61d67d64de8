"""`--reads`: the read workloads' rounds, table, targets, JSON file and exit status
(bench/reads.py; README: "Read workloads")."""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import statistics
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bench import cpu, pgbench
from bench.child import run_in_child
from bench.database import VAR, BenchDatabase
from bench.floor import FloorMismatch, answer_fields, floor_seconds
from bench.load import Target
from bench.progress import say, settle
from bench.reads import (
    RAW,
    SPECS,
    TRIVIAL,
    WORKLOADS,
    ReadData,
    judge,
    prepare,
    request,
    run_raw_availability,
    run_read_workload,
)
from bench.report import Check, by_name, failure_checks, render, table_top
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
FLOOR_SEED = 0  # the draw of the one request per workload whose answer the floor walks


@dataclass(frozen=True, slots=True)
class Floor:
    """A workload's floor (bench/floor.py) on one right answer of the server: the answer's
    response entries and the seconds bare graphql-core takes to walk it, or why not."""

    name: str
    fields: int | None = None
    seconds: float | None = None
    problem: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"answer_fields": self.fields,
                "floor_us": None if self.seconds is None else round(self.seconds * 1e6, 1),
                "problem": self.problem}


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


def measured(run: Callable[[], WorkloadResult], server: Server, run_no: int,
             busy_seconds: float | None = None) -> WorkloadResult:
    """Run one read workload after the server is idle; attach CPU figures (with
    `busy_seconds`, the warm-up and window, the server's CPU per request) and the ERROR
    lines the server logged meanwhile."""
    settle(server.pid)
    since = server.log_size()
    started = time.perf_counter()
    result = cpu.with_cpu(run, server.pid, run_no)
    elapsed = time.perf_counter() - started
    if busy_seconds:
        result.extra["server_cpu_us_per_request"] = server_cpu_per_request(
            result, elapsed, busy_seconds)
    result.extra["server_error_lines"] = _error_lines(server, since)
    say(f"{result.name} #{run_no} ({result.transport}): {result.orders_per_s:.1f}/s, p99 "
        f"{_ms(result.p99_ms)} ms, ok {result.ok}, failed {result.failed}")
    for problem in result.extra.get("problems", [])[:3]:
        say(f"  {problem}")
    return result


def server_cpu_per_request(result: WorkloadResult, elapsed: float, busy_seconds: float
                           ) -> float | None:
    """Microseconds of server CPU per answer: the server tree's CPU seconds over the whole
    run (`elapsed`: the load generator's start, warm-up, window, drain) over the answers
    of the warm-up and window, taken at the window's rate. The idle start adds no CPU; a
    slower warm-up makes it a little low."""
    cores = result.extra.get("server_cpu")
    if cores is None or result.orders_per_s <= 0:
        return None
    return float(cores) * elapsed / (result.orders_per_s * busy_seconds) * 1e6


def _post(url: str, token: str, body: bytes) -> tuple[int, bytes]:
    request_ = urllib.request.Request(
        f"{url}/graphql", data=body, method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request_, timeout=30) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def workload_floor(url: str, name: str, data: ReadData) -> Floor:
    """One request of workload `name` (draw FLOOR_SEED), its answer checked as the load
    generator checks it, and the floor of walking that answer."""
    spec = SPECS[name]
    body, expect = request(spec, data, random.Random(FLOOR_SEED))
    try:
        status, payload = _post(url, data.tokens[spec.role], body)
    except OSError as exc:
        return Floor(name, problem=f"no answer: {type(exc).__name__}: {exc}")
    code = judge(spec, data, status, payload, expect)
    if code is not None:
        return Floor(name, problem=f"the answer was wrong: {code}")
    answer = json.loads(payload)["data"]
    try:
        seconds = floor_seconds(spec.query, json.loads(body).get("variables"),
                                spec.operation, answer)
    except FloorMismatch as exc:
        return Floor(name, answer_fields(answer), problem=str(exc)[:300])
    return Floor(name, answer_fields(answer), seconds)


def measure_floors(url: str, names: list[str], data: ReadData) -> dict[str, Floor]:
    """Each read workload's floor, measured in this process while the server is idle."""
    floors: dict[str, Floor] = {}
    for name in names:
        floors[name] = floor = workload_floor(url, name, data)
        figure = "-" if floor.seconds is None else f"{floor.seconds * 1e6:.0f} us"
        say(f"floor of {name}: {figure} ({floor.fields} fields)"
            + (f": {floor.problem}" if floor.problem else ""))
    return floors


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
    lines = table_top("Reads: every answer checked (shape and figures); x trivial: requests/s "
                      "over `trivial`'s in the same round; the server's per-token rate limit "
                      "raised so that it never refuses", head)
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


def floor_cores(workers: int) -> int:
    """The cores the server's workers can use: the ceiling's multiplier."""
    return max(1, min(workers, os.cpu_count() or workers))


def _median_extra(runs: list[WorkloadResult], key: str) -> float | None:
    known = [float(r.extra[key]) for r in runs if r.extra.get(key) is not None]
    return statistics.median(known) if known else None


def floor_summary(runs: list[WorkloadResult], floor: Floor, cores: int) -> dict[str, Any]:
    """The floor beside the medians of the runs: the server's CPU per request over the
    floor, and the rate the floor allows on `cores` cores."""
    per_request = _median_extra(runs, "server_cpu_us_per_request")
    floor_us = None if floor.seconds is None else floor.seconds * 1e6
    ceiling = None if floor.seconds is None else cores / floor.seconds
    rate = _median_rate(runs)
    return {**floor.to_json(), "cores": cores,
            "us_per_field": floor_us / floor.fields if floor_us and floor.fields else None,
            "server_cpu_us_per_request": per_request,
            "server_cpu_over_floor": per_request / floor_us
            if per_request is not None and floor_us else None,
            "ceiling_per_s": ceiling,
            "rate_over_ceiling": rate / ceiling if rate is not None and ceiling else None}


def floor_table(results: list[WorkloadResult], floors: Mapping[str, Floor], workers: int
                ) -> list[str]:
    """Per read workload: the framework's floor for its request beside what the server
    spent (medians over the runs)."""
    cores = floor_cores(workers)
    head = (f"{'read workload':<20}{'fields':>7}{'floor us':>10}{'us/field':>9}"
            f"{'req/s':>9}{'srv us/req':>11}{'srv/floor':>10}{'ceiling/s':>10}"
            f"{'x ceiling':>10}")
    lines = table_top("Floor: bare graphql-core executing the same request over one right "
                      "answer of the server (its SDL, no resolvers of ours, json.dumps "
                      "included, parse and validation not; median of batches)", head)
    notes: list[str] = []
    for name, group in by_name(results).items():
        floor = floors.get(name)
        if floor is None:
            continue
        f = floor_summary(group, floor, cores)
        lines.append(
            f"{name:<20}{_num(f['answer_fields'], 0):>7}{_num(f['floor_us'], 0):>10}"
            f"{_num(f['us_per_field'], 1):>9}{_num(_median_rate(group), 1):>9}"
            f"{_num(f['server_cpu_us_per_request'], 0):>11}"
            f"{_num(f['server_cpu_over_floor'], 1):>10}{_num(f['ceiling_per_s'], 0):>10}"
            f"{_num(f['rate_over_ceiling'], 3):>10}")
        if floor.problem:
            notes.append(f"  {name}: no floor: {floor.problem}")
    return [*lines, *notes, "",
            "fields: response entries of the answer; srv us/req: the server's CPU over the "
            "run / the answers of warm-up and window; srv/floor: what the server adds to "
            "graphql-core's walk (HTTP, auth, limits, SQL, building objects); ceiling/s: "
            f"min(workers, CPUs) = {cores} / floor; x ceiling: req/s over it", ""]


def _num(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


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
        floors = measure_floors(server.url, args.read_workloads, data)
        target = Target(HOST, server.port, "", args.http_client)
        for run_no, name in read_rounds(args.runs, args.read_workloads, raw):
            say(f"{name} #{run_no}: {args.clients} clients, {args.warmup:g}+{args.seconds:g} s")
            if name == RAW:
                run = functools.partial(run_raw_availability, db, data, timing)
            else:
                run = functools.partial(run_in_child, run_read_workload, target, name, data,
                                        timing)
            busy = None if name == RAW else args.warmup + args.seconds
            results.append(measured(run, server, run_no, busy))
    found = read_checks(results)
    sections = read_table(results) + floor_table(results, floors, args.workers) + (
        [f"raw read: {raw_note}", ""] if not raw else [])
    print(render(meta, [], found, sections=sections), flush=True)
    out = VAR / f"results-{db.kind}-reads.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    runs = by_name(results)
    cores = floor_cores(args.workers)
    summary = [{"name": name, "runs": len(group),
                "requests_per_s": Spread.of([r.orders_per_s for r in group]).to_json(),
                "p50_ms": Spread.of([r.p50_ms for r in group]).to_json(),
                "p99_ms": Spread.of([r.p99_ms for r in group]).to_json(),
                "server_cpu_us_per_request": Spread.of(
                    [r.extra.get("server_cpu_us_per_request") for r in group]).to_json(),
                "floor": floor_summary(group, floors[name], cores) if name in floors
                else None}
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
