"""Pick batches through the services, on SQLite and PostgreSQL: order reserve and batch
reserve add up to allocated, completing ships like orderFulfill, cancelling gives the units
back, and the orders' own operations respect what a batch holds."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from domain.errors import (
    DomainError,
    ErrorCode,
    InvalidInput,
    InvalidState,
    NotFound,
    PermissionDenied,
    Rejected,
)
from domain.models import OrderStatus, OrderType, PickBatchStatus, Role
from domain.permissions import Principal
from domain.services import audit, batches, orders
from domain.services import stock as stock_service
from tests.concurrency.test_no_oversell import assert_books_balance
from tests.conftest import Database
from tests.factories import ADMIN, Shop, shop


def _order(s: Shop, quantity: int, *, type: OrderType = OrderType.REGULAR,
           variant: int | None = None) -> orders.OrderView:
    return orders.create(s.world.db.uow(), ADMIN, type=type, shipping_country="DE",
                         lines=[orders.LineRequest(variant or s.variant, quantity)])


def _reserves(db: Database, variant: int, warehouse: int) -> tuple[int, int, int, int]:
    """(quantity, allocated, order reserve, batch reserve) of one stock."""
    q, a, b = db.rows("SELECT quantity, quantity_allocated, quantity_reserved_for_batches "
                      "FROM stock WHERE variant_id = :v AND warehouse_id = :w",
                      v=variant, w=warehouse)[0]
    return int(q), int(a), int(a) - int(b), int(b)


def _codes(exc: pytest.ExceptionInfo[DomainError]) -> list[tuple[str, str | None]]:
    return [(e.code.value, e.field) for e in exc.value.errors]


def test_a_batch_moves_units_from_order_reserve_to_batch_reserve(db: Database) -> None:
    s = shop(db, stock1=10, stock2=10)
    first, second = _order(s, 3), _order(s, 12)  # 12: 7 in w1, 5 in w2
    batch = batches.create(db.uow(), ADMIN, warehouse_id=s.w1,
                           order_ids=[first.id, second.id])
    assert batch.status is PickBatchStatus.OPEN
    assert [(ln.order_id, ln.quantity) for ln in batch.lines] == [(first.id, 3), (second.id, 7)]
    assert _reserves(db, s.variant, s.w1) == (10, 10, 0, 10)
    assert _reserves(db, s.variant, s.w2) == (10, 5, 5, 0)  # the other warehouse's stays
    assert_books_balance(db)

    canceled = batches.cancel(db.uow(), ADMIN, batch.id)
    assert canceled.status is PickBatchStatus.CANCELED and canceled.canceled_at is not None
    assert _reserves(db, s.variant, s.w1) == (10, 10, 10, 0)
    # no movement: allocated never changed
    assert db.scalar("SELECT count(*) FROM stock_movement WHERE type = 'BATCH_PICK'") == 0
    again = batches.create(db.uow(), ADMIN, warehouse_id=s.w1, order_ids=[first.id])
    assert again.id != batch.id
    assert_books_balance(db)


def test_completing_ships_every_unit_with_one_movement_per_stock(db: Database) -> None:
    s = shop(db, stock1=10, stock2=10)
    other = s.world.variant(s.product, stocks={s.w1: 4})
    whole = orders.create(db.uow(), ADMIN, type=OrderType.REGULAR, shipping_country="DE",
                          lines=[orders.LineRequest(s.variant, 2), orders.LineRequest(other, 4)])
    split = _order(s, 12)  # 8 left in w1 after `whole`: 8 in w1, 4 in w2
    batch = batches.create(db.uow(), ADMIN, warehouse_id=s.w1,
                           order_ids=[split.id, whole.id])
    done, made = batches.complete(db.uow(), ADMIN, batch.id)

    assert done.status is PickBatchStatus.COMPLETED and done.completed_at is not None
    assert _reserves(db, s.variant, s.w1) == (0, 0, 0, 0)
    assert _reserves(db, other, s.w1) == (0, 0, 0, 0)
    assert _reserves(db, s.variant, s.w2) == (10, 4, 4, 0)
    moves = db.rows("SELECT variant_id, quantity_change, allocated_change, order_id, reason "
                    "FROM stock_movement WHERE type = 'BATCH_PICK' ORDER BY stock_id")
    assert sorted((m[0], m[1], m[2]) for m in moves) == sorted(
        [(s.variant, -10, -10), (other, -4, -4)])
    assert {m[3] for m in moves} == {None}
    assert {m[4] for m in moves} == {f"pick batch {batch.id}"}
    assert [(f.order_id, sorted(q for _, _, q in f.lines)) for f in made] == [
        (split.id, [8]), (whole.id, [2, 4])]
    statuses = dict(db.rows("SELECT id, status FROM orders WHERE id IN (:a, :b)",
                            a=whole.id, b=split.id))
    assert statuses == {whole.id: "FULFILLED", split.id: "PARTIALLY_FULFILLED"}
    with db.reader() as r:
        read = orders.load_view(r, split.id)
    assert [(ln.quantity_fulfilled, [(a.warehouse_id, a.quantity) for a in ln.allocations])
            for ln in read.lines] == [(8, [(s.w2, 4)])]
    assert_books_balance(db)
    # the rest ships through orderFulfill as usual
    _, fulfilment = orders.fulfill(db.uow(), ADMIN, split.id,
                                   [orders.FulfillRequest(split.lines[0].id, 4)])
    assert fulfilment.lines == ((split.lines[0].id, s.w2, 4),)
    with pytest.raises(InvalidState):
        batches.complete(db.uow(), ADMIN, batch.id)
    with pytest.raises(InvalidState):
        batches.cancel(db.uow(), ADMIN, batch.id)
    assert_books_balance(db)


def test_fulfilling_batch_held_units_is_invalid_state_and_changes_nothing(db: Database) -> None:
    s = shop(db, stock1=5, stock2=10)
    order = _order(s, 8)  # 5 in w1 (batched), 3 in w2
    line = order.lines[0].id
    batches.create(db.uow(), ADMIN, warehouse_id=s.w1, order_ids=[order.id])
    before = db.rows("SELECT id, quantity, quantity_allocated, quantity_reserved_for_batches "
                     "FROM stock ORDER BY id")
    with pytest.raises(InvalidState) as refused:
        orders.fulfill(db.uow(), ADMIN, order.id, [orders.FulfillRequest(line, 4)])
    assert _codes(refused) == [("INVALID_STATE", "lines.0.quantity")]
    with pytest.raises(InvalidState):  # naming the batch's warehouse changes nothing either
        orders.fulfill(db.uow(), ADMIN, order.id, [orders.FulfillRequest(line, 4, s.w1)])
    assert db.rows("SELECT id, quantity, quantity_allocated, quantity_reserved_for_batches "
                   "FROM stock ORDER BY id") == before
    # the 3 units the order holds itself (in w2) ship
    view, fulfilment = orders.fulfill(db.uow(), ADMIN, order.id,
                                      [orders.FulfillRequest(line, 3)])
    assert fulfilment.lines == ((line, s.w2, 3),)
    assert view.status is OrderStatus.PARTIALLY_FULFILLED
    assert _reserves(db, s.variant, s.w1) == (5, 5, 0, 5)
    assert _reserves(db, s.variant, s.w2) == (7, 0, 0, 0)
    assert_books_balance(db)


def test_cancelling_a_batched_order_takes_it_out_of_the_batch(db: Database) -> None:
    s = shop(db, stock1=10)
    kept, dropped = _order(s, 2), _order(s, 5)
    batch = batches.create(db.uow(), ADMIN, warehouse_id=s.w1, order_ids=[kept.id, dropped.id])
    orders.cancel(db.uow(), ADMIN, dropped.id)
    assert _reserves(db, s.variant, s.w1) == (10, 2, 0, 2)
    with db.reader() as r:
        assert batches.load_view(r, batch.id).order_ids == (kept.id,)
    assert_books_balance(db)
    _, made = batches.complete(db.uow(), ADMIN, batch.id)
    assert [f.order_id for f in made] == [kept.id]
    assert _reserves(db, s.variant, s.w1) == (8, 0, 0, 0)
    assert_books_balance(db)


def test_a_batch_left_without_orders_completes_with_no_fulfilment(db: Database) -> None:
    s = shop(db, stock1=10)
    order = _order(s, 2)
    batch = batches.create(db.uow(), ADMIN, warehouse_id=s.w1, order_ids=[order.id])
    orders.cancel(db.uow(), ADMIN, order.id)
    done, made = batches.complete(db.uow(), ADMIN, batch.id)
    assert (done.status, made, done.lines) == (PickBatchStatus.COMPLETED, [], ())
    assert _reserves(db, s.variant, s.w1) == (10, 0, 0, 0)


def test_which_orders_a_batch_refuses(db: Database) -> None:
    s = shop(db, stock1=10, stock2=10)
    draft = _order(s, 1, type=OrderType.DRAFT)
    elsewhere = orders.create(db.uow(), ADMIN, type=OrderType.REGULAR, shipping_country="DE",
                              lines=[orders.LineRequest(
                                  s.world.variant(s.product, stocks={s.w2: 3}), 1)])
    canceled = _order(s, 1)
    orders.cancel(db.uow(), ADMIN, canceled.id)
    shipped = _order(s, 1)
    orders.fulfill(db.uow(), ADMIN, shipped.id, [orders.FulfillRequest(shipped.lines[0].id, 1)])
    busy = _order(s, 1)
    batches.create(db.uow(), ADMIN, warehouse_id=s.w1, order_ids=[busy.id])
    good = _order(s, 1)
    before = db.rows("SELECT id, quantity_allocated, quantity_reserved_for_batches FROM stock "
                     "ORDER BY id")
    batch_count = db.scalar("SELECT count(*) FROM pick_batch")

    with pytest.raises(Rejected) as refused:
        batches.create(db.uow(), ADMIN, warehouse_id=s.w1, order_ids=[
            good.id, draft.id, elsewhere.id, canceled.id, shipped.id, busy.id, 10**9])
    assert _codes(refused) == [
        ("INVALID_STATE", "input.orderIds.1"), ("INVALID_STATE", "input.orderIds.2"),
        ("INVALID_STATE", "input.orderIds.3"), ("INVALID_STATE", "input.orderIds.4"),
        ("INVALID_STATE", "input.orderIds.5"), ("NOT_FOUND", "input.orderIds.6")]
    with pytest.raises(InvalidInput) as twice:
        batches.create(db.uow(), ADMIN, warehouse_id=s.w1, order_ids=[good.id, good.id])
    assert _codes(twice) == [("INVALID", "input.orderIds.1")]
    with pytest.raises(InvalidInput):
        batches.create(db.uow(), ADMIN, warehouse_id=s.w1, order_ids=[])
    with pytest.raises(InvalidInput):
        batches.create(db.uow(), ADMIN, warehouse_id=s.w1,
                       order_ids=list(range(1, batches.MAX_ORDERS + 2)))
    with pytest.raises(NotFound) as nowhere:
        batches.create(db.uow(), ADMIN, warehouse_id=10**9, order_ids=[good.id])
    assert _codes(nowhere) == [("NOT_FOUND", "input.warehouseId")]
    # the busy order may join a batch of another warehouse
    assert db.rows("SELECT id, quantity_allocated, quantity_reserved_for_batches FROM stock "
                   "ORDER BY id") == before
    assert db.scalar("SELECT count(*) FROM pick_batch") == batch_count
    # an order split over both warehouses: its w2 units make a batch of w2
    split = _order(s, 12)  # w1: 9 on hand, 3 allocated, so 6 in w1 and 6 in w2
    assert [ln.quantity for ln in batches.create(
        db.uow(), ADMIN, warehouse_id=s.w2, order_ids=[split.id]).lines] == [6]


def test_seller_tokens_batch_their_own_warehouses_only(db: Database) -> None:
    s = shop(db, stock1=10)
    rival = shop(db, stock1=10)
    mine, theirs = _order(s, 2), _order(rival, 2)
    seller = Principal(token_id=900_001, role=Role.SELLER, seller_id=s.seller)
    storefront = Principal(token_id=900_002, role=Role.STOREFRONT)
    with pytest.raises(PermissionDenied):
        batches.create(db.uow(), storefront, warehouse_id=s.w1, order_ids=[mine.id])
    with pytest.raises(NotFound):
        batches.create(db.uow(), seller, warehouse_id=rival.w1, order_ids=[theirs.id])
    with pytest.raises(NotFound) as refused:
        batches.create(db.uow(), seller, warehouse_id=s.w1, order_ids=[mine.id, theirs.id])
    assert _codes(refused) == [("NOT_FOUND", "input.orderIds.1")]
    own = batches.create(db.uow(), seller, warehouse_id=s.w1, order_ids=[mine.id])
    foreign = batches.create(db.uow(), ADMIN, warehouse_id=rival.w1, order_ids=[theirs.id])
    with pytest.raises(NotFound):
        batches.complete(db.uow(), seller, foreign.id)
    with pytest.raises(NotFound):
        batches.cancel(db.uow(), seller, foreign.id)
    with db.reader() as r:
        assert [b.id for b in batches.page(r, 10, None, None, None, s.seller)] == [own.id]
    batches.complete(db.uow(), seller, own.id)
    assert _reserves(db, s.variant, s.w1) == (8, 0, 0, 0)


def test_check_finds_and_repair_mends_a_batch_reserve_that_is_off(db: Database) -> None:
    s = shop(db, stock1=10)
    order = _order(s, 4)
    batches.create(db.uow(), ADMIN, warehouse_id=s.w1, order_ids=[order.id])
    stock_id = db.scalar("SELECT id FROM stock WHERE variant_id = :v AND warehouse_id = :w",
                         v=s.variant, w=s.w1)
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE stock SET quantity_reserved_for_batches = 1 WHERE id = :i"),
                     {"i": stock_id})
    with db.reader() as r:
        [drift] = audit.audit(r)
    assert drift.problems == ["batch reserve 1 != open pick batches 4"]
    audit.repair(db.uow(), actor="cli")
    assert _reserves(db, s.variant, s.w1) == (10, 4, 0, 4)
    assert_books_balance(db)


def test_a_recount_that_found_less_refuses_the_pick_instead_of_driving_stock_negative(
    db: Database
) -> None:
    """A forced recount may leave fewer units on hand than are allocated (stock.py): units
    that are not there cannot ship, through a batch or through orderFulfill."""
    s = shop(db, stock1=10, stock2=0)
    order = _order(s, 6)
    batch = batches.create(db.uow(), ADMIN, warehouse_id=s.w1, order_ids=[order.id])
    stock_service.adjust(db.uow(), ADMIN, variant_id=s.variant, warehouse_id=s.w1, delta=-7,
                         reason="recount", force=True)
    before = _reserves(db, s.variant, s.w1)
    assert before == (3, 6, 0, 6)

    with pytest.raises(DomainError) as refused:
        batches.complete(db.uow(), ADMIN, batch.id)
    [error] = refused.value.errors
    assert (error.code, error.field, error.requested, error.available) == (
        ErrorCode.INSUFFICIENT_STOCK, "id", 6, 3)
    assert _reserves(db, s.variant, s.w1) == before

    batches.cancel(db.uow(), ADMIN, batch.id)
    with pytest.raises(DomainError) as refused:
        orders.fulfill(db.uow(), ADMIN, order.id,
                       [orders.FulfillRequest(order.lines[0].id, 6, None)])
    [error] = refused.value.errors
    assert (error.code, error.requested, error.available) == (
        ErrorCode.INSUFFICIENT_STOCK, 6, 3)
    assert _reserves(db, s.variant, s.w1) == (3, 6, 6, 0)
    # what is on hand still ships
    view, _ = orders.fulfill(db.uow(), ADMIN, order.id,
                             [orders.FulfillRequest(order.lines[0].id, 3, s.w1)])
    assert view.status is OrderStatus.PARTIALLY_FULFILLED
    assert _reserves(db, s.variant, s.w1) == (0, 3, 3, 0)  # the shortfall stays visible
