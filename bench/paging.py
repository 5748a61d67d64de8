"""`python -m bench.paging`: page 1 and page 1,000 of the ledger and of the orders through
the real server, on big books (README: "Big books"), and the plan PostgreSQL runs for each.

Page N is asked for with the cursor of the last row of page N-1, taken from the database
(`--walk` also follows `endCursor` page by page to it, and checks it arrives there).
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import re
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from bench.books import REFUSED, grow_books, scaled
from bench.bulk import Client
from bench.database import VAR, BenchDatabase
from bench.progress import run_then_drop, say
from bench.seed import create_admin_token, migrate, seed
from bench.server import HOST, Server

PG_NAME = "stockyard_books"
MOVEMENT_FIELDS = "id type quantityChange quantityAfter allocatedAfter createdAt"
ORDER_FIELDS = "id status type shippingCountry"


@dataclass(frozen=True, slots=True)
class Case:
    """One connection field with its filter: GraphQL arguments, the same filter in SQL,
    and as `reads.PageQuery` fields (for EXPLAIN)."""

    name: str
    field: str
    arguments: str  # GraphQL, without first/after
    selection: str
    table: str
    where: str  # SQL
    filters: dict[str, Any]
    last_page: bool = False  # its deepest page rather than page `--pages`

    def query(self) -> str:
        args = f"{self.arguments}, " if self.arguments else ""
        return (f"query BooksPage($first: Int!, $after: String) {{ {self.field}({args}"
                f"first: $first, after: $after) {{ edges {{ cursor node {{ {self.selection} "
                f"}} }} pageInfo {{ hasNextPage endCursor }} }} }}")


@dataclass(slots=True)
class Plan:
    """What EXPLAIN (ANALYZE, BUFFERS) says of one page's statement."""

    scans: list[str]
    ms: float
    buffers: int
    rows_filtered: int

    def __str__(self) -> str:
        return (f"{' + '.join(self.scans)}: {self.ms:.2f} ms, {self.buffers} buffers, "
                f"{self.rows_filtered} rows filtered out")


@dataclass(slots=True)
class Result:
    """Median latencies of page 1 and page `page`, and their plans (custom and generic)."""

    case: str
    rows: int
    page: int
    first_ms: list[float] = field(default_factory=list)
    deep_ms: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    plans: dict[str, str] = field(default_factory=dict)
    walk_ms: float | None = None

    @property
    def ratio(self) -> float:
        return statistics.median(self.deep_ms) / statistics.median(self.first_ms)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "first_median_ms": statistics.median(self.first_ms),
                "deep_median_ms": statistics.median(self.deep_ms), "ratio": self.ratio}


def cursor(pk: int) -> str:
    """api/queries.py's `_cursor`: the opaque `after` of a row."""
    return base64.b64encode(f"cursor:{pk}".encode()).decode()


def cases(db: BenchDatabase) -> list[Case]:
    """The ledger and the orders, unfiltered and filtered; the variant with the most
    movements."""
    from api import ids

    with db.connection() as conn:
        busiest = conn.execute("SELECT variant_id FROM stock_movement GROUP BY variant_id "
                               "ORDER BY count(*) DESC, variant_id LIMIT 1").fetchone()
    if busiest is None:
        raise SystemExit("no movements: grow the books first")
    variant = int(busiest[0])
    return [
        Case("stockMovements", "stockMovements", "", MOVEMENT_FIELDS, "stock_movement",
             "true", {}),
        Case(f"stockMovements(variantId: {variant})", "stockMovements",
             f'variantId: "{ids.encode("ProductVariant", variant)}"', MOVEMENT_FIELDS,
             "stock_movement", f"variant_id = {variant}", {"variant_id": variant}),
        Case("orders", "orders", "", ORDER_FIELDS, "orders", "true", {}),
        Case("orders(statuses: [CANCELED])", "orders", "statuses: [CANCELED]", ORDER_FIELDS,
             "orders", "status = 'CANCELED'", {"statuses": ("CANCELED",)}),
        Case("orders(statuses: [UNFULFILLED]), last page", "orders", "statuses: [UNFULFILLED]",
             ORDER_FIELDS, "orders", "status = 'UNFULFILLED'", {"statuses": ("UNFULFILLED",)},
             last_page=True),
    ]


