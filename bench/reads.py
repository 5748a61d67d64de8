"""Read workloads through the real server, and the raw SQL read (README: "Read workloads").

`prepare` readies the seeded database (tokens, low-stock thresholds, ledger rows, all
set-based) and reads what every answer must say; `run_read_workload` drives one workload
from its own process (keep-alive clients as for the orders) and checks every answer;
`run_raw_availability` is the availability read as plain SQL (pgbench on PostgreSQL,
threads on sqlite3 connections on SQLite).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench import pgbench
from bench.bulk import graphql_answer
from bench.cpu import own_cpu_seconds
from bench.database import BenchDatabase
from bench.http_client import HttpxPoster, Poster, RawPoster, httpx_client
from bench.load import REQUEST_TIMEOUT, Target, run_loop
from bench.raw_sql import window_threads
from bench.stats import Tally, WorkloadResult
from bench.workload import Timing

COUNTRY = "DE"  # the bench seed's one zone
SKUS_PER_REQUEST = 5
PAGE = 50  # dashboards' `first`
NODE_MIX = (("ProductVariant", 8), ("Product", 4), ("Warehouse", 2), ("Stock", 6))
NODE_IDS = sum(n for _, n in NODE_MIX)  # 20
VARIANTS_PER_PRODUCT = 10
# dashboards: every 10th stock of the pool gets a threshold above its available (flagged),
# every other 5th one below it (not flagged); the rest none
LOW_STOCK_EVERY = 10
# the ledger's dashboard: this many variants of the pool get MOVEMENTS_PER_STOCK movements
# in each of their stocks (recounts of +1 and -1 that leave the stock as it was)
MOVEMENT_VARIANTS = 100
MOVEMENTS_PER_STOCK = 20
RAW = "raw-availability"
TRIVIAL = "trivial"
PROBLEMS_KEPT = 5


@dataclass(frozen=True, slots=True)
class ReadData:
    """Tokens, the pools requests draw from and what each answer must hold (picklable: the
    load generator gets a copy)."""

    tokens: dict[str, str]  # role -> token: storefront, seller (seller 1), admin
    variants: tuple[int, ...]  # the spread pool
    sku_of: dict[int, str]  # spread variant pk -> SKU
    available: dict[str, int]  # SKU -> quantityAvailable(country: DE)
    products: tuple[int, ...]  # the pool's products with VARIANTS_PER_PRODUCT variants
    product_variants: dict[int, tuple[int, ...]]  # product pk -> its variant pks, ascending
    low_stock_page: tuple[tuple[int, str], ...]  # first page: (stock pk, its variant's SKU)
    low_stock_more: bool  # more flagged stocks than one page
    movement_variants: tuple[int, ...]  # variants with a full ledger page
    movement_pages: dict[int, tuple[int, ...]]  # variant pk -> its PAGE newest movement pks
    movement_more: dict[int, bool]
    warehouses: tuple[int, ...]
    stock_ids: tuple[int, ...]  # the pool's stocks


Expect = Any
Build = Callable[[ReadData, random.Random], tuple[dict[str, Any] | None, Expect]]
Check = Callable[[ReadData, dict[str, Any], Expect], str | None]


@dataclass(frozen=True, slots=True)
class ReadSpec:
    """One read workload: its token, query, how a request is drawn and its answer judged
    (`check` gets `data` of the answer and returns a failure code or None)."""

    name: str
    role: str
    query: str
    build: Build
    check: Check
    operation: str | None = None


def _gid(type_name: str, pk: int) -> str:
    from api import ids

    return ids.encode(type_name, pk)


def _no_variables(data: ReadData, rng: random.Random) -> tuple[None, None]:
    return None, None


def _check_trivial(data: ReadData, got: dict[str, Any], expect: None) -> str | None:
    return None if got == {"__typename": "Query"} else "WRONG_ANSWER"


AVAILABILITY = ("query BenchAvailability($skus: [String!]) { productVariants(skus: $skus, "
                f"first: {SKUS_PER_REQUEST}) {{ edges {{ node {{ sku "
                f"quantityAvailable(country: \"{COUNTRY}\") }} }} }} }}")


def _build_availability(data: ReadData, rng: random.Random
                        ) -> tuple[dict[str, Any], list[str]]:
    skus = [data.sku_of[v] for v in rng.sample(data.variants, SKUS_PER_REQUEST)]
    return {"skus": skus}, skus


def _check_availability(data: ReadData, got: dict[str, Any], skus: list[str]) -> str | None:
    edges = got["productVariants"]["edges"]
    figures = {e["node"]["sku"]: e["node"]["quantityAvailable"] for e in edges}
    if len(edges) != len(skus) or figures.keys() != set(skus):
        return "WRONG_EDGES"
    if any(figures[sku] != data.available[sku] for sku in skus):
        return "WRONG_FIGURE"
    return None


PRODUCT_PAGE = ("query BenchProductPage($id: ID!) { node(id: $id) { __typename id ... on "
                f"Product {{ name variants {{ id sku quantityAvailable(country: \"{COUNTRY}\") "
                "} } } }")


def _build_product_page(data: ReadData, rng: random.Random
                        ) -> tuple[dict[str, Any], tuple[str, int]]:
    product = rng.choice(data.products)
    gid = _gid("Product", product)
    return {"id": gid}, (gid, product)


def _check_product_page(data: ReadData, got: dict[str, Any], expect: tuple[str, int]
                        ) -> str | None:
    gid, product = expect
    node = got["node"]
    if node is None or node["__typename"] != "Product" or node["id"] != gid:
        return "WRONG_NODE"
    variants = node["variants"]
    want = data.product_variants[product]
    if sorted(v["id"] for v in variants) != sorted(_gid("ProductVariant", v) for v in want):
        return "WRONG_VARIANTS"
    skus = {v["sku"]: v["quantityAvailable"] for v in variants}
    if skus != {data.sku_of[v]: data.available[data.sku_of[v]] for v in want}:
        return "WRONG_FIGURE"
    return None


DASHBOARD_STOCKS = (f"query BenchLowStock {{ stocks(belowThreshold: true, first: {PAGE}) {{ "
                    "edges { node { id quantity quantityAllocated quantityAvailable "
                    "lowStockThreshold variant { sku } } } pageInfo { hasNextPage endCursor } "
                    "} }")


def _check_dashboard_stocks(data: ReadData, got: dict[str, Any], expect: None) -> str | None:
    page = got["stocks"]
    nodes = [e["node"] for e in page["edges"]]
    want = data.low_stock_page
    if [n["id"] for n in nodes] != [_gid("Stock", pk) for pk, _ in want]:
        return "WRONG_STOCKS"
    if [n["variant"]["sku"] for n in nodes] != [sku for _, sku in want]:
        return "WRONG_SKUS"
    if any(n["quantityAvailable"] >= n["lowStockThreshold"] for n in nodes):
        return "NOT_BELOW_THRESHOLD"
    if page["pageInfo"]["hasNextPage"] != data.low_stock_more:
        return "WRONG_PAGE_INFO"
    return None


DASHBOARD_MOVEMENTS = ("query BenchMovements($variantId: ID!) { stockMovements(variantId: "
                       f"$variantId, first: {PAGE}) {{ edges {{ node {{ id type quantityChange "
                       "allocatedChange quantityAfter allocatedAfter createdAt warehouse "
                       "{ name } } } pageInfo { hasNextPage endCursor } } }")


def _build_movements(data: ReadData, rng: random.Random) -> tuple[dict[str, Any], int]:
    variant = rng.choice(data.movement_variants)
    return {"variantId": _gid("ProductVariant", variant)}, variant


def _check_movements(data: ReadData, got: dict[str, Any], variant: int) -> str | None:
    page = got["stockMovements"]
    if ([e["node"]["id"] for e in page["edges"]]
            != [_gid("StockMovement", pk) for pk in data.movement_pages[variant]]):
        return "WRONG_MOVEMENTS"
    if page["pageInfo"]["hasNextPage"] != data.movement_more[variant]:
        return "WRONG_PAGE_INFO"
    return None


_NODE_FIELDS = ("__typename id ... on ProductVariant { sku } ... on Product { name } "
                "... on Warehouse { name } ... on Stock { quantityAvailable }")
NODES = f"query BenchNodes($ids: [ID!]!) {{ nodes(ids: $ids) {{ {_NODE_FIELDS} }} }}"
NODE = f"query BenchNode($id: ID!) {{ node(id: $id) {{ {_NODE_FIELDS} }} }}"


def _pick_nodes(data: ReadData, rng: random.Random, mix: tuple[tuple[str, int], ...]
                ) -> list[tuple[str, int]]:
    pools: dict[str, tuple[int, ...]] = {
        "ProductVariant": data.variants, "Product": data.products,
        "Warehouse": data.warehouses, "Stock": data.stock_ids}
    picked = [(type_name, pk) for type_name, n in mix
              for pk in rng.sample(pools[type_name], min(n, len(pools[type_name])))]
    rng.shuffle(picked)
    return picked


def _node_problem(data: ReadData, node: dict[str, Any] | None, type_name: str, pk: int
                  ) -> str | None:
    if node is None or node["__typename"] != type_name or node["id"] != _gid(type_name, pk):
        return "WRONG_NODE"
    if type_name == "ProductVariant" and node["sku"] != data.sku_of[pk]:
        return "WRONG_SKUS"
    return None


def _build_nodes(data: ReadData, rng: random.Random
                 ) -> tuple[dict[str, Any], list[tuple[str, int]]]:
    picked = _pick_nodes(data, rng, NODE_MIX)
    return {"ids": [_gid(t, pk) for t, pk in picked]}, picked


def _check_nodes(data: ReadData, got: dict[str, Any], picked: list[tuple[str, int]]
                 ) -> str | None:
    nodes = got["nodes"]
    if len(nodes) != len(picked):
        return "WRONG_NODES"
    for node, (type_name, pk) in zip(nodes, picked, strict=True):
        if (problem := _node_problem(data, node, type_name, pk)) is not None:
            return problem
    return None


def _build_node(data: ReadData, rng: random.Random) -> tuple[dict[str, Any], tuple[str, int]]:
    # one id, its type drawn with the weights of the `nodes` mix
    type_name = rng.choices([t for t, _ in NODE_MIX], [n for _, n in NODE_MIX])[0]
    picked = _pick_nodes(data, rng, ((type_name, 1),))[0]
    return {"id": _gid(*picked)}, picked


def _check_node(data: ReadData, got: dict[str, Any], picked: tuple[str, int]) -> str | None:
    return _node_problem(data, got["node"], *picked)


SPECS: dict[str, ReadSpec] = {s.name: s for s in (
    ReadSpec(TRIVIAL, "storefront", "{ __typename }", _no_variables, _check_trivial),
    ReadSpec("availability", "storefront", AVAILABILITY, _build_availability,
             _check_availability, "BenchAvailability"),
    ReadSpec("product-page", "storefront", PRODUCT_PAGE, _build_product_page,
             _check_product_page, "BenchProductPage"),
    ReadSpec("dashboard-stocks", "seller", DASHBOARD_STOCKS, _no_variables,
             _check_dashboard_stocks, "BenchLowStock"),
    ReadSpec("dashboard-movements", "seller", DASHBOARD_MOVEMENTS, _build_movements,
             _check_movements, "BenchMovements"),
    ReadSpec("nodes", "admin", NODES, _build_nodes, _check_nodes, "BenchNodes"),
    ReadSpec("node", "admin", NODE, _build_node, _check_node, "BenchNode"),
)}
WORKLOADS = tuple(SPECS)


def request(spec: ReadSpec, data: ReadData, rng: random.Random) -> tuple[bytes, Expect]:
    """One request's body (constant query text, the draw in `variables`) and what its
    answer must hold."""
    variables, expect = spec.build(data, rng)
    body: dict[str, Any] = {"query": spec.query}
    if variables is not None:
        body["variables"] = variables
    if spec.operation is not None:
        body["operationName"] = spec.operation
    return json.dumps(body).encode(), expect


def judge(spec: ReadSpec, data: ReadData, status: int, payload: bytes, expect: Expect
          ) -> str | None:
    """None when the answer is right, else a failure code: HTTP_<status>, BAD_JSON,
    GRAPHQL_ERROR (top-level errors), MALFORMED (not the shape asked for), or the check's
    own (WRONG_...)."""
    answer = graphql_answer(status, payload)
    if isinstance(answer, str):
        return answer
    got = answer.get("data")
    if not isinstance(got, dict):
        return "MALFORMED"
    try:
        return spec.check(data, got, expect)
    except (KeyError, TypeError, IndexError, AttributeError, ValueError):
        return "MALFORMED"


async def _client(poster: Poster, spec: ReadSpec, data: ReadData, tally: Tally, seed: int,
                  problems: list[str]) -> None:
    rng = random.Random(seed)
    try:
        while time.perf_counter() < tally.window[1]:
            body, expect = request(spec, data, rng)
            start = time.perf_counter()
            payload = b""
            try:
                status, payload = await asyncio.wait_for(poster.post(body), REQUEST_TIMEOUT)
                code = judge(spec, data, status, payload, expect)
            except Exception as exc:  # transport errors of either client, timeouts
                code = f"CLIENT_{type(exc).__name__}"
            tally.record(start, time.perf_counter(), code)
            if code is not None and len(problems) < PROBLEMS_KEPT:
                problems.append(f"{code}: {body[:160]!r} -> {payload[:300]!r}")
            if tally.given_up:
                return
    finally:
        await poster.close()


async def _run(target: Target, spec: ReadSpec, data: ReadData, timing: Timing
               ) -> WorkloadResult:
    t0 = time.perf_counter() + timing.warmup
    t1 = t0 + timing.seconds
    shared = httpx_client(target.host, target.port, target.token, timing.clients) \
        if target.client == "httpx" else None
    posters: list[Poster] = [
        HttpxPoster(shared) if shared is not None
        else RawPoster(target.host, target.port, target.token) for _ in range(timing.clients)]
    tallies = [Tally((t0, t1)) for _ in posters]
    problems: list[str] = []
    tasks = [asyncio.create_task(_client(p, spec, data, t, seed=i, problems=problems))
             for i, (p, t) in enumerate(zip(posters, tallies, strict=True))]
    await asyncio.sleep(max(0.0, t0 - time.perf_counter()))
    cpu_start = own_cpu_seconds()
    await asyncio.sleep(max(0.0, t1 - time.perf_counter()))
    cpu_used = own_cpu_seconds() - cpu_start
    await asyncio.gather(*tasks)
    if shared is not None:
        await shared.aclose()
    result = WorkloadResult.merge(spec.name, "graphql", timing.seconds, tallies,
                                  client_cpu=cpu_used / timing.seconds)
    result.extra.update(client=target.client, role=spec.role, problems=problems)
    return result


def run_read_workload(target: Target, name: str, data: ReadData, timing: Timing
                      ) -> WorkloadResult:
    """Drive `timing.clients` keep-alive clients with workload `name` (meant for a child
    process: `bench.child.run_in_child`). Only answers that pass its check are `ok`."""
    spec = SPECS[name]
    target = dataclasses.replace(target, token=data.tokens[spec.role])
    return run_loop(_run(target, spec, data, timing))


SERVES = ("EXISTS (SELECT 1 FROM warehouse_shipping_zone wz JOIN shipping_zone_country c "
          "ON c.zone_id = wz.zone_id WHERE wz.warehouse_id = w.id AND c.country = '{country}')")
AVAILABLE = ("SUM(CASE WHEN s.quantity > s.quantity_allocated "
             "THEN s.quantity - s.quantity_allocated ELSE 0 END)")
# the storefront's availability read as one statement, from SKUs to figures: the joins the
# app makes (domain/services/reads.py: the variants by SKU, then the sum of available over
# the stocks whose warehouse is the variant's seller's and serves the country)
RAW_AVAILABILITY = (
    f"SELECT pv.sku, {AVAILABLE} FROM product_variant pv "
    "JOIN product p ON p.id = pv.product_id "
    "JOIN stock s ON s.variant_id = pv.id "
    "JOIN warehouse w ON w.id = s.warehouse_id AND w.seller_id = p.seller_id "
    f"WHERE pv.sku IN ({{skus}}) AND {SERVES.format(country=COUNTRY)} GROUP BY pv.sku")
EXPECTED_AVAILABLE = (
    f"SELECT pv.id, pv.sku, {AVAILABLE} FROM product_variant pv "
    "JOIN product p ON p.id = pv.product_id "
    "JOIN stock s ON s.variant_id = pv.id "
    "JOIN warehouse w ON w.id = s.warehouse_id AND w.seller_id = p.seller_id "
    f"WHERE pv.id <= ? AND {SERVES.format(country=COUNTRY)} GROUP BY pv.id, pv.sku")
THRESHOLDS = (
    "UPDATE stock SET low_stock_threshold = CASE WHEN id % {every} = 0 "
    "THEN quantity - quantity_allocated + 100 ELSE 10 END "
    "WHERE id % {half} = 0 AND variant_id <= ?")
MOVEMENTS = (
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {per_stock}) "
    "INSERT INTO stock_movement (stock_id, variant_id, warehouse_id, type, quantity_change, "
    "allocated_change, quantity_after, allocated_after, reason, order_id, actor) "
    "SELECT s.id, s.variant_id, s.warehouse_id, 'ADJUSTMENT', "
    "CASE WHEN n.i % 2 = 1 THEN 1 ELSE -1 END, 0, s.quantity + n.i % 2, "
    "s.quantity_allocated, 'bench recount', NULL, ? FROM n CROSS JOIN stock s "
    "WHERE s.variant_id IN ({variants}) ORDER BY n.i, s.id")
LOW_STOCK_PAGE = (
    "SELECT s.id, pv.sku FROM stock s JOIN product_variant pv ON pv.id = s.variant_id "
    "WHERE s.low_stock_threshold IS NOT NULL "
    "AND s.quantity - s.quantity_allocated < s.low_stock_threshold "
    "AND s.warehouse_id IN (SELECT id FROM warehouse WHERE seller_id = ?) "
    "ORDER BY s.id DESC LIMIT ?")
MOVEMENT_PAGES = (
    "SELECT variant_id, id, n FROM (SELECT variant_id, id, "
    "ROW_NUMBER() OVER (PARTITION BY variant_id ORDER BY id DESC) AS rn, "
    "COUNT(*) OVER (PARTITION BY variant_id) AS n "
    "FROM stock_movement WHERE variant_id IN ({variants})) x WHERE rn <= ? ORDER BY variant_id, rn")
SELLER = 1  # the bench seed's seller: the dashboards' token


def create_token(db: BenchDatabase, role: str, seller_id: int | None = None) -> str:
    """A token of `role`, created as `stockyard token create` does."""
    from domain.db import make_engine, session_factories
    from domain.models import Role
    from domain.services.tokens import create_token as create
    from domain.settings import Settings
    from domain.uow import UnitOfWork

    engine = make_engine(Settings(database_url=db.url))
    try:
        writer, _ = session_factories(engine)
        return create(UnitOfWork(writer), Role(role), seller_id)
    finally:
        engine.dispose()


def _q(db: BenchDatabase, sql: str) -> str:
    """`db.q`, with the modulo operator kept from psycopg's placeholders."""
    return db.q(sql.replace("%", "%%") if db.kind == "postgresql" else sql)


