"""Pick batches (API.md "Pick batches"): a warehouse picks many orders at once.

Creating a batch moves the units its orders hold in that warehouse from the order reserve
to the batch reserve (`Stock.quantity_reserved_for_batches`, part of allocated: available
does not change); completing it ships them (one BATCH_PICK movement per stock, one
fulfilment per order); cancelling it hands them back to the orders.

Locking: a batch operation locks the batch row (complete, cancel), then its orders in
ascending id, then their stocks in ascending id. Every order operation locks its order
before its stocks, and reads what open batches hold of it only after that lock, so an
order cancelled or fulfilled while a batch is made, completed or cancelled is seen either
wholly before or wholly after: the reserves always add up.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

from sqlalchemy import Table, bindparam, case, delete, exists, insert, select, update
from sqlalchemy.orm import Session

from domain import ledger, permissions
from domain.errors import (
    DomainError,
    InsufficientStock,
    InvalidInput,
    InvalidState,
    NotFound,
    raise_all,
)
from domain.events import StockChanged
from domain.models import (
    Allocation,
    Fulfillment,
    FulfillmentLine,
    MovementType,
    Order,
    OrderLine,
    OrderStatus,
    OrderType,
    PickBatch,
    PickBatchLine,
    PickBatchStatus,
    ProductVariant,
    Stock,
    Warehouse,
)
from domain.permissions import Principal
from domain.services.orders import FULFILLABLE, FulfillmentView
from domain.uow import UnitOfWork

MAX_ORDERS = 1_000  # per batch (API.md's list-argument limit)
MAX_LINES = 10_000  # order lines per batch


@dataclass(frozen=True, slots=True)
class BatchLineView:
    order_line_id: int
    order_id: int
    quantity: int


@dataclass(frozen=True, slots=True)
class BatchView:
    id: int
    warehouse_id: int
    status: PickBatchStatus
    created_at: datetime
    completed_at: datetime | None
    canceled_at: datetime | None
    lines: tuple[BatchLineView, ...]

    @property
    def order_ids(self) -> tuple[int, ...]:
        """The batch's orders, in the order their lines were added."""
        return tuple(dict.fromkeys(line.order_id for line in self.lines))


def create(uow: UnitOfWork, principal: Principal | None, *, warehouse_id: int,
           order_ids: Sequence[int]) -> BatchView:
    """A batch of the orders' allocated units in the warehouse, or nothing at all."""
    caller = permissions.require_picker(principal)
    if not order_ids:
        raise InvalidInput("at least one order is needed", field="input.orderIds")
    if len(order_ids) > MAX_ORDERS:
        raise InvalidInput(f"at most {MAX_ORDERS:,} orders per batch", field="input.orderIds")
    first_at: dict[int, int] = {}
    raise_all([InvalidInput("this order is listed twice", field=f"input.orderIds.{i}")
               for i, oid in enumerate(order_ids) if first_at.setdefault(oid, i) != i])
    with uow:
        s = uow.session
        _warehouse_of(s, caller, warehouse_id, field="input.warehouseId")
        orders = {o.id: o for o in s.scalars(
            select(Order).where(Order.id.in_(order_ids)).order_by(Order.id)
            .with_for_update())}
        sellers = _sellers_of_orders(s, order_ids) \
            if permissions.seller_scope(caller) is not None else {}
        held: dict[int, list[tuple[int, int, int]]] = defaultdict(list)
        for oid, line_id, stock_id, qty in s.execute(
                select(OrderLine.order_id, Allocation.order_line_id, Allocation.stock_id,
                       Allocation.quantity)
                .join(OrderLine, OrderLine.id == Allocation.order_line_id)
                .join(Stock, Stock.id == Allocation.stock_id)
                .where(OrderLine.order_id.in_(order_ids), Stock.warehouse_id == warehouse_id)
                .order_by(Allocation.order_line_id)):
            held[oid].append((line_id, stock_id, qty))
        batched = dict(s.execute(
            select(PickBatchLine.order_id, PickBatchLine.batch_id)
            .join(PickBatch, PickBatch.id == PickBatchLine.batch_id)
            .where(PickBatchLine.order_id.in_(order_ids), PickBatch.warehouse_id == warehouse_id,
                   PickBatch.status == PickBatchStatus.OPEN)).all())
        errors: list[DomainError] = []
        for i, oid in enumerate(order_ids):
            field = f"input.orderIds.{i}"
            order = orders.get(oid)
            if order is None or not permissions.can_read_order(
                    caller, order.created_by_token_id, sellers.get(oid, ())):
                errors.append(NotFound("order not found", field=field))
            elif order.type is not OrderType.REGULAR or order.status not in FULFILLABLE:
                errors.append(InvalidState(
                    f"a {order.type} order in status {order.status} cannot be picked",
                    field=field))
            elif not held[oid]:
                errors.append(InvalidState(
                    "the order holds no units in this warehouse that are left to ship",
                    field=field))
            elif oid in batched:
                errors.append(InvalidState(
                    f"the order is in open pick batch {batched[oid]} of this warehouse",
                    field=field))
        raise_all(errors)
        if sum(len(held[oid]) for oid in order_ids) > MAX_LINES:
            raise InvalidInput(f"a batch holds at most {MAX_LINES:,} order lines",
                               field="input.orderIds")
        batch = PickBatch(warehouse_id=warehouse_id, status=PickBatchStatus.OPEN)
        s.add(batch)
        s.flush()
        rows = [{"batch_id": batch.id, "order_id": oid, "order_line_id": line_id,
                 "stock_id": stock_id, "quantity": qty}
                for oid in order_ids for line_id, stock_id, qty in held[oid]]
        s.execute(insert(PickBatchLine), rows)
        reserve: dict[int, int] = defaultdict(int)
        for row in rows:
            reserve[row["stock_id"]] += row["quantity"]
        ledger.reserve_for_batches(s, reserve)
        s.flush()
        view = load_view(s, batch.id)
        uow.commit()
        return view