@dataclass(frozen=True, slots=True)
class Target:
    """A case's page: its `after` cursor and the rows it must show."""

    page: int
    after_id: int | None
    first_id: int | None
    rows: int
    has_next: bool


def targets(db: BenchDatabase, case: Case, pages: int, per_page: int
            ) -> tuple[int, Target, Target]:
    """The matching rows' count, page 1, and page `pages` (the last page, for `last_page`
    cases or when there are fewer)."""
    with db.connection() as conn:
        count = int(conn.execute(f"SELECT count(*) FROM {case.table} WHERE {case.where}")
                    .fetchone()[0])

        def page_at(page: int) -> Target:
            skip = (page - 1) * per_page
            found = [int(r[0]) for r in conn.execute(
                f"SELECT id FROM {case.table} WHERE {case.where} ORDER BY id DESC "
                f"OFFSET {max(skip - 1, 0)} LIMIT 2").fetchall()]
            before: int | None = found.pop(0) if skip and found else None
            return Target(page, before, found[0] if found else None,
                          max(0, min(per_page, count - skip)), count > skip + per_page)

        available = max(1, math.ceil(count / per_page))
        deep = available if case.last_page else min(pages, available)
        return count, page_at(1), page_at(deep)


def fetch(client: Client, case: Case, per_page: int, after: str | None
          ) -> tuple[float, dict[str, Any] | None, str | None]:
    """One request: its time (ms), the connection, or a problem."""
    body = json.dumps({"query": case.query(), "operationName": "BooksPage",
                       "variables": {"first": per_page, "after": after}}).encode()
    started = time.perf_counter()
    status, payload = client.post(body)
    elapsed = (time.perf_counter() - started) * 1000
    try:
        data = json.loads(payload)
    except ValueError:
        return elapsed, None, f"HTTP {status}, not JSON"
    if status != 200 or data.get("errors"):
        return elapsed, None, f"HTTP {status}: {str(data)[:200]}"
    return elapsed, data["data"][case.field], None


def check(connection: dict[str, Any] | None, want: Target) -> str | None:
    """None when the page shows the rows expected, else what is wrong."""
    if connection is None:
        return "no page"
    edges = connection["edges"]
    first = edges[0]["cursor"] if edges else None
    expected = cursor(want.first_id) if want.first_id is not None else None
    if len(edges) != want.rows or first != expected \
            or connection["pageInfo"]["hasNextPage"] != want.has_next:
        return (f"page {want.page}: {len(edges)} rows from {first}, hasNextPage "
                f"{connection['pageInfo']['hasNextPage']}; expected {want.rows} rows from "
                f"{expected}, hasNextPage {want.has_next}")
    return None


def measure(client: Client, case: Case, result: Result, pages: tuple[Target, Target],
            per_page: int, requests: int, warmup: int) -> None:
    """`requests` rounds of page 1 then the deep page, after `warmup` unmeasured ones."""
    for n in range(warmup + requests):
        for want, times in zip(pages, (result.first_ms, result.deep_ms), strict=True):
            after = cursor(want.after_id) if want.after_id is not None else None
            elapsed, connection, problem = fetch(client, case, per_page, after)
            problem = problem or check(connection, want)
            if problem is not None and len(result.problems) < 5:
                result.problems.append(problem)
            if n >= warmup:
                times.append(elapsed)


