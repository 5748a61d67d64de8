"""Big books: a year of trade added to a freshly seeded PostgreSQL bench database with
set-based SQL (README: "Big books"), so that order creation, the reads and paging are
measured against 10 million movements, 1 million orders and 100,000 more variants.

Everything is derived from hashes of row numbers, so a run is reproducible and every
table agrees with the others: the books' stocks hold exactly the live allocations of the
UNFULFILLED orders (the bench's integrity checks), and their ledger sums to their counters
(`stockyard check`), each movement carrying the levels after it. Movement ids and
`created_at` grow together, over the year that ends a minute before the build.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.database import BenchDatabase
from bench.progress import say

VARIANTS = 100_000
ORDERS = 1_000_000
MOVEMENTS = 10_000_000
VARIANTS_PER_PRODUCT = 10
YEAR = timedelta(days=365)
# Time is `movements` slots of 16 ticks. An order's slot holds its lines' allocations
# (ticks 0-2: at most 3 lines), the releases of earlier orders' lines, by delay class (3-11),
# and at most one movement of no order (12); ids follow the ticks.
TICKS_PER_SLOT = 16
# the delay between an order and its release (fulfillment, or cancellation: class 0), in
# days, and each class's share of the orders; the newest orders, whose release would fall
# after the build, stay UNFULFILLED and hold their allocations
DELAY_DAYS = (0.25, 2.0, 21.0)
DELAY_SHARES = (0.40, 0.55, 0.05)
CANCELED_SHARE = 0.06
# a movement's kind indexes both: 0 a stock's opening, 1-3 an order line's allocation,
# fulfillment, cancellation, 4-7 no order's
TYPES = ("STOCK_UPDATE", "ALLOCATION", "FULFILLMENT", "DEALLOCATION", "PURCHASE_RECEIVING",
         "STOCK_UPDATE", "ADJUSTMENT", "FEED_IMPORT")
REASONS = ("opening stock", "order created", "order fulfilled", "order canceled",
           "goods received", "stock level set", "recount", "supplier feed")
GROWN_TABLES = ("product", "product_variant", "stock", "orders", "order_line", "allocation",
                "fulfillment", "fulfillment_line", "stock_movement", "relay_position")
# rebuilt after the load (a sorted build instead of 10 million scattered inserts)
REINDEXED_TABLES = ("orders", "order_line", "allocation", "fulfillment", "fulfillment_line",
                    "stock_movement")


REFUSED = ("the big books need PostgreSQL (STOCKYARD_DATABASE_URL=postgresql://...): they are "
           "built with generate_series, hash functions and window functions; SQLite is not "
           "supported")


class BooksUnsupported(Exception):
    """The big books are built with PostgreSQL's set-returning functions and windows."""


@dataclass(frozen=True, slots=True)
class Books:
    """What the build added, the tables' sizes after it, and how long it took."""

    variants: int
    products: int
    stocks: int
    orders: int
    order_lines: int
    allocations: int
    fulfillments: int
    fulfillment_lines: int
    movements: int
    unfulfilled_orders: int
    canceled_orders: int
    totals: dict[str, int]
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class _Plan:
    """The figures the statements take as parameters."""

    nv: int
    orders: int
    movements: int
    warehouses: list[int]
    seller: int
    country: str
    token: int | None
    actor: str
    start: datetime
    tick_seconds: float
    p0: int
    v0: int
    s0: int
    o0: int
    l0: int
    a0: int
    f0: int
    fl0: int
    m0: int

    @property
    def delays(self) -> list[int]:
        """Each class's delay in orders (the orders placed in that many days)."""
        per_day = self.orders / YEAR.days
        return [max(1, math.ceil(days * per_day)) for days in DELAY_DAYS]

    def params(self, **more: object) -> dict[str, object]:
        return {
            "nv": self.nv, "nw": len(self.warehouses), "o": self.orders,
            "m": self.movements, "ticks": TICKS_PER_SLOT, "warehouses": self.warehouses,
            "seller": self.seller,
            "country": self.country, "token": self.token, "actor": self.actor,
            "start": self.start, "tick": self.tick_seconds, "p0": self.p0, "v0": self.v0,
            "s0": self.s0, "o0": self.o0, "l0": self.l0, "a0": self.a0, "f0": self.f0,
            "fl0": self.fl0, "m0": self.m0, "d": self.delays, "shares": list(DELAY_SHARES),
            "canceled": CANCELED_SHARE, "types": list(TYPES), "reasons": list(REASONS),
            **more}


