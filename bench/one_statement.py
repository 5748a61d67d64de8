"""The one-statement raw order baseline (`raw-one-spread`, PostgreSQL): the spread order
as ONE statement run by pgbench, the least work PostgreSQL can do for it, and the checks
that it wrote exactly what the app and `raw-spread` write (README: "Raw SQL baseline")."""

from __future__ import annotations

from collections import defaultdict

from bench import pgbench
from bench.database import BenchDatabase
from bench.progress import say
from bench.raw_sql import ALLOCATION, MOVEMENT_COLUMNS, ORDER_CREATED
from bench.stats import WorkloadResult
from bench.workload import Timing

NAME = "raw-one-spread"
LINES = 3

# Three distinct variants (one from each third of the pool), quantity 1 each. Lock the
# variants' stock rows in id order (as the app and raw-spread do), take per variant the
# first stock by (priority, warehouse) with a free unit, then write the order, its lines,
# their allocations, the stocks and one ALLOCATION movement per stock with the levels
# after the change (known from the locked rows). Short of a free unit for any variant, the
# order row is not inserted, and every later part hangs off it: nothing is written.
SCRIPT = """\\set a random(1, {band})
\\set b random({band_1}, {band_2})
\\set c random({band_3}, {band_4})
WITH locked AS MATERIALIZED (
    SELECT s.id, s.variant_id, s.warehouse_id, w.priority, s.quantity, s.quantity_allocated
    FROM stock s JOIN warehouse w ON w.id = s.warehouse_id
    WHERE s.variant_id IN (:a, :b, :c) ORDER BY s.id FOR UPDATE OF s
), picked AS MATERIALIZED (
    SELECT DISTINCT ON (variant_id) id, variant_id, warehouse_id, quantity, quantity_allocated
    FROM locked WHERE quantity - quantity_allocated >= 1
    ORDER BY variant_id, priority, warehouse_id
), o AS (
    INSERT INTO orders (type, status, shipping_country, allocated)
    SELECT 'REGULAR', 'UNFULFILLED', 'DE', true WHERE (SELECT count(*) FROM picked) = {lines}
    RETURNING id
), l AS (
    INSERT INTO order_line (order_id, variant_id, seller_id, quantity, quantity_fulfilled)
    SELECT o.id, p.variant_id, (SELECT seller_id FROM product_variant
                                WHERE id = p.variant_id), 1, 0 FROM o CROSS JOIN picked p
    RETURNING id, variant_id
), a AS (
    INSERT INTO allocation (order_line_id, stock_id, quantity)
    SELECT l.id, p.id, 1 FROM l JOIN picked p ON p.variant_id = l.variant_id
), u AS (
    UPDATE stock SET quantity_allocated = stock.quantity_allocated + 1
    FROM picked p, o WHERE stock.id = p.id
)
INSERT INTO stock_movement ({columns})
SELECT p.id, p.variant_id, p.warehouse_id, '{allocation}', 0, 1, p.quantity,
       p.quantity_allocated + 1, '{reason}', o.id, '{actor}'
FROM o CROSS JOIN picked p;
"""

ALLOCATED = "SELECT COALESCE(SUM(quantity_allocated), 0) FROM stock"
NEW_ORDERS = "SELECT COUNT(*) FROM orders WHERE id > %s"
NEW_LINES = "SELECT order_id, variant_id, quantity FROM order_line WHERE order_id > %s"
# allocations of the new orders from another stock than the variant's first by (priority,
# warehouse): valid while no stock of the pool runs dry (each holds 1,000,000 units)
WRONG_STOCK = """
SELECT COUNT(*) FROM allocation a
JOIN order_line ol ON ol.id = a.order_line_id
JOIN stock s ON s.id = a.stock_id
WHERE ol.order_id > %s AND s.id <> (
    SELECT s2.id FROM stock s2 JOIN warehouse w2 ON w2.id = s2.warehouse_id
    WHERE s2.variant_id = ol.variant_id ORDER BY w2.priority, w2.id LIMIT 1)
"""
# per stock the new orders touched: its ALLOCATION movements each at another level, the
# highest the stock's allocated now, on-hand as the stock's
LEDGER_LEVELS = """
SELECT COUNT(*) FROM (
    SELECT m.stock_id FROM stock_movement m JOIN stock s ON s.id = m.stock_id
    WHERE m.order_id > %s AND m.type = 'ALLOCATION'
    GROUP BY m.stock_id, s.quantity_allocated, s.quantity
    HAVING MAX(m.allocated_after) <> s.quantity_allocated
        OR COUNT(DISTINCT m.allocated_after) <> COUNT(*)
        OR MIN(m.quantity_after) <> s.quantity OR MAX(m.quantity_after) <> s.quantity
) x
"""