def walk(client: Client, case: Case, result: Result, deep: Target, per_page: int) -> None:
    """Follow endCursor from page 1 to the deep page; it must arrive at the same cursor."""
    after: str | None = None
    started = time.perf_counter()
    for _ in range(deep.page - 1):
        _, connection, problem = fetch(client, case, per_page, after)
        if connection is None:
            result.problems.append(f"walk: {problem}")
            return
        after = connection["pageInfo"]["endCursor"]
    result.walk_ms = (time.perf_counter() - started) * 1000
    expected = cursor(deep.after_id) if deep.after_id is not None else None
    if after != expected:
        result.problems.append(f"walk: page {deep.page} comes after {after}, "
                               f"the database says {expected}")


def page_statement(db: BenchDatabase, case: Case, per_page: int, before_id: int | None
                   ) -> tuple[str, dict[str, Any]]:
    """The SQL `reads.page` sends for the page, with its parameters."""
    from domain import models
    from domain.services import reads

    model = {"stock_movement": models.StockMovement, "orders": models.Order}[case.table]
    filters = dict(case.filters)
    if "statuses" in filters:
        filters["statuses"] = tuple(models.OrderStatus(s) for s in filters["statuses"])
    query = reads.PageQuery(first=per_page, before_id=before_id, **filters)
    return reads.page_text(db.kind, model, query)


def explain(db: BenchDatabase, statement: str, parameters: dict[str, Any], *,
            generic: bool) -> Plan:
    """EXPLAIN (ANALYZE, BUFFERS) of the statement with these values: planned for them
    (a custom plan), or as a prepared statement planned once for any (`generic`)."""
    import psycopg

    options = "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) "
    with db.connection() as conn:
        cur = psycopg.ClientCursor(conn)
        if not generic:
            cur.execute(options + statement, parameters)
        else:
            names: list[str] = []

            def number(match: re.Match[str]) -> str:
                if match.group(1) not in names:
                    names.append(match.group(1))
                return f"${names.index(match.group(1)) + 1}"

            cur.execute("PREPARE books_page AS " + re.sub(r"%\((\w+)\)s", number, statement))
            cur.execute("SET plan_cache_mode = force_generic_plan")
            marks = ", ".join(["%s"] * len(names))
            cur.execute(f"{options}EXECUTE books_page({marks})",
                        [parameters[n] for n in names])
        row = cur.fetchone()
        assert row is not None
        found = row[0][0]
        conn.rollback()
    scans: list[str] = []
    filtered = 0

    def visit(node: dict[str, Any]) -> None:
        nonlocal filtered
        if "Scan" in node["Node Type"] or node["Node Type"] == "Sort":
            kind = node["Node Type"] + (" Backward" if node.get("Scan Direction")
                                        == "Backward" else "")
            on = node.get("Index Name") or node.get("Relation Name") or ""
            scans.append(f"{kind} {on}".strip())
        filtered += int(node.get("Rows Removed by Filter", 0))
        for child in node.get("Plans", []):
            visit(child)

    top = found["Plan"]
    visit(top)
    buffers = int(top.get("Shared Hit Blocks", 0)) + int(top.get("Shared Read Blocks", 0))
    return Plan(scans, float(found["Execution Time"]), buffers, filtered)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.paging", description=__doc__)
    p.add_argument("--books-scale", type=float, default=1.0,
                   help="1: 100,000 variants, 1M orders, 10M movements (bench/books.py)")
    p.add_argument("--variants", type=int, default=10_000, help="seeded bench variants")
    p.add_argument("--pages", type=int, default=1_000, help="the deep page")
    p.add_argument("--per-page", type=int, default=50, help="`first`")
    p.add_argument("--requests", type=int, default=21,
                   help="measured requests of each page (median)")
    p.add_argument("--warmup", type=int, default=3, help="unmeasured requests of each page")
    p.add_argument("--workers", type=int, default=2, help="stockyard serve --workers")
    p.add_argument("--pg-database", default=PG_NAME,
                   help="name of the throw-away database on the PostgreSQL server")
    p.add_argument("--keep-db", action="store_true", help="do not drop the database")
    p.add_argument("--reuse", action="store_true",
                   help="use the database a --keep-db run left (migrated to head), "
                        "without building it again")
    p.add_argument("--walk", action="store_true",
                   help="also follow endCursor page by page to the deep page")
    p.add_argument("--no-explain", action="store_true", help="skip EXPLAIN ANALYZE")
    args = p.parse_args(argv)
    if min(args.pages, args.per_page, args.requests) < 1 or args.warmup < 0:
        p.error("--pages, --per-page and --requests must be positive")
    return args