def complete(uow: UnitOfWork, principal: Principal | None, batch_id: int
             ) -> tuple[BatchView, list[FulfillmentView]]:
    """Ship every unit the batch holds, as orderFulfill would, in a few set-based statements."""
    caller = permissions.require_picker(principal)
    with uow:
        s = uow.session
        batch = _lock_open_batch(s, caller, batch_id)
        actor = caller.name
        rows, on_hand = _lock_lines(s, batch.id)
        picked: dict[int, int] = defaultdict(int)  # stock -> units
        untracked: set[int] = set()
        variant_of: dict[int, int] = {}
        for row in rows:
            picked[row.stock_id] += row.quantity
            variant_of[row.stock_id] = row.variant_id
            if not row.tracked:
                untracked.add(row.stock_id)
        # after a forced recount a stock may hold fewer units than are allocated there
        raise_all([InsufficientStock(
            f"the batch picks {n} of this variant here, {on_hand[sid]} on hand (a recount "
            "found less): adjust the stock or cancel the batch", field="id",
            variant_id=variant_of[sid], warehouse_id=batch.warehouse_id, requested=n,
            available=max(on_hand[sid], 0))
            for sid, n in sorted(picked.items()) if sid not in untracked and n > on_hand[sid]])
        # untracked variants keep their stock figures, as with orderFulfill
        ledger.apply(s, {sid: (0 if sid in untracked else -n, -n) for sid, n in picked.items()},
                     type=MovementType.BATCH_PICK, actor=actor,
                     reason=f"pick batch {batch.id}",
                     batch_reserve={sid: -n for sid, n in picked.items()})
        s.execute(delete(Allocation).where(Allocation.id.in_(
            [r.allocation_id for r in rows if r.allocated == r.quantity])))
        partly = [{"aid": r.allocation_id, "q": r.quantity} for r in rows
                  if r.allocated > r.quantity]
        if partly:
            s.connection().execute(_TAKE_FROM_ALLOCATION, partly)
        fulfillments: list[FulfillmentView] = []
        if rows:
            s.connection().execute(_FULFIL_LINE, [{"lid": r.line_id, "q": r.quantity}
                                                  for r in rows])
            order_ids = list(dict.fromkeys(r.order_id for r in rows))
            made = dict(s.execute(
                insert(Fulfillment).returning(Fulfillment.order_id, Fulfillment.id,
                                              sort_by_parameter_order=True),
                [{"order_id": oid} for oid in order_ids]).all())
            s.execute(insert(FulfillmentLine), [
                {"fulfillment_id": made[r.order_id], "order_line_id": r.line_id,
                 "warehouse_id": batch.warehouse_id, "quantity": r.quantity} for r in rows])
            left = exists().where(OrderLine.order_id == Order.id,
                                  OrderLine.quantity_fulfilled < OrderLine.quantity)
            s.execute(update(Order).where(Order.id.in_(order_ids)).values(
                status=case((left, OrderStatus.PARTIALLY_FULFILLED.value),
                            else_=OrderStatus.FULFILLED.value))
                      .execution_options(synchronize_session=False))
            lines_of: dict[int, list[tuple[int, int, int]]] = defaultdict(list)
            for r in rows:
                lines_of[r.order_id].append((r.line_id, batch.warehouse_id, r.quantity))
            fulfillments = [FulfillmentView(made[oid], oid, tuple(lines_of[oid]))
                            for oid in order_ids]
            uow.emit(StockChanged(tuple(sorted({r.variant_id for r in rows}))))
        batch.status = PickBatchStatus.COMPLETED
        batch.completed_at = datetime.now(UTC)
        s.flush()
        view = load_view(s, batch.id)
        uow.commit()
        return view, fulfillments


