"""Order placement's last step: the guarded allocation, refused or committed atomically,
and the plan that went stale meanwhile (both the session's and the driver's paths)."""

from __future__ import annotations

import functools
import threading

import pytest
from sqlalchemy import text

from domain import ledger, placement
from domain.db import driver_connections, make_engine
from domain.events import Event, StockChanged
from domain.models import OrderType, Seller
from domain.services import orders
from domain.uow import LastStep
from tests.concurrency.test_no_oversell import assert_books_balance
from tests.conftest import Database
from tests.factories import ADMIN, World, shop, stocks


def _stocks(db: Database, levels: list[int]) -> list[int]:
    """Stock ids of one variant with these units in as many warehouses."""
    world = World(db)
    seller = world.seller()
    zone = world.zone(["DE"])
    warehouses = [world.warehouse(seller, [zone], priority=i) for i in range(len(levels))]
    variant = world.variant(world.product(seller),
                            stocks=dict(zip(warehouses, levels, strict=True)))
    return [db.scalar("SELECT id FROM stock WHERE variant_id = :v AND warehouse_id = :w",
                      v=variant, w=w) for w in warehouses]


def _state(db: Database, stock_ids: list[int]) -> list[tuple[int, int, int]]:
    """(quantity, allocated, movements) per stock."""
    return [tuple(db.rows(
        "SELECT quantity, quantity_allocated, (SELECT COUNT(*) FROM stock_movement m "
        "WHERE m.stock_id = s.id) FROM stock s WHERE s.id = :sid", sid=sid)[0])
        for sid in stock_ids]


def _last(allocations: dict[int, int]) -> LastStep:
    return functools.partial(ledger.allocate_last, allocations=allocations, actor="test",
                             reason="order created", order_id=7)


def test_allocates_records_and_commits(db: Database) -> None:
    ids = _stocks(db, [5, 5])
    before = _state(db, ids)
    with db.uow() as uow:
        assert uow.commit(last=_last({ids[0]: 2, ids[1]: 5}))
    assert _state(db, ids) == [(5, 2, before[0][2] + 1), (5, 5, before[1][2] + 1)]
    assert db.rows("SELECT type, quantity_change, allocated_change, quantity_after, "
                   "allocated_after, order_id, actor FROM stock_movement WHERE stock_id = :s "
                   "ORDER BY id DESC LIMIT 1", s=ids[0]) == [
        ("ALLOCATION", 0, 2, 5, 2, 7, "test")]


@pytest.mark.parametrize("rows", [1, 2])
def test_a_refused_guard_commits_nothing(db: Database, rows: int) -> None:
    ids = _stocks(db, [5, 1])[-rows:]
    before = _state(db, ids)
    sellers = db.scalar("SELECT COUNT(*) FROM seller")
    with db.uow() as uow:
        uow.session.add(Seller(name="pending in the same transaction"))
        assert not uow.commit(last=_last({sid: 2 for sid in ids}))  # the last holds only 1
    assert _state(db, ids) == before
    assert db.scalar("SELECT COUNT(*) FROM seller") == sellers
    # the pooled connection is clean again: the next transaction works
    with db.uow() as uow:
        assert uow.commit(last=_last({ids[-1]: 1}))
    assert _state(db, ids)[-1][1] == before[-1][1] + 1


def test_pending_changes_commit_with_the_allocation(db: Database) -> None:
    ids = _stocks(db, [5])
    with db.uow() as uow:
        uow.session.add(Seller(name="committed together"))
        assert uow.commit(last=_last({ids[0]: 1}))
    assert db.scalar("SELECT COUNT(*) FROM seller WHERE name = 'committed together'") == 1
    assert _state(db, ids)[0][1] == 1