# x's uniform number in [0, 1) for a seed: 53 bits of a 64-bit hash (an inlined SQL function)
_RANDOM = """
CREATE FUNCTION pg_temp.rnd(x bigint, seed bigint) RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT (hashint8extended(x, seed) & 9007199254740991)::double precision
             / 9007199254740992.0 $$
"""

_CATALOG = (
    """INSERT INTO product (id, seller_id, name)
       SELECT %(p0)s + p, %(seller)s, 'Books product ' || p
       FROM generate_series(1, (%(nv)s + 9) / 10) p""",
    """INSERT INTO product_variant (id, product_id, seller_id, sku, track_inventory)
       SELECT %(v0)s + 1 + k, %(p0)s + 1 + k / 10, %(seller)s,
              'BOOKS-' || lpad((k + 1)::text, 7, '0'), true
       FROM generate_series(0, %(nv)s - 1) k""",
    # stock index k * nw + j: variant k in the j-th warehouse by priority; the counters
    # come from the ledger at the end
    """INSERT INTO stock (id, variant_id, warehouse_id, quantity, quantity_allocated,
                          quantity_reserved_for_batches)
       SELECT %(s0)s + 1 + k * %(nw)s + j, %(v0)s + 1 + k,
              (%(warehouses)s::int[])[j + 1], 0, 0, 0
       FROM generate_series(0, %(nv)s - 1) k, generate_series(0, %(nw)s - 1) j""",
)

# Order i sits in time slot i * m / o. Its release (fulfillment, or cancellation: class 0)
# comes with order i + d[class], in that order's slot; an order whose release would come
# after the last order is still UNFULFILLED. Line k's variant is the one after line 0's
# (sizes of one product), line 0's is skewed towards the first variants (bestsellers).
_ORDERS = """
CREATE TEMP TABLE bo ON COMMIT DROP AS
SELECT i, %(o0)s + 1 + i AS id, i * %(m)s / %(o)s AS slot, cls,
       CASE WHEN i + (%(d)s::int[])[cls + 1] < %(o)s
            THEN (i + (%(d)s::int[])[cls + 1]) * %(m)s / %(o)s END AS release_slot,
       CASE WHEN i + (%(d)s::int[])[cls + 1] >= %(o)s THEN 'UNFULFILLED'
            WHEN canceled THEN 'CANCELED' ELSE 'FULFILLED' END AS status,
       nlines, kv0
FROM (SELECT i, canceled,
             CASE WHEN canceled THEN 0
                  WHEN pg_temp.rnd(i, 2) < (%(shares)s::float8[])[1] THEN 0
                  WHEN pg_temp.rnd(i, 2) < (%(shares)s::float8[])[1]
                                           + (%(shares)s::float8[])[2] THEN 1
                  ELSE 2 END AS cls,
             CASE WHEN pg_temp.rnd(i, 3) < 0.55 THEN 1
                  WHEN pg_temp.rnd(i, 3) < 0.85 THEN 2 ELSE 3 END AS nlines,
             floor(%(nv)s * pg_temp.rnd(i, 4) ^ 3)::bigint AS kv0
      FROM (SELECT i, pg_temp.rnd(i, 1) < %(canceled)s AS canceled
            FROM generate_series(0::bigint, %(o)s - 1) i) g) x
"""

_ORDERS_INSERT = """
INSERT INTO orders (id, type, status, shipping_country, allocated, created_by_token_id,
                    created_at)
SELECT id, 'REGULAR', status, %(country)s, true, %(token)s,
       %(start)s + slot * %(ticks)s * %(tick)s * interval '1 second'
FROM bo ORDER BY id
"""

# a line's stock index k * nw + j: the warehouse skewed towards the first by priority
_LINES = """
CREATE TEMP TABLE bl ON COMMIT DROP AS
SELECT %(l0)s + row_number() OVER (ORDER BY bo.i, k) AS id, bo.id AS order_id, bo.status,
       bo.cls, k, bo.slot, bo.release_slot, kv,
       kv * %(nw)s + floor(%(nw)s * pg_temp.rnd(bo.i * 4 + k, 5) ^ 2)::bigint AS sidx,
       CASE WHEN pg_temp.rnd(bo.i * 4 + k, 6) < 0.75 THEN 1
            WHEN pg_temp.rnd(bo.i * 4 + k, 6) < 0.93 THEN 2 ELSE 3 END AS q
FROM bo, generate_series(0, bo.nlines - 1) k,
     LATERAL (SELECT mod(bo.kv0 + k, %(nv)s) AS kv) v
"""