def cancel(uow: UnitOfWork, principal: Principal | None, batch_id: int) -> BatchView:
    """Hand the batch's units back to its orders (order reserve); nothing ships."""
    caller = permissions.require_picker(principal)
    with uow:
        s = uow.session
        batch = _lock_open_batch(s, caller, batch_id)
        back: dict[int, int] = defaultdict(int)
        for row in _lock_lines(s, batch.id)[0]:
            back[row.stock_id] -= row.quantity
        ledger.reserve_for_batches(s, back)
        batch.status = PickBatchStatus.CANCELED
        batch.canceled_at = datetime.now(UTC)
        s.flush()
        view = load_view(s, batch.id)
        uow.commit()
        return view


# -- reading -------------------------------------------------------------------------------


def load_view(s: Session, batch_id: int) -> BatchView:
    batch = s.get(PickBatch, batch_id)
    if batch is None:
        raise NotFound("pick batch not found", field="id")
    return views(s, [batch])[0]


def views_by_id(s: Session, keys: Sequence[int]) -> list[BatchView | None]:
    found = {v.id: v for v in views(s, list(s.scalars(
        select(PickBatch).where(PickBatch.id.in_(set(keys))))))}
    return [found.get(k) for k in keys]


def page(s: Session, first: int, before_id: int | None, warehouse_id: int | None,
         status: PickBatchStatus | None, seller_id: int | None) -> list[BatchView]:
    """Newest first, at most `first + 1` (to see a next page); `seller_id`: its warehouses'."""
    stmt = select(PickBatch).order_by(PickBatch.id.desc()).limit(first + 1)
    if before_id is not None:
        stmt = stmt.where(PickBatch.id < before_id)
    if warehouse_id is not None:
        stmt = stmt.where(PickBatch.warehouse_id == warehouse_id)
    if status is not None:
        stmt = stmt.where(PickBatch.status == status)
    if seller_id is not None:
        stmt = stmt.where(PickBatch.warehouse_id.in_(
            select(Warehouse.id).where(Warehouse.seller_id == seller_id)))
    return views(s, list(s.scalars(stmt)))


def views(s: Session, batches: Sequence[PickBatch]) -> list[BatchView]:
    """The batches with their lines (one statement)."""
    lines: dict[int, list[BatchLineView]] = defaultdict(list)
    if batches:
        for bid, lid, oid, qty in s.execute(
                select(PickBatchLine.batch_id, PickBatchLine.order_line_id,
                       PickBatchLine.order_id, PickBatchLine.quantity)
                .where(PickBatchLine.batch_id.in_([b.id for b in batches]))
                .order_by(PickBatchLine.id)):
            lines[bid].append(BatchLineView(lid, oid, qty))
    return [BatchView(b.id, b.warehouse_id, b.status, b.created_at, b.completed_at,
                      b.canceled_at, tuple(lines[b.id])) for b in batches]


