"""bench/books.py at a tiny scale: the books it grows hold together (the bench's integrity
checks, the ledger's running levels, every reference), and SQLite is refused."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import checks, paging
from bench.books import REASONS, TYPES, BooksUnsupported, grow_books
from bench.database import BenchDatabase
from bench.seed import migrate, seed
from tests.conftest import postgres_server_url, require_postgres

# each query counts the rows that break one rule of the books
BROKEN = {
    "movement ids and times out of step": """
        SELECT count(*) FROM (SELECT created_at <= lag(created_at) OVER (ORDER BY id) AS bad
                              FROM stock_movement) x WHERE bad""",
    "levels after a movement that are not the previous ones plus its change": """
        SELECT count(*) FROM (
            SELECT quantity_after - quantity_change
                       - coalesce(lag(quantity_after) OVER w, 0) AS dq,
                   allocated_after - allocated_change
                       - coalesce(lag(allocated_after) OVER w, 0) AS da
            FROM stock_movement WINDOW w AS (PARTITION BY stock_id ORDER BY id)) x
        WHERE dq <> 0 OR da <> 0""",
    "allocated above on-hand or below 0 in the ledger": """
        SELECT count(*) FROM stock_movement
        WHERE allocated_after < 0 OR quantity_after < allocated_after""",
    "stocks whose counters are not their last movement's levels": """
        SELECT count(*) FROM stock s JOIN (
            SELECT DISTINCT ON (stock_id) stock_id, quantity_after, allocated_after
            FROM stock_movement ORDER BY stock_id, id DESC) m ON m.stock_id = s.id
        WHERE s.quantity <> m.quantity_after OR s.quantity_allocated <> m.allocated_after""",
    "movements naming another stock's variant or warehouse": """
        SELECT count(*) FROM stock_movement m LEFT JOIN stock s ON s.id = m.stock_id
        WHERE s.id IS NULL OR s.variant_id <> m.variant_id
           OR s.warehouse_id <> m.warehouse_id""",
    "lines of no order or variant": """
        SELECT count(*) FROM order_line l LEFT JOIN orders o ON o.id = l.order_id
        LEFT JOIN product_variant v ON v.id = l.variant_id WHERE o.id IS NULL OR v.id IS NULL""",
    "allocations not of their line's variant and quantity": """
        SELECT count(*) FROM allocation a LEFT JOIN order_line l ON l.id = a.order_line_id
        LEFT JOIN stock s ON s.id = a.stock_id
        WHERE l.id IS NULL OR s.id IS NULL OR s.variant_id <> l.variant_id
           OR a.quantity <> l.quantity""",
    "lines allocated unless UNFULFILLED, or not allocated when UNFULFILLED": """
        SELECT count(*) FROM order_line l JOIN orders o ON o.id = l.order_id
        LEFT JOIN allocation a ON a.order_line_id = l.id
        WHERE (o.status = 'UNFULFILLED') <> (a.id IS NOT NULL)""",
    "lines whose fulfilled units are not their fulfillment lines'": """
        SELECT count(*) FROM order_line l JOIN orders o ON o.id = l.order_id
        LEFT JOIN (SELECT order_line_id, sum(quantity) AS q FROM fulfillment_line
                   GROUP BY order_line_id) f ON f.order_line_id = l.id
        WHERE coalesce(f.q, 0) <> l.quantity_fulfilled
           OR (o.status = 'FULFILLED') <> (l.quantity_fulfilled = l.quantity)""",
    "fulfillment lines of another order's line, or fulfillments before their order": """
        SELECT count(*) FROM fulfillment_line fl JOIN fulfillment f ON f.id = fl.fulfillment_id
        JOIN order_line l ON l.id = fl.order_line_id JOIN orders o ON o.id = f.order_id
        WHERE l.order_id <> f.order_id OR f.created_at <= o.created_at""",
    "order lines whose ledger is not one allocation, released unless UNFULFILLED": """
        SELECT count(*) FROM order_line l JOIN orders o ON o.id = l.order_id
        LEFT JOIN (SELECT order_id, variant_id, count(*) AS n,
                          sum(allocated_change) FILTER (WHERE type = 'ALLOCATION') AS alloc,
                          sum(allocated_change) AS net
                   FROM stock_movement WHERE order_id IS NOT NULL
                   GROUP BY order_id, variant_id) m
               ON m.order_id = l.order_id AND m.variant_id = l.variant_id
        WHERE m.alloc IS DISTINCT FROM l.quantity
           OR m.net <> CASE WHEN o.status = 'UNFULFILLED' THEN l.quantity ELSE 0 END
           OR m.n <> CASE WHEN o.status = 'UNFULFILLED' THEN 1 ELSE 2 END""",
}


@pytest.fixture
def bench_db() -> Iterator[BenchDatabase]:
    require_postgres()
    db = BenchDatabase.choose(postgres_server_url(),
                              f"stockyard_test_books_{os.getpid()}_{uuid.uuid4().hex[:6]}")
    db.create()
    try:
        yield db
    finally:
        db.drop()


def test_tiny_books_hold_together(bench_db: BenchDatabase) -> None:
    migrate(bench_db)
    seeded = seed(bench_db, variants=30, bounded_units=30)

    books = grow_books(bench_db, variants=40, orders=100, movements=1_000)

    assert (books.variants, books.products, books.stocks) == (40, 4, 120)
    assert (books.orders, books.movements) == (100, 1_000)
    assert books.totals["stock_movement"] == 1_000
    assert books.totals["product_variant"] == 32 + 40
    assert books.unfulfilled_orders + books.canceled_orders < books.orders
    with bench_db.connection() as conn:
        def count(sql: str) -> int:
            return int(conn.execute(sql).fetchone()[0])

        assert count("SELECT count(*) FROM orders") == 100
        assert count("SELECT count(*) FROM order_line") == books.order_lines
        assert count("SELECT count(*) FROM allocation") == books.allocations > 0
        assert count("SELECT count(*) FROM fulfillment") == books.fulfillments > 0
        assert count("SELECT count(DISTINCT type) FROM stock_movement") == len(set(TYPES))
        assert count("SELECT count(DISTINCT reason) FROM stock_movement") == len(REASONS)
        # the seeded stocks are left as the order workloads expect them
        assert count("SELECT count(*) FROM stock WHERE variant_id <= 32 AND "
                     "quantity_allocated <> 0") == 0
        assert count("SELECT last_id FROM relay_position") == 1_000
        broken = {rule: count(sql) for rule, sql in BROKEN.items()}
        # the app's sequences go on after the books
        new_order = count("SELECT nextval(pg_get_serial_sequence('orders', 'id'))")
    assert broken == dict.fromkeys(BROKEN, 0)
    assert new_order == 101
    integrity = checks.integrity(bench_db)
    assert (integrity.oversold, integrity.mismatched) == (0, 0)
    bounded = checks.variant_figures(bench_db, seeded.bounded_variant)
    assert (bounded.quantity, bounded.allocated, bounded.order_lines) == (30, 0, 0)
    # bench.paging's pages and its EXPLAIN of the statement reads.page sends
    for case in paging.cases(bench_db):
        rows, first, deep = paging.targets(bench_db, case, pages=3, per_page=5)
        statement, parameters = paging.page_statement(bench_db, case, 5, deep.after_id)
        plan = paging.explain(bench_db, statement, parameters, generic=True)
        assert rows > 0 and first.after_id is None and first.first_id is not None
        assert deep.page == (min(3, -(-rows // 5)) if not case.last_page else -(-rows // 5))
        assert plan.scans, case.name


def test_sqlite_is_refused(tmp_path: Path) -> None:
    db = BenchDatabase("sqlite", f"sqlite:///{tmp_path}/bench.sqlite3")

    with pytest.raises(BooksUnsupported, match="PostgreSQL"):
        grow_books(db, variants=10, orders=10, movements=100)