_LINE_TABLES = (
    """INSERT INTO order_line (id, order_id, variant_id, seller_id, quantity,
                               quantity_fulfilled)
       SELECT id, order_id, %(v0)s + 1 + kv, %(seller)s, q,
              CASE WHEN status = 'FULFILLED' THEN q ELSE 0 END
       FROM bl ORDER BY id""",
    """INSERT INTO allocation (id, order_line_id, stock_id, quantity)
       SELECT %(a0)s + row_number() OVER (ORDER BY id), id, %(s0)s + 1 + sidx, q
       FROM bl WHERE status = 'UNFULFILLED'""",
    # one fulfillment per fulfilled order, numbered in the order they happened
    """CREATE TEMP TABLE bf ON COMMIT DROP AS
       SELECT id AS order_id, %(f0)s + row_number() OVER (ORDER BY release_slot, cls) AS fid,
              release_slot * %(ticks)s + 3 + 3 * cls AS tick
       FROM bo WHERE status = 'FULFILLED'""",
    """INSERT INTO fulfillment (id, order_id, created_at)
       SELECT fid, order_id, %(start)s + tick * %(tick)s * interval '1 second'
       FROM bf ORDER BY fid""",
    """INSERT INTO fulfillment_line (id, fulfillment_id, order_line_id, warehouse_id, quantity)
       SELECT %(fl0)s + row_number() OVER (ORDER BY bf.fid, bl.id), bf.fid, bl.id,
              (%(warehouses)s::int[])[mod(bl.sidx, %(nw)s) + 1], bl.q
       FROM bl JOIN bf ON bf.order_id = bl.order_id""",
)

# Every movement as (tick, stock index, kind, quantity change, allocated change, order):
# each books stock's opening STOCK_UPDATE before the year, each line's ALLOCATION and its
# release, and `filler` movements of no order, one per slot at most, skewed towards the
# bestsellers as the lines are. Kinds index TYPES and REASONS.
_EVENTS = """
SELECT s - %(stocks)s AS tick, s AS sidx, 0 AS kind, 0 AS qc, 0 AS ac, NULL::int AS order_id
FROM generate_series(0::bigint, %(stocks)s - 1) s
UNION ALL
SELECT slot * %(ticks)s + k, sidx, 1, 0, q, order_id FROM bl
UNION ALL
SELECT release_slot * %(ticks)s + 3 + 3 * cls + k, sidx,
       CASE WHEN status = 'CANCELED' THEN 3 ELSE 2 END,
       CASE WHEN status = 'CANCELED' THEN 0 ELSE -q END, -q, order_id
FROM bl WHERE release_slot IS NOT NULL
UNION ALL
SELECT f * %(m)s / %(filler_slots)s * %(ticks)s + 12, sidx, kind,
       CASE kind WHEN 4 THEN 5 + floor(r * 36)::int
                 ELSE nonzero + CASE WHEN nonzero >= 0 THEN 1 ELSE 0 END END, 0, NULL
FROM (SELECT f, sidx, kind, r,
             CASE kind WHEN 5 THEN floor(r * 12)::int - 6
                       WHEN 6 THEN floor(r * 5)::int - 3
                       ELSE floor(r * 16)::int - 8 END AS nonzero
      FROM (SELECT f,
                   floor(%(nv)s * pg_temp.rnd(f, 7) ^ 3)::bigint * %(nw)s
                   + floor(%(nw)s * pg_temp.rnd(f, 8) ^ 2)::bigint AS sidx,
                   CASE WHEN pg_temp.rnd(f, 9) < 0.04 THEN 4
                        WHEN pg_temp.rnd(f, 9) < 0.39 THEN 5
                        WHEN pg_temp.rnd(f, 9) < 0.64 THEN 6 ELSE 7 END AS kind,
                   pg_temp.rnd(f, 10) AS r
            FROM generate_series(0::bigint, %(filler)s - 1) f) g) h
"""

# Levels after each movement: running sums per stock over time. The opening quantity is
# what keeps every stock's available at or above a small margin all year; then ids in
# time order.
_MOVEMENTS = f"""
INSERT INTO stock_movement (id, stock_id, variant_id, warehouse_id, type, quantity_change,
                            allocated_change, quantity_after, allocated_after, reason,
                            order_id, actor, created_at)
SELECT %(m0)s + row_number() OVER (ORDER BY tick), %(s0)s + 1 + sidx,
       %(v0)s + 1 + sidx / %(nw)s, (%(warehouses)s::int[])[mod(sidx, %(nw)s) + 1],
       (%(types)s::text[])[kind + 1], CASE WHEN kind = 0 THEN q0 ELSE qc END, ac,
       q0 + rq, ra, (%(reasons)s::text[])[kind + 1], order_id, %(actor)s,
       %(start)s + tick * %(tick)s * interval '1 second'
FROM (SELECT *, 10 + floor(90 * pg_temp.rnd(sidx, 11))::int
                + greatest(0, max(ra - rq) OVER (PARTITION BY sidx)) AS q0
      FROM (SELECT *, sum(qc) OVER w AS rq, sum(ac) OVER w AS ra
            FROM ({_EVENTS}) ev
            WINDOW w AS (PARTITION BY sidx ORDER BY tick ROWS UNBOUNDED PRECEDING)) e) x
ORDER BY tick
"""