# -- helpers -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Held:
    """A line of a batch being completed, with what the pick changes."""

    line_id: int
    order_id: int
    stock_id: int
    quantity: int
    allocation_id: int
    allocated: int  # the allocation's units (the batch holds all or part of them)
    variant_id: int
    tracked: bool


def _warehouse_of(s: Session, caller: Principal, warehouse_id: int, *, field: str
                  ) -> Warehouse:
    warehouse = s.get(Warehouse, warehouse_id)
    if warehouse is None or not permissions.can_manage_seller(caller, warehouse.seller_id):
        raise NotFound("warehouse not found", field=field, warehouse_id=warehouse_id)
    return warehouse


def _lock_open_batch(s: Session, caller: Principal, batch_id: int) -> PickBatch:
    batch = s.get(PickBatch, batch_id, with_for_update=True)
    seller = s.scalar(select(Warehouse.seller_id).where(Warehouse.id == batch.warehouse_id)) \
        if batch is not None else None
    if batch is None or seller is None or not permissions.can_manage_seller(caller, seller):
        raise NotFound("pick batch not found", field="id")
    if batch.status is not PickBatchStatus.OPEN:
        raise InvalidState(f"a {batch.status} pick batch cannot change", field="id")
    return batch


def _lock_lines(s: Session, batch_id: int) -> tuple[list[_Held], dict[int, int]]:
    """Lock the batch's orders, then its stocks (ascending ids); read its lines and the
    stocks' on-hand quantities."""
    order_ids = sorted(set(s.scalars(select(PickBatchLine.order_id)
                                     .where(PickBatchLine.batch_id == batch_id))))
    if not order_ids:
        return [], {}
    s.execute(select(Order.id).where(Order.id.in_(order_ids)).order_by(Order.id)
              .with_for_update())
    # read after the orders' locks: an order cancelled meanwhile has left the batch
    rows = [_Held(*row) for row in s.execute(
        select(PickBatchLine.order_line_id, PickBatchLine.order_id, PickBatchLine.stock_id,
               PickBatchLine.quantity, Allocation.id, Allocation.quantity,
               OrderLine.variant_id, ProductVariant.track_inventory)
        .join(OrderLine, OrderLine.id == PickBatchLine.order_line_id)
        .join(Allocation, (Allocation.order_line_id == PickBatchLine.order_line_id)
              & (Allocation.stock_id == PickBatchLine.stock_id))
        .join(ProductVariant, ProductVariant.id == OrderLine.variant_id)
        .where(PickBatchLine.batch_id == batch_id)
        .order_by(PickBatchLine.id))]
    stock_ids = sorted({r.stock_id for r in rows})
    on_hand: dict[int, int] = {}
    if stock_ids:
        on_hand = {sid: q for sid, q in s.execute(
            select(Stock.id, Stock.quantity).where(Stock.id.in_(stock_ids)).order_by(Stock.id)
            .with_for_update(key_share=True))}
    return rows, on_hand


def _sellers_of_orders(s: Session, order_ids: Sequence[int]) -> dict[int, set[int]]:
    found: dict[int, set[int]] = defaultdict(set)
    for oid, seller in s.execute(
            select(OrderLine.order_id, OrderLine.seller_id).distinct()
            .where(OrderLine.order_id.in_(order_ids))):
        found[oid].add(seller)
    return found


ALLOCATION = cast(Table, Allocation.__table__)
ORDER_LINE = cast(Table, OrderLine.__table__)
# the batch held part of the allocation (the rest stays the order's)
_TAKE_FROM_ALLOCATION = (
    update(ALLOCATION).where(ALLOCATION.c.id == bindparam("aid"))
    .values(quantity=ALLOCATION.c.quantity - bindparam("q"))
)
_FULFIL_LINE = (
    update(ORDER_LINE).where(ORDER_LINE.c.id == bindparam("lid"))
    .values(quantity_fulfilled=ORDER_LINE.c.quantity_fulfilled + bindparam("q"))
)