def script(variants: int, actor: str) -> str:
    """The pgbench script over spread variants 1..`variants` (one from each third)."""
    band = variants // LINES
    if band < 1:
        raise ValueError(f"{NAME} needs at least {LINES} variants")
    return SCRIPT.format(band=band, band_1=band + 1, band_2=2 * band, band_3=2 * band + 1,
                         band_4=3 * band, lines=LINES, columns=", ".join(MOVEMENT_COLUMNS),
                         allocation=ALLOCATION, reason=ORDER_CREATED,
                         actor=actor.replace("'", "''"))


def run_one_statement(db: BenchDatabase, variants: int, timing: Timing, actor: str
                      ) -> WorkloadResult:
    """pgbench with the one-statement order (`--warmup` unmeasured, then `--seconds`), then
    the checks; every order it created goes into `placed` for the bench's read-back."""
    text = script(variants, actor)
    with db.connection() as conn:
        since = int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM orders").fetchone()[0])
        allocated_before = int(conn.execute(ALLOCATED).fetchone()[0])
    warmup = None
    if timing.warmup >= 0.5:
        warmup = pgbench.run(db.url, text, timing.clients, timing.warmup, log_latencies=False)
    measured = pgbench.run(db.url, text, timing.clients, timing.seconds)
    result = pgbench.result(NAME, measured, warmup)
    told = measured.transactions + (warmup.transactions if warmup else 0)
    problems = verify(db, since, allocated_before, told, result)
    for problem in problems:
        say(f"  {NAME}: {problem}")
    for line in result.extra["pgbench_errors"]:
        say(f"  pgbench: {line}")
    result.extra["problems"] = problems
    return result


def verify(db: BenchDatabase, since: int, allocated_before: int, told: int,
           result: WorkloadResult) -> list[str]:
    """Count what is off into `result.failures`, fill `result.placed`; the problems."""
    problems: list[str] = []
    with db.connection() as conn:
        orders = int(conn.execute(NEW_ORDERS, (since,)).fetchone()[0])
        lines: dict[int, list[tuple[int, int]]] = defaultdict(list)
        for order_id, variant_id, quantity in conn.execute(NEW_LINES, (since,)).fetchall():
            lines[int(order_id)].append((int(variant_id), int(quantity)))
        wrong_stock = int(conn.execute(WRONG_STOCK, (since,)).fetchone()[0])
        levels = int(conn.execute(LEDGER_LEVELS, (since,)).fetchone()[0])
        allocated = int(conn.execute(ALLOCATED).fetchone()[0]) - allocated_before

    def fail(code: str, count: int, problem: str) -> None:
        if count:
            result.failures[code] = result.failures.get(code, 0) + count
            problems.append(problem)

    fail("ORDER_COUNT", abs(orders - told), f"{orders} orders in the database, pgbench "
         f"committed {told} transactions")
    bad = [pk for pk, got in lines.items()
           if len(got) != LINES or len({v for v, _ in got}) != LINES
           or any(q != 1 for _, q in got)]
    fail("BAD_LINES", len(bad) + (orders - len(lines) if orders > len(lines) else 0),
         f"orders without {LINES} lines of distinct variants x 1: {bad[:5]}")
    fail("WRONG_STOCK", wrong_stock, f"{wrong_stock} allocations not from the variant's "
         "first stock by (priority, warehouse)")
    fail("ALLOCATED_DELTA", int(allocated != LINES * orders), f"stocks' allocated rose by "
         f"{allocated}, the orders hold {LINES * orders} units")
    fail("LEDGER_LEVELS", levels, f"{levels} stocks whose ALLOCATION movements' levels "
         "after do not step up to their figures")
    result.placed = [(pk, tuple(v for v, _ in got)) for pk, got in sorted(lines.items())]
    return problems