# the counters are what the ledger sums to; a few stocks get a low-stock threshold above
# what they have left (dashboards' belowThreshold), more one below it
_STOCK_LEVELS = """
UPDATE stock s SET quantity = t.q, quantity_allocated = t.a,
       low_stock_threshold = CASE
           WHEN pg_temp.rnd(s.id, 12) < 0.02 THEN t.q - t.a + 1 + floor(10 * pg_temp.rnd(s.id, 13))
           WHEN pg_temp.rnd(s.id, 12) < 0.30 THEN greatest(1, (t.q - t.a) / 4) END
FROM (SELECT stock_id, sum(quantity_change) AS q, sum(allocated_change) AS a
      FROM stock_movement WHERE id > %(m0)s GROUP BY stock_id) t
WHERE s.id = t.stock_id
"""

_SECONDARY_INDEXES = """
SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid)
FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
WHERE c.relname = ANY(%s) AND c.relnamespace = 'public'::regnamespace
  AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)
ORDER BY 1
"""


def scaled(scale: float) -> dict[str, int]:
    """grow_books' sizes at `scale` (1: 100,000 variants, 1M orders, 10M movements)."""
    if scale <= 0:
        raise ValueError("the books' scale must be positive")
    return {"variants": max(3, round(VARIANTS * scale)), "orders": max(1, round(ORDERS * scale)),
            "movements": max(10, round(MOVEMENTS * scale))}


def grow_books(db: BenchDatabase, variants: int = VARIANTS, orders: int = ORDERS,
               movements: int = MOVEMENTS) -> Books:
    """Add `variants` variants (10 per product) stocked in every warehouse, `orders` orders
    of 1-3 lines with their allocations and fulfillments, and `movements` ledger rows to a
    freshly seeded bench database; the stocks keep balancing; then VACUUM ANALYZE."""
    if db.kind != "postgresql":
        raise BooksUnsupported(REFUSED)
    if variants < 3 or orders < 1 or movements < orders:
        raise ValueError("the books need at least 3 variants, 1 order, and no fewer "
                         "movements than orders")
    started = time.perf_counter()
    with db.connection() as conn:
        plan = _plan(conn, variants, orders, movements)
        conn.execute("SET LOCAL work_mem = '256MB'")
        conn.execute("SET LOCAL maintenance_work_mem = '512MB'")
        if conn.execute("SHOW is_superuser").fetchone()[0] == "on":
            # the rows are consistent by construction (tests/test_bench_books.py checks
            # them): no foreign-key trigger per row (a superuser's setting)
            conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute(_RANDOM)
        sizes = _load(conn, plan)
        conn.commit()
        conn.autocommit = True
        step = time.perf_counter()
        # autovacuum may be off, and would run during the measurements otherwise: the
        # visibility map (index-only scans) and the statistics, now
        conn.execute(f"VACUUM (ANALYZE) {', '.join(GROWN_TABLES)}")
        say(f"books: VACUUM ANALYZE {time.perf_counter() - step:.1f} s")
        totals = {t: int(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0])
                  for t in GROWN_TABLES if t != "relay_position"}
    books = Books(**sizes, totals=totals, seconds=round(time.perf_counter() - started, 1))
    say(f"books: {books.movements:,} movements, {books.orders:,} orders, {books.variants:,} "
        f"variants added in {books.seconds:.0f} s")
    return books