def run(args: argparse.Namespace, db: BenchDatabase) -> int:
    meta: dict[str, Any] = {
        "database": db.kind, "books_scale": args.books_scale, "pages": args.pages,
        "per_page": args.per_page, "requests": args.requests, "workers": args.workers,
        "cpus": os.cpu_count(), "started_at": datetime.now(UTC).isoformat(timespec="seconds")}
    if args.reuse:
        migrate(db)
        token, _ = create_admin_token(db)
    else:
        db.create()
        migrate(db)
        token = seed(db, args.variants, 300).token
        meta["books"] = grow_books(db, **scaled(args.books_scale)).to_json()
    results: list[Result] = []
    log = VAR / f"server-paging-{db.kind}.log"
    found = [(case, *targets(db, case, args.pages, args.per_page)) for case in cases(db)]
    with Server(db.url, args.workers, log) as server:
        say(f"server up on {server.url} (stderr: {log})")
        client = Client(HOST, server.port, token)
        try:
            for case, rows, first, deep in found:
                result = Result(case.name, rows, deep.page)
                say(f"{case.name}: {rows:,} rows, page 1 and page {deep.page}")
                measure(client, case, result, (first, deep), args.per_page, args.requests,
                        args.warmup)
                if args.walk:
                    walk(client, case, result, deep, args.per_page)
                results.append(result)
        finally:
            client.close()
    if not args.no_explain and db.kind == "postgresql":
        for (case, _, _, deep), result in zip(found, results, strict=True):
            for page, before in ((1, None), (deep.page, deep.after_id)):
                statement, parameters = page_statement(db, case, args.per_page, before)
                for generic in (False, True):
                    key = f"page {page} {'generic' if generic else 'custom'}"
                    result.plans[key] = str(explain(db, statement, parameters,
                                                    generic=generic))
    print(render(results, args.per_page), flush=True)
    out = VAR / f"paging-{db.kind}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "results": [r.to_json() for r in results]},
                              indent=2) + "\n")
    print(f"\nJSON: {out}")
    return 1 if any(r.problems for r in results) else 0


def render(results: list[Result], per_page: int) -> str:
    head = (f"{'case':<44} {'rows':>11} {'page':>5} {'page 1 ms':>10} {'page N ms':>10} "
            f"{'N/1':>5}")
    lines = [f"paging, first: {per_page}; medians over the requests", head, "-" * len(head)]
    for r in results:
        lines.append(f"{r.case:<44} {r.rows:>11,} {r.page:>5} "
                     f"{statistics.median(r.first_ms):>10.2f} "
                     f"{statistics.median(r.deep_ms):>10.2f} {r.ratio:>5.2f}")
    for r in results:
        if r.walk_ms is not None:
            lines.append(f"{r.case}: walked to page {r.page} in {r.walk_ms / 1000:.1f} s")
        for problem in r.problems:
            lines.append(f"{r.case}: PROBLEM {problem}")
    if any(r.plans for r in results):
        lines += ["", "plans (EXPLAIN ANALYZE; custom: planned for the values, generic: "
                      "planned once, as a prepared statement may be from its 6th run)"]
        for r in results:
            lines.append(r.case)
            lines += [f"  {key:<20} {plan}" for key, plan in r.plans.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    db = BenchDatabase.choose(os.environ.get("STOCKYARD_DATABASE_URL"), args.pg_database)
    if db.kind != "postgresql":
        print(f"bench.paging: {REFUSED}", file=sys.stderr)
        return 2
    return run_then_drop(lambda: run(args, db), db, args.keep_db)


if __name__ == "__main__":
    sys.exit(main())