def test_a_plan_gone_stale_is_retried_from_fresh_levels(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another order takes stock between the unlocked read and the guarded update: the
    refused attempt leaves nothing behind (no order, line or allocation of its own), and the
    books balance."""
    s = shop(db, stock1=3, stock2=5)
    calls: list[bool] = []
    rivals: list[orders.OrderView] = []
    competing = threading.Event()  # set while the competitor's own order reads and writes

    def competitor_right_after_our_first_read(lock: bool) -> None:
        if competing.is_set():
            return
        calls.append(lock)
        if len(calls) == 1:  # a competitor's order takes w1's 3 units right after our read
            competing.set()
            try:
                rivals.append(orders.create(db.uow(), ADMIN, type=OrderType.REGULAR,
                                            shipping_country="DE",
                                            lines=[orders.LineRequest(s.variant, 3)]))
            finally:
                competing.clear()

    read, lock, read_on_driver = (placement.read_stocks, placement.lock_stocks,
                                  placement._read_on_driver)

    def read_then_lose_the_race(*args: object, **kwargs: object) -> object:
        found = read(*args, **kwargs)  # type: ignore[arg-type]
        competitor_right_after_our_first_read(False)
        return found

    def lock_then_lose_the_race(*args: object, **kwargs: object) -> object:
        found = lock(*args, **kwargs)  # type: ignore[arg-type]
        competitor_right_after_our_first_read(True)
        return found

    def read_on_driver_then_lose_the_race(*args: object) -> object:
        found = read_on_driver(*args)  # type: ignore[arg-type]
        competitor_right_after_our_first_read(False)
        return found

    monkeypatch.setattr(placement, "read_stocks", read_then_lose_the_race)
    monkeypatch.setattr(placement, "lock_stocks", lock_then_lose_the_race)
    monkeypatch.setattr(placement, "_read_on_driver", read_on_driver_then_lose_the_race)
    published: list[Event] = []
    view = orders.create(db.uow(published), ADMIN, type=OrderType.REGULAR,
                         shipping_country="DE", lines=[orders.LineRequest(s.variant, 2)])

    assert calls[:2] == [False, False]  # refused once, then planned again from fresh levels
    assert [(a.warehouse_id, a.quantity) for a in view.lines[0].allocations] == [(s.w2, 2)]
    assert stocks(s) == ((3, 3), (5, 2))
    assert published == [StockChanged((s.variant,))]  # the refused attempt's is dropped
    [rival] = rivals
    assert [(a.warehouse_id, a.quantity) for a in rival.lines[0].allocations] == [(s.w1, 3)]
    # the refused attempt committed nothing: two orders, two lines, two allocations
    assert db.rows("SELECT o.id, l.quantity, s.warehouse_id, a.quantity FROM orders o "
                   "LEFT JOIN order_line l ON l.order_id = o.id "
                   "LEFT JOIN allocation a ON a.order_line_id = l.id "
                   "LEFT JOIN stock s ON s.id = a.stock_id ORDER BY o.id") == [
        (rival.id, 3, s.w1, 3), (view.id, 2, s.w2, 2)]
    assert db.scalar("SELECT COUNT(*) FROM order_line") == 2
    assert db.scalar("SELECT COUNT(*) FROM allocation") == 2
    assert db.rows("SELECT order_id, warehouse_id, allocated_change FROM stock_movement "
                   "WHERE type = 'ALLOCATION' ORDER BY id") == [
        (rival.id, s.w1, 3), (view.id, s.w2, 2)]
    assert_books_balance(db)  # counters == ledger == live allocations, none oversold


def test_a_key_committed_after_our_read_answers_with_that_order(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two requests with one idempotency key: the later one's read missed the first."""
    s = shop(db, stock1=5)
    request = {"type": OrderType.REGULAR, "shipping_country": "DE",
               "lines": [orders.LineRequest(s.variant, 2)], "idempotency_key": "k-1"}
    first = orders.create(db.uow(), ADMIN, **request)  # type: ignore[arg-type]
    lookup = placement.order_id_for_key
    misses = iter([True])

    def missed_once(session: object, key: str, token_id: int | None) -> int | None:
        return None if next(misses, False) else lookup(
            session, key, token_id)  # type: ignore[arg-type]

    monkeypatch.setattr(placement, "order_id_for_key", missed_once)
    second = orders.create(db.uow(), ADMIN, **request)  # type: ignore[arg-type]

    assert second.id == first.id
    assert stocks(s)[0] == (5, 2)  # allocated once


def test_every_line_keeps_its_own_allocations(db: Database) -> None:
    """Many lines, a variant on several lines, splits across warehouses: what the order
    reports is what the database holds, line by line (on PostgreSQL the lines and their
    allocations are inserted by one statement, matched by position)."""
    world = World(db)
    seller = world.seller()
    zone = world.zone(["DE"])
    warehouses = [world.warehouse(seller, [zone], priority=i) for i in range(3)]
    product = world.product(seller)
    variants = [world.variant(product, stocks={w: 4 for w in warehouses}) for _ in range(6)]
    untracked = world.variant(product, track=False, stocks={warehouses[0]: 0})
    requested = [(variants[i % 6], 1 + i % 5) for i in range(14)] + [(untracked, 3)]

    view = orders.create(db.uow(), ADMIN, type=OrderType.REGULAR, shipping_country="DE",
                         lines=[orders.LineRequest(v, q) for v, q in requested])

    assert [(ln.variant_id, ln.quantity) for ln in view.lines] == requested
    assert db.rows("SELECT id, variant_id, quantity FROM order_line WHERE order_id = :o "
                   "ORDER BY id", o=view.id) == [
        (ln.id, ln.variant_id, ln.quantity) for ln in view.lines]
    stored = db.rows("SELECT a.order_line_id, s.warehouse_id, a.quantity FROM allocation a "
                     "JOIN stock s ON s.id = a.stock_id JOIN order_line l "
                     "ON l.id = a.order_line_id WHERE l.order_id = :o", o=view.id)
    assert sorted(stored) == sorted((ln.id, a.warehouse_id, a.quantity)
                                    for ln in view.lines for a in ln.allocations)
    for ln, (variant, quantity) in zip(view.lines, requested, strict=True):
        assert sum(a.quantity for a in ln.allocations) == (quantity if variant != untracked
                                                           else 0)
    for variant in variants:  # 14 lines over 6 variants: some split over warehouses
        held = db.scalar("SELECT SUM(quantity_allocated) FROM stock WHERE variant_id = :v",
                         v=variant)
        assert held == sum(q for v, q in requested if v == variant)
    assert db.scalar("SELECT COUNT(*) FROM stock_movement WHERE order_id = :o",
                     o=view.id) == db.scalar(
        "SELECT COUNT(DISTINCT a.stock_id) FROM allocation a JOIN order_line l "
        "ON l.id = a.order_line_id WHERE l.order_id = :o", o=view.id)


def test_a_key_taken_between_the_driver_read_and_the_write_answers_with_that_order(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fast path's read found no order with the key; another request committed one
    before our write: the unique key refuses ours, and the first order is the answer."""
    s = shop(db, stock1=5)
    request = {"type": OrderType.REGULAR, "shipping_country": "DE",
               "lines": [orders.LineRequest(s.variant, 2)], "idempotency_key": "k-2"}
    first = orders.create(db.uow(), ADMIN, **request)  # type: ignore[arg-type]
    # a key lookup that never finds it, as if the first order were not committed yet
    never = {"postgresql": "SELECT 1 WHERE %(key)s::text IS NULL",
             "sqlite": "SELECT 1 WHERE :key IS NULL"}
    monkeypatch.setattr(placement, "_DRIVER_READS", {
        dialect: (stocks_sql, never[dialect])
        for dialect, (stocks_sql, _) in placement._DRIVER_READS.items()})
    published: list[Event] = []
    second = orders.create(db.uow(published), ADMIN, **request)  # type: ignore[arg-type]

    assert second.id == first.id
    assert stocks(s)[0] == (5, 2)  # allocated once
    assert published == []  # nothing new was committed


def test_the_driver_connection_goes_back_to_the_pool_clean(db: Database) -> None:
    """After a write refused mid-way, the pooled connection is as the session expects it."""
    s = shop(db, stock1=5)
    with db.uow() as uow, uow.driver() as conn:
        if db.engine.dialect.name == "postgresql":
            assert conn.autocommit
        else:
            conn.begin_immediate()  # holds the writer turn, then fails
        with pytest.raises(Exception, match="no_such_table"):
            conn.execute("SELECT * FROM no_such_table")
    # the next order, on the session path and on the driver path, works
    orders.create(db.uow(), ADMIN, type=OrderType.REGULAR, shipping_country="DE",
                  lines=[orders.LineRequest(s.variant, 1)])
    with db.engine.connect() as connection:
        assert connection.execute(text("SELECT COUNT(*) FROM orders")).scalar() == 1
    if db.engine.dialect.name == "postgresql":
        from psycopg.pq import TransactionStatus

        with driver_connections(db.engine).lend() as raw:  # lent again, or a new one
            assert raw.autocommit and raw.info.transaction_status == TransactionStatus.IDLE
            assert raw.execute("SHOW plan_cache_mode").fetchone() == ("force_generic_plan",)
        session_side = db.engine.raw_connection()
        try:
            assert session_side.driver_connection.autocommit is False  # type: ignore[union-attr]
        finally:
            session_side.close()


def test_postgresql_plans_the_order_path_once_and_the_rest_per_call(db: Database) -> None:
    """The driver's own pool keeps generic plans and autocommit; the engine's pool keeps
    PostgreSQL's defaults, and disposing the engine closes both."""
    if db.engine.dialect.name != "postgresql":  # SQLite: the engine's own pool lends it
        with db.uow() as uow, uow.driver():
            assert db.engine.pool.checkedout() == 1  # type: ignore[attr-defined]
        return
    with db.uow() as uow, uow.driver() as conn:
        assert conn.autocommit
        assert conn.execute("SHOW plan_cache_mode").fetchone() == ("force_generic_plan",)
    with db.engine.connect() as connection:
        assert connection.execute(text("SHOW plan_cache_mode")).scalar() == "auto"
    connections = driver_connections(db.engine)
    assert connections.factory is not db.engine
    assert connections.idle() >= 1
    engine = make_engine(db.settings)
    try:
        with driver_connections(engine).lend() as lent:
            assert lent.execute("SELECT 1").fetchone() == (1,)
        assert driver_connections(engine).idle() == 1
    finally:
        engine.dispose()
    assert driver_connections(engine).idle() == 0 and lent.closed
