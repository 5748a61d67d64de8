"""Order write-path cases a refactor must keep, on SQLite and on PostgreSQL: a cancel releases
every line's units, and an order whose allocations span several stocks is placed whole or
not at all, even when only one stock runs short after the order was planned."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import event, text

from domain.errors import InsufficientStock
from domain.models import OrderType
from domain.services import orders
from tests.concurrency.test_no_oversell import assert_books_balance
from tests.conftest import Database
from tests.factories import ADMIN, World, shop

# one unit leaves a stock as a recorded ADJUSTMENT (its ledger stays balanced); `:sid`
TAKE_ONE = (
    "UPDATE stock SET quantity = quantity - 1 WHERE id = :sid",
    "INSERT INTO stock_movement (stock_id, variant_id, warehouse_id, type, quantity_change, "
    "allocated_change, quantity_after, allocated_after, reason, actor, created_at) "
    "SELECT id, variant_id, warehouse_id, 'ADJUSTMENT', -1, 0, quantity, quantity_allocated, "
    "'taken meanwhile', 'test', CURRENT_TIMESTAMP FROM stock WHERE id = :sid",
)


def _counts(db: Database) -> tuple[int, int, int]:
    """(orders, order lines, allocations)."""
    return (db.scalar("SELECT COUNT(*) FROM orders"), db.scalar("SELECT COUNT(*) FROM order_line"),
            db.scalar("SELECT COUNT(*) FROM allocation"))


def _levels(db: Database) -> list[tuple[int, int, int]]:
    """(stock id, quantity, allocated) of every stock."""
    return [(int(sid), int(q), int(a)) for sid, q, a in db.rows(
        "SELECT id, quantity, quantity_allocated FROM stock ORDER BY id")]


def _stock_id(db: Database, variant: int, warehouse: int) -> int:
    return int(db.scalar("SELECT id FROM stock WHERE variant_id = :v AND warehouse_id = :w",
                         v=variant, w=warehouse))


# --- cancel -------------------------------------------------------------------------------

def test_cancel_releases_every_line_of_a_variant_allocated_on_one_stock(db: Database) -> None:
    """Two lines of one variant, both allocated in w1: canceling releases 2 + 3 units."""
    s = shop(db, stock1=10, stock2=10)
    world, v, w1, w2 = s.world, s.variant, s.w1, s.w2
    placed = orders.create(db.uow(), ADMIN, type=OrderType.REGULAR, shipping_country="DE",
                           lines=[orders.LineRequest(v, 2), orders.LineRequest(v, 3)])
    assert [[(a.warehouse_id, a.quantity) for a in ln.allocations] for ln in placed.lines] == [
        [(w1, 2)], [(w1, 3)]]
    assert world.stock(v, w1) == (10, 5)

    canceled = orders.cancel(db.uow(), ADMIN, placed.id)

    assert canceled.status.value == "CANCELED"
    assert all(ln.allocations == () for ln in canceled.lines)
    assert world.stock(v, w1) == (10, 0)
    assert world.stock(v, w2) == (10, 0)
    assert _counts(db) == (1, 2, 0)
    assert db.rows("SELECT type, allocated_change, allocated_after FROM stock_movement "
                   "WHERE order_id = :o ORDER BY id", o=placed.id) == [
        ("ALLOCATION", 5, 5), ("DEALLOCATION", -5, 0)]
    assert_books_balance(db)
    # and the released units can be sold again
    again = orders.create(db.uow(), ADMIN, type=OrderType.REGULAR, shipping_country="DE",
                          lines=[orders.LineRequest(v, 10)])
    assert [(a.warehouse_id, a.quantity) for a in again.lines[0].allocations] == [(w1, 10)]


# --- whole or nothing over several stocks -------------------------------------------------

@contextlib.contextmanager
def _one_unit_taken_after_the_plan(db: Database, stock_id: int,
                                   place: Callable[[], object]) -> Iterator[list[object]]:
    """Run `place` (an order) so that one unit of `stock_id` leaves after the order read the
    levels and before its guarded write: the plan is stale for that one stock only.

    PostgreSQL: another transaction has taken the unit but not committed; the order reads
    the committed levels, its write waits for that row's lock, and the commit comes while it
    waits. SQLite: the unit is taken, on a connection of its own, the moment the order's
    write transaction begins (its BEGIN IMMEDIATE), after its read.
    Yields a list that receives `place`'s result or exception.
    """
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(place())
        except Exception as exc:
            outcome.append(exc)

    if db.backend == "postgresql":
        with db.engine.connect() as conn:
            with conn.begin():
                for sql in TAKE_ONE:
                    conn.execute(text(sql), {"sid": stock_id})
                order = threading.Thread(target=run)
                order.start()
                deadline = time.monotonic() + 20
                while not db.scalar("SELECT COUNT(*) FROM pg_stat_activity WHERE datname = "
                                    "current_database() AND wait_event_type = 'Lock'"):
                    assert order.is_alive(), f"the order never waited for the row: {outcome}"
                    assert time.monotonic() < deadline, "the order never waited for the row"
                    time.sleep(0.005)
            order.join(timeout=30)
        assert not order.is_alive()
        yield outcome
        return

    path = db.engine.url.database
    assert path
    taken: list[object] = []

    def take_at_first_begin(statement: str) -> None:
        if statement.strip().upper().startswith("BEGIN IMMEDIATE") and not taken:
            try:
                side = sqlite3.connect(path, isolation_level=None, timeout=5)
                try:
                    side.execute("BEGIN IMMEDIATE")
                    for sql in TAKE_ONE:
                        side.execute(sql, {"sid": stock_id})
                    side.execute("COMMIT")
                finally:
                    side.close()
                taken.append(True)
            except Exception as exc:  # sqlite3 swallows a trace callback's exceptions
                taken.append(exc)

    def trace(dbapi_connection: Any, *_args: Any) -> None:
        dbapi_connection.set_trace_callback(take_at_first_begin)

    def untrace(dbapi_connection: Any, *_args: Any) -> None:
        dbapi_connection.set_trace_callback(None)

    event.listen(db.engine, "checkout", trace)
    event.listen(db.engine, "checkin", untrace)
    try:
        run()
    finally:
        event.remove(db.engine, "checkout", trace)
        event.remove(db.engine, "checkin", untrace)
    assert taken == [True], f"the unit was not taken when the order's write began: {taken}"
    yield outcome


def test_an_order_over_several_stocks_refused_for_one_short_stock_changes_nothing(
    db: Database,
) -> None:
    """Lines of two variants whose allocations land in three stocks over two warehouses;
    one unit of the last stock goes after the order was planned. The guarded write refuses
    that one stock; the other two must not keep the order, its lines, its allocations or
    their counters (and the retry, planning again, finds the variant short)."""
    world = World(db)
    seller = world.seller()
    zone = world.zone(["DE"])
    w1 = world.warehouse(seller, [zone], priority=0)
    w2 = world.warehouse(seller, [zone], priority=1)
    product = world.product(seller)
    x = world.variant(product, stocks={w1: 4})
    y = world.variant(product, stocks={w1: 2, w2: 3})
    short = _stock_id(db, y, w2)
    levels = _levels(db)
    movements = db.scalar("SELECT COUNT(*) FROM stock_movement")

    def place() -> orders.OrderView:  # planned: x 4 in w1; y 2 in w1 and 3 in w2
        return orders.create(db.uow(), ADMIN, type=OrderType.REGULAR, shipping_country="DE",
                             lines=[orders.LineRequest(x, 4), orders.LineRequest(y, 5)])

    with _one_unit_taken_after_the_plan(db, short, place) as outcome:
        pass

    [refused] = outcome
    assert isinstance(refused, InsufficientStock), refused
    assert [(e.variant_id, e.requested, e.available) for e in refused.errors] == [(y, 5, 4)]
    assert _counts(db) == (0, 0, 0)
    assert _levels(db) == [(sid, q - (sid == short), a) for sid, q, a in levels]
    assert db.scalar("SELECT COUNT(*) FROM stock_movement") == movements + 1  # the unit taken
    assert_books_balance(db)
    # nothing is left locked or half-done: the four units that are there still sell whole
    placed = orders.create(db.uow(), ADMIN, type=OrderType.REGULAR, shipping_country="DE",
                           lines=[orders.LineRequest(x, 4), orders.LineRequest(y, 4)])
    assert sorted((ln.variant_id, a.warehouse_id, a.quantity) for ln in placed.lines
                  for a in ln.allocations) == sorted([(x, w1, 4), (y, w1, 2), (y, w2, 2)])
    assert_books_balance(db)