def movement_variants(variants: int) -> tuple[int, ...]:
    """The pool's variants that get a ledger page: MOVEMENT_VARIANTS spread evenly."""
    step = max(1, variants // MOVEMENT_VARIANTS)
    return tuple(range(1, variants + 1, step))[:MOVEMENT_VARIANTS]


def prepare(db: BenchDatabase, variants: int, admin_token: str, actor: str) -> ReadData:
    """Ready the seeded database for the reads (set-based, not through the API: thresholds
    on a share of the pool's stocks, ledger rows for the dashboard's variants; tokens) and
    read from SQL what every answer must say. The reads change nothing, so it holds for
    the whole run."""
    ledger_variants = movement_variants(variants)
    marks = ", ".join(str(v) for v in ledger_variants)
    with db.connection() as conn:
        db.begin_writes(conn)
        conn.execute(_q(db, THRESHOLDS.format(every=LOW_STOCK_EVERY,
                                              half=LOW_STOCK_EVERY // 2)), (variants,))
        conn.execute(_q(db, MOVEMENTS.format(per_stock=MOVEMENTS_PER_STOCK, variants=marks)),
                     (actor,))
        db.commit_and_analyze(conn, ("stock", "stock_movement"))
        rows = conn.execute(db.q(EXPECTED_AVAILABLE), (variants,)).fetchall()
        sku_of = {int(pk): str(sku) for pk, sku, _ in rows}
        available = {str(sku): int(total) for _, sku, total in rows}
        product_variants: dict[int, list[int]] = {}
        for product, pk in conn.execute(db.q(
                "SELECT product_id, id FROM product_variant WHERE id <= ? ORDER BY id"),
                (variants,)).fetchall():
            product_variants.setdefault(int(product), []).append(int(pk))
        page = conn.execute(db.q(LOW_STOCK_PAGE), (SELLER, PAGE + 1)).fetchall()
        pages: dict[int, list[int]] = {}
        counts: dict[int, int] = {}
        for vid, mid, n in conn.execute(db.q(MOVEMENT_PAGES.format(variants=marks)),
                                        (PAGE,)).fetchall():
            pages.setdefault(int(vid), []).append(int(mid))
            counts[int(vid)] = int(n)
        warehouses = tuple(int(r[0]) for r in conn.execute(
            db.q("SELECT id FROM warehouse WHERE seller_id = ? ORDER BY id"),
            (SELLER,)).fetchall())
        stock_ids = tuple(int(r[0]) for r in conn.execute(
            db.q("SELECT id FROM stock WHERE variant_id <= ? ORDER BY id"),
            (variants,)).fetchall())
    tokens = {"admin": admin_token, "storefront": create_token(db, "storefront"),
              "seller": create_token(db, "seller", SELLER)}
    full_products = {p: tuple(v) for p, v in product_variants.items()
                     if len(v) == VARIANTS_PER_PRODUCT}
    full_pages = {v: tuple(ids) for v, ids in pages.items() if len(ids) == PAGE}
    return ReadData(
        tokens=tokens, variants=tuple(sku_of), sku_of=sku_of, available=available,
        products=tuple(full_products), product_variants=full_products,
        low_stock_page=tuple((int(pk), str(sku)) for pk, sku in page[:PAGE]),
        low_stock_more=len(page) > PAGE, movement_variants=tuple(full_pages),
        movement_pages=full_pages, movement_more={v: counts[v] > PAGE for v in full_pages},
        warehouses=warehouses, stock_ids=stock_ids)


def _sku_bands(pool: int) -> list[tuple[int, int]]:
    """SKUS_PER_REQUEST disjoint ranges of the pool: one variant from each is 5 distinct."""
    band = pool // SKUS_PER_REQUEST
    return [(i * band + 1, (i + 1) * band) for i in range(SKUS_PER_REQUEST)]


def pgbench_script(data: ReadData) -> str:
    """RAW_AVAILABILITY with 5 random distinct SKUs of the pool (one per fifth), spelled
    as the seed spells them; `raw_check` confirms the spelling and the figures first."""
    bands = _sku_bands(len(data.sku_of))
    sets = "".join(f"\\set v{i} random({lo}, {hi})\n" for i, (lo, hi) in enumerate(bands))
    skus = ", ".join(f"'BENCH-' || lpad(:v{i}::text, 6, '0')" for i in range(len(bands)))
    return sets + RAW_AVAILABILITY.format(skus=skus) + ";\n"


def raw_check(db: BenchDatabase, data: ReadData) -> str | None:
    """Run the raw read on the ends of the bands, with the SKUs spelled as the pgbench
    script spells them on PostgreSQL, and compare with the expected figures: None when
    right, else the problem."""
    bands = _sku_bands(len(data.sku_of))
    skus = ", ".join("'BENCH-' || lpad(CAST(? AS text), 6, '0')" if db.kind == "postgresql"
                     else "?" for _ in bands)
    with db.connection() as conn:
        for pick in (0, 1):
            pks = [band[pick] for band in bands]
            params = [str(pk) if db.kind == "postgresql" else data.sku_of[pk] for pk in pks]
            rows = dict(conn.execute(db.q(RAW_AVAILABILITY.format(skus=skus)),
                                     params).fetchall())
            want = {data.sku_of[pk]: data.available[data.sku_of[pk]] for pk in pks}
            if {str(k): int(v) for k, v in rows.items()} != want:
                return f"raw read of variants {pks} gave {rows}, expected {want}"
    return None


def run_raw_availability(db: BenchDatabase, data: ReadData, timing: Timing) -> WorkloadResult:
    """The availability read as plain SQL: pgbench (PostgreSQL) or threads (SQLite)."""
    problem = raw_check(db, data)
    if db.kind == "postgresql":
        script = pgbench_script(data)
        warmup = None
        if timing.warmup >= 0.5:
            warmup = pgbench.run(db.url, script, timing.clients, timing.warmup,
                                 log_latencies=False)
        measured = pgbench.run(db.url, script, timing.clients, timing.seconds,
                               expected_rate=50_000.0)
        result = pgbench.result(RAW, measured, warmup)
    else:
        result = _sqlite_raw(db, data, timing)
    problems = list(result.extra.get("pgbench_errors", []))
    if problem is not None:
        result.failures["WRONG_FIGURE"] = result.failures.get("WRONG_FIGURE", 0) + 1
        problems.append(problem)
    result.extra["problems"] = problems
    return result


def _sqlite_raw(db: BenchDatabase, data: ReadData, timing: Timing) -> WorkloadResult:
    """`timing.clients` threads, one sqlite3 connection each, for the warm-up and window;
    every answer checked (5 rows, the expected figures)."""
    sql = RAW_AVAILABILITY.format(skus=", ".join("?" * SKUS_PER_REQUEST))
    conns = [db.connect() for _ in range(timing.clients)]
    ready = threading.Barrier(timing.clients + 1)
    t0 = time.perf_counter() + timing.warmup + 0.2
    tallies = [Tally((t0, t0 + timing.seconds)) for _ in conns]

    def client(conn: Any, tally: Tally, seed: int) -> None:
        rng = random.Random(seed)
        ready.wait()
        try:
            while time.perf_counter() < tally.window[1]:
                skus = [data.sku_of[v] for v in rng.sample(data.variants, SKUS_PER_REQUEST)]
                start = time.perf_counter()
                try:
                    rows = dict(conn.execute(sql, skus).fetchall())
                    code = None if rows == {s: data.available[s] for s in skus} \
                        else "WRONG_FIGURE"
                except Exception as exc:
                    code = f"SQL_{type(exc).__name__}"
                tally.record(start, time.perf_counter(), code)
                if tally.given_up:
                    return
        finally:
            conn.close()

    cpu_used = window_threads(
        [functools.partial(client, c, t, i)
         for i, (c, t) in enumerate(zip(conns, tallies, strict=True))],
        ready, (t0, t0 + timing.seconds))
    return WorkloadResult.merge(RAW, "sqlite3", timing.seconds, tallies,
                                client_cpu=cpu_used / timing.seconds)