def _plan(conn: Any, variants: int, orders: int, movements: int) -> _Plan:
    warehouses = [int(r[0]) for r in conn.execute(
        "SELECT id FROM warehouse ORDER BY priority, id").fetchall()]
    if not warehouses:
        raise ValueError("seed the bench database before growing its books")
    seller = int(conn.execute("SELECT seller_id FROM warehouse WHERE id = %s",
                              (warehouses[0],)).fetchone()[0])
    warehouses = [int(r[0]) for r in conn.execute(
        "SELECT id FROM warehouse WHERE seller_id = %s ORDER BY priority, id",
        (seller,)).fetchall()]
    country = conn.execute("SELECT min(country) FROM shipping_zone_country").fetchone()[0]
    token = conn.execute("SELECT min(id) FROM api_token WHERE role = 'admin'").fetchone()[0]
    top = {t: int(conn.execute(f"SELECT coalesce(max(id), 0) FROM {t}").fetchone()[0])
           for t in ("product", "product_variant", "stock", "orders", "order_line",
                     "allocation", "fulfillment", "fulfillment_line", "stock_movement")}
    end = datetime.now(UTC) - timedelta(minutes=1)
    return _Plan(
        nv=variants, orders=orders, movements=movements, warehouses=warehouses,
        seller=seller, country=country or "DE", token=token,
        actor=f"admin:{token}" if token is not None else "admin:books",
        start=end - YEAR, tick_seconds=YEAR.total_seconds() / (movements * TICKS_PER_SLOT),
        p0=top["product"], v0=top["product_variant"], s0=top["stock"], o0=top["orders"],
        l0=top["order_line"], a0=top["allocation"], f0=top["fulfillment"],
        fl0=top["fulfillment_line"], m0=top["stock_movement"])


def _load(conn: Any, plan: _Plan) -> dict[str, int]:
    """Every insert, in one transaction; the counts added."""
    p = plan.params()
    with _step("catalog"):
        for sql in _CATALOG:
            conn.execute(sql, p)
    with _without_secondary_indexes(conn):
        with _step("orders"):
            conn.execute(_ORDERS, p)
            n_orders = conn.execute(_ORDERS_INSERT, p).rowcount
            conn.execute("CREATE INDEX ON bo (id)")
            conn.execute("ANALYZE bo")
        with _step("order lines, allocations, fulfillments"):
            conn.execute(_LINES, p)
            conn.execute("ANALYZE bl")
            counts = [conn.execute(sql, p).rowcount for sql in _LINE_TABLES]
        lines, allocations, _, fulfillments, fulfillment_lines = counts
        released = int(conn.execute(
            "SELECT count(*) FROM bl WHERE release_slot IS NOT NULL").fetchone()[0])
        stocks = plan.nv * len(plan.warehouses)
        filler = plan.movements - stocks - lines - released
        if filler < 0:
            raise ValueError(
                f"{plan.movements:,} movements cannot hold the {stocks + lines + released:,} "
                f"that {plan.nv:,} variants' stocks and {plan.orders:,} orders make")
        with _step(f"{plan.movements:,} movements"):
            n_movements = conn.execute(_MOVEMENTS, plan.params(
                stocks=stocks, filler=filler, filler_slots=max(filler, 1))).rowcount
    with _step("stock levels, sequences, relay position"):
        conn.execute(_STOCK_LEVELS, p)
        for table in ("product", "product_variant", "stock", "orders", "order_line",
                      "allocation", "fulfillment", "fulfillment_line", "stock_movement"):
            conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                         f"greatest(max(id), 1), max(id) IS NOT NULL) FROM {table}")
        _relay_caught_up(conn)
    statuses = dict(conn.execute("SELECT status, count(*) FROM bo GROUP BY status").fetchall())
    return {"variants": plan.nv, "products": -(-plan.nv // VARIANTS_PER_PRODUCT),
            "stocks": stocks, "orders": n_orders, "order_lines": lines,
            "allocations": allocations, "fulfillments": fulfillments,
            "fulfillment_lines": fulfillment_lines, "movements": n_movements,
            "unfulfilled_orders": int(statuses.get("UNFULFILLED", 0)),
            "canceled_orders": int(statuses.get("CANCELED", 0))}


def _relay_caught_up(conn: Any) -> None:
    """The relay hands on what is after the books (a shop's relay has caught up long ago);
    otherwise each server would first work through the whole ledger."""
    from domain.relay import NAME

    conn.execute(
        "INSERT INTO relay_position (name, last_id, updated_at) "
        "SELECT %s, max(id), now() FROM stock_movement "
        "ON CONFLICT (name) DO UPDATE SET last_id = EXCLUDED.last_id, updated_at = now()",
        (NAME,))


@contextlib.contextmanager
def _without_secondary_indexes(conn: Any) -> Iterator[None]:
    """Drop the order and ledger tables' indexes that back no constraint, load, build them
    again from their definitions (same transaction: a failure rolls back both)."""
    found = conn.execute(_SECONDARY_INDEXES, (list(REINDEXED_TABLES),)).fetchall()
    for name, _ in found:
        conn.execute(f"DROP INDEX {name}")
    yield
    with _step(f"{len(found)} indexes"):
        for _, definition in found:
            conn.execute(definition)


@contextlib.contextmanager
def _step(what: str) -> Iterator[None]:
    started = time.perf_counter()
    yield
    say(f"books: {what} {time.perf_counter() - started:.1f} s")
