"""Stock operations: adjustments, transfers, purchase orders. Every change goes to the ledger.

On-hand never drops below what orders hold allocated through these operations, unless the
caller forces it (a recount that found less): the shortfall then shows as
`quantity_allocated > quantity` on the stock and in the movement's resulting levels.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import ARRAY, Integer, String, bindparam, cast, func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from domain import ledger, permissions, stock_rules
from domain.db import pg_array
from domain.errors import (
    Conflict,
    DomainError,
    InsufficientStock,
    InvalidInput,
    NotFound,
    check_text,
    clip,
    raise_all,
)
from domain.events import StockChanged
from domain.models import (
    Allocation,
    MovementType,
    OrderLine,
    ProductVariant,
    PurchaseOrder,
    PurchaseOrderLine,
    Stock,
    Warehouse,
)
from domain.permissions import Principal
from domain.uow import UnitOfWork

MAX_QUANTITY = 1_000_000
MAX_PURCHASE_LINES = 500
MAX_STOCK = 2**31 - 1


@dataclass(frozen=True, slots=True)
class PurchaseLine:
    variant_id: int
    quantity: int


def orders_at_risk(session: Session, stock_id: int) -> tuple[int, ...]:
    """Orders holding allocations on the stock, oldest first."""
    return tuple(sorted(set(session.scalars(
        select(OrderLine.order_id)
        .join(Allocation, Allocation.order_line_id == OrderLine.id)
        .where(Allocation.stock_id == stock_id)))))


def below_allocated(session: Session, stock: Stock, quantity: int, field: str) -> DomainError:
    order_ids = orders_at_risk(session, stock.id)
    return InvalidInput(
        f"{stock.quantity_allocated} units are allocated to orders {list(order_ids)}; "
        "on-hand cannot go below that (force it to record a shortfall)",
        field=field, variant_id=stock.variant_id, warehouse_id=stock.warehouse_id,
        requested=quantity, available=stock.quantity_allocated, order_ids=order_ids,
    )


def _seller_of_variant(s: Session, variant_id: int) -> int | None:
    return s.scalar(select(ProductVariant.seller_id).where(ProductVariant.id == variant_id))


def _warehouse_of(s: Session, principal: Principal, warehouse_id: int, seller_id: int,
                  field: str) -> Warehouse:
    """The variant's seller's warehouse. Another seller's is NOT_FOUND for a seller token,
    as an unknown one is (it must not tell them apart), and INVALID for an admin."""
    warehouse = s.get(Warehouse, warehouse_id)
    missing = NotFound("warehouse not found", field=field, warehouse_id=warehouse_id)
    permissions.require_seller_access(principal, warehouse.seller_id if warehouse else None,
                                      missing)
    assert warehouse is not None
    if warehouse.seller_id != seller_id:
        raise InvalidInput("the warehouse belongs to another seller than the variant",
                           field=field, warehouse_id=warehouse_id)
    return warehouse


def _stock_manager(s: Session, principal: Principal | None, variant_id: int,
                   *warehouses: tuple[int, str]) -> Principal:
    """The caller, once the variant exists, each (warehouse, input field) is its seller's,
    and the caller may manage that seller's stock."""
    seller_id = _seller_of_variant(s, variant_id)
    caller = permissions.require_seller_access(
        principal, seller_id,
        NotFound("variant not found", field="input.variantId", variant_id=variant_id))
    assert seller_id is not None
    for warehouse_id, field in warehouses:
        _warehouse_of(s, caller, warehouse_id, seller_id, field)
    return caller


def lock_or_create(
    s: Session, pairs: Sequence[tuple[int, int]]
) -> dict[tuple[int, int], Stock]:
    """Stocks for (variant, warehouse) pairs, all locked in one statement in id order (the
    global lock order); missing ones are created."""
    variant_ids = {v for v, _ in pairs}
    warehouse_ids = {w for _, w in pairs}
    found = {(st.variant_id, st.warehouse_id): st for st in s.scalars(
        select(Stock)
        .where(Stock.variant_id.in_(variant_ids), Stock.warehouse_id.in_(warehouse_ids))
        .order_by(Stock.id)
        .with_for_update(key_share=True))}
    missing = [p for p in dict.fromkeys(pairs) if p not in found]
    if missing:
        for v, w in missing:
            found[(v, w)] = Stock(variant_id=v, warehouse_id=w, quantity=0,
                                  quantity_allocated=0)
            s.add(found[(v, w)])
        try:
            s.flush()
        except IntegrityError:
            raise Conflict("the stock record was created meanwhile; retry") from None
    return found


def adjust(
    uow: UnitOfWork,
    principal: Principal | None,
    *,
    variant_id: int,
    warehouse_id: int,
    delta: int,
    reason: str,
    expected_quantity: int | None = None,
    force: bool = False,
) -> Stock:
    """Change on-hand by delta (compare-and-set with expected_quantity); one ADJUSTMENT."""
    errors: list[DomainError] = []
    if delta == 0 or abs(delta) > MAX_STOCK:
        errors.append(InvalidInput("delta must be a non-zero change", field="input.delta"))
    try:
        reason = check_text(reason, "input.reason", max_length=500, what="reason")
    except DomainError as exc:
        errors.append(exc)
    raise_all(errors)
    with uow:
        s = uow.session
        actor = _stock_manager(s, principal, variant_id,
                               (warehouse_id, "input.warehouseId")).name
        stock = lock_or_create(s, [(variant_id, warehouse_id)])[(variant_id, warehouse_id)]
        if expected_quantity is not None and stock.quantity != expected_quantity:
            raise Conflict(f"on-hand is {stock.quantity}, not {expected_quantity}",
                           field="input.expectedQuantity", variant_id=variant_id,
                           warehouse_id=warehouse_id)
        new = stock.quantity + delta
        if not 0 <= new <= MAX_STOCK:
            raise InvalidInput(f"on-hand would be {new}", field="input.delta",
                               variant_id=variant_id, warehouse_id=warehouse_id)
        if new < stock.quantity_allocated and not force:
            raise below_allocated(s, stock, new, "input.delta")
        ledger.apply(s, {stock.id: (delta, 0)}, type=MovementType.ADJUSTMENT, actor=actor,
                     reason=reason)
        s.refresh(stock)
        uow.emit(StockChanged((variant_id,)))
        uow.commit()
    return stock


def set_low_stock_threshold(
    uow: UnitOfWork, principal: Principal | None, *, variant_id: int, warehouse_id: int,
    threshold: int | None,
) -> Stock:
    """Flag the stock on dashboards when available falls below `threshold` (None: never)."""
    if threshold is not None and not 0 <= threshold <= MAX_STOCK:
        raise InvalidInput("lowStockThreshold must be 0 or more",
                           field="input.lowStockThreshold")
    with uow:
        s = uow.session
        _stock_manager(s, principal, variant_id, (warehouse_id, "input.warehouseId"))
        stock = s.scalars(select(Stock).where(Stock.variant_id == variant_id,
                                              Stock.warehouse_id == warehouse_id)).first()
        if stock is None:
            raise NotFound("the warehouse holds no stock record of this variant",
                           field="input.warehouseId", warehouse_id=warehouse_id)
        stock.low_stock_threshold = threshold
        uow.commit()
    return stock


def transfer(
    uow: UnitOfWork,
    principal: Principal | None,
    *,
    variant_id: int,
    from_warehouse_id: int,
    to_warehouse_id: int,
    quantity: int,
) -> tuple[Stock, Stock]:
    """Move available (unallocated) units between two warehouses of the variant's seller."""
    if not 1 <= quantity <= MAX_QUANTITY:
        raise InvalidInput(f"quantity must be between 1 and {MAX_QUANTITY:,}",
                           field="input.quantity")
    if from_warehouse_id == to_warehouse_id:
        raise InvalidInput("source and destination are the same warehouse",
                           field="input.toWarehouseId")
    with uow:
        s = uow.session
        actor = _stock_manager(s, principal, variant_id,
                               (from_warehouse_id, "input.fromWarehouseId"),
                               (to_warehouse_id, "input.toWarehouseId")).name
        source = s.scalars(select(Stock.id).where(
            Stock.variant_id == variant_id, Stock.warehouse_id == from_warehouse_id)).first()
        if source is None:
            raise InsufficientStock("the source warehouse holds none of this variant",
                                    field="input.quantity", variant_id=variant_id,
                                    warehouse_id=from_warehouse_id, requested=quantity,
                                    available=0)
        stocks = lock_or_create(s, [(variant_id, from_warehouse_id),
                                    (variant_id, to_warehouse_id)])
        src, dst = stocks[(variant_id, from_warehouse_id)], stocks[(variant_id, to_warehouse_id)]
        free = stock_rules.available(src.quantity, src.quantity_allocated)
        if quantity > free:
            raise InsufficientStock(f"only {free} available to move", field="input.quantity",
                                    variant_id=variant_id, warehouse_id=from_warehouse_id,
                                    requested=quantity, available=free)
        if dst.quantity + quantity > MAX_STOCK:
            raise InvalidInput("the destination would hold too much", field="input.quantity")
        reason = f"transfer {from_warehouse_id} -> {to_warehouse_id}"
        ledger.apply(s, {src.id: (-quantity, 0)}, type=MovementType.TRANSFER_OUT, actor=actor,
                     reason=reason)
        ledger.apply(s, {dst.id: (quantity, 0)}, type=MovementType.TRANSFER_IN, actor=actor,
                     reason=reason)
        s.refresh(src)
        s.refresh(dst)
        uow.emit(StockChanged((variant_id,)))
        uow.commit()
    return src, dst


def _merge(lines: Sequence[PurchaseLine], prefix: str = "lines") -> dict[int, int]:
    if not lines:
        raise InvalidInput("at least one line is needed", field=prefix)
    if len(lines) > MAX_PURCHASE_LINES:
        raise InvalidInput(f"at most {MAX_PURCHASE_LINES} lines per purchase order",
                           field=prefix)
    merged: dict[int, int] = defaultdict(int)
    errors: list[DomainError] = []
    for i, line in enumerate(lines):
        if not 1 <= line.quantity <= MAX_QUANTITY:
            errors.append(InvalidInput(f"quantity must be between 1 and {MAX_QUANTITY:,}",
                                       field=f"{prefix}.{i}.quantity"))
        merged[line.variant_id] += line.quantity
    raise_all(errors)
    return dict(merged)


def create_purchase_order(
    uow: UnitOfWork, principal: Principal | None, *, warehouse_id: int,
    lines: Sequence[PurchaseLine],
) -> PurchaseOrder:
    """Record stock ordered into a warehouse; it shows as incoming until received."""
    merged = _merge(lines)
    with uow:
        s = uow.session
        warehouse = s.get(Warehouse, warehouse_id)
        caller = permissions.require_seller_access(
            principal, warehouse.seller_id if warehouse else None,
            NotFound("warehouse not found", field="input.warehouseId",
                     warehouse_id=warehouse_id))
        assert warehouse is not None
        sellers = dict(s.execute(
            select(ProductVariant.id, ProductVariant.seller_id)
            .where(ProductVariant.id.in_(merged))).all())
        errors: list[DomainError] = []
        for i, line in enumerate(lines):
            if line.variant_id not in sellers:
                errors.append(NotFound("variant not found", field=f"lines.{i}.variantId",
                                       variant_id=line.variant_id))
            elif sellers[line.variant_id] != warehouse.seller_id and \
                    permissions.seller_scope(caller) is not None:
                # a seller must not tell another seller's variant from an unknown one
                errors.append(NotFound("variant not found", field=f"lines.{i}.variantId",
                                       variant_id=line.variant_id))
            elif sellers[line.variant_id] != warehouse.seller_id:
                errors.append(InvalidInput("the variant belongs to another seller",
                                           field=f"lines.{i}.variantId",
                                           variant_id=line.variant_id))
        raise_all(errors)
        po = PurchaseOrder(warehouse_id=warehouse_id)
        s.add(po)
        s.flush()
        s.add_all(PurchaseOrderLine(purchase_order_id=po.id, variant_id=v, quantity=q,
                                    quantity_received=0) for v, q in merged.items())
        uow.emit(StockChanged(tuple(sorted(merged))))
        uow.commit()
    return po


def receive_purchase_order(
    uow: UnitOfWork, principal: Principal | None, purchase_order_id: int,
    lines: Sequence[PurchaseLine],
) -> PurchaseOrder:
    """Add received units to on-hand; receiving more than is still open is INVALID."""
    _merge(lines)  # validates the quantities
    with uow:
        s = uow.session
        po = s.scalars(select(PurchaseOrder).where(PurchaseOrder.id == purchase_order_id)
                       .with_for_update()).first()
        owner = s.scalar(select(Warehouse.seller_id).where(Warehouse.id == po.warehouse_id)) \
            if po else None
        actor = permissions.require_seller_access(
            principal, owner, NotFound("purchase order not found", field="id")).name
        assert po is not None
        po_lines = {ln.variant_id: ln for ln in s.scalars(
            select(PurchaseOrderLine).where(PurchaseOrderLine.purchase_order_id == po.id))}
        errors: list[DomainError] = []
        received: dict[int, int] = defaultdict(int)
        for i, line in enumerate(lines):
            po_line = po_lines.get(line.variant_id)
            if po_line is None:
                errors.append(InvalidInput("the variant is not on this purchase order",
                                           field=f"lines.{i}.variantId",
                                           variant_id=line.variant_id))
                continue
            received[line.variant_id] += line.quantity
            still_open = po_line.quantity - po_line.quantity_received
            if received[line.variant_id] > still_open:
                errors.append(InvalidInput(f"only {still_open} still open on this line",
                                           field=f"lines.{i}.quantity",
                                           variant_id=line.variant_id, requested=line.quantity,
                                           available=still_open))
        raise_all(errors)
        for variant_id in sorted(received):
            po_lines[variant_id].quantity_received += received[variant_id]
        stocks = lock_or_create(s, [(v, po.warehouse_id) for v in sorted(received)])
        ledger.apply(s, {stocks[(v, po.warehouse_id)].id: (q, 0) for v, q in received.items()},
                     type=MovementType.PURCHASE_RECEIVING, actor=actor,
                     reason=f"purchase order {po.id}")
        uow.emit(StockChanged(tuple(sorted(received))))
        uow.commit()
    return po


@dataclass(frozen=True, slots=True)
class BulkRow:
    """One row of a bulk stock update; `error` is set when the API could not decode it."""

    warehouse_id: int
    quantity: int
    variant_id: int | None = None
    sku: str | None = None
    force: bool = False
    error: DomainError | None = None


class Level(NamedTuple):
    """A stock's counters as locked by a bulk update."""

    stock_id: int
    quantity: int
    allocated: int
    low_stock_threshold: int | None
    reserved_for_batches: int = 0


class StockView(NamedTuple):
    """A stock as a bulk update left it (plain data: cheap for thousands of rows)."""

    id: int
    variant_id: int
    warehouse_id: int
    quantity: int
    quantity_allocated: int
    low_stock_threshold: int | None
    quantity_reserved_for_batches: int


@dataclass(slots=True)
class BulkOutcome:
    stocks: list[StockView | None]
    errors: list[list[DomainError]]
    count: int = 0
    variant_ids: tuple[int, ...] = ()

    @property
    def failed(self) -> bool:
        return any(self.errors)


def bulk_set_quantities(
    uow: UnitOfWork,
    principal: Principal | None,
    rows: Sequence[BulkRow],
    *,
    reject_failed_rows: bool,
    reason: str = "bulk stock update",
) -> BulkOutcome:
    """Set on-hand for many (variant or SKU, warehouse) rows in a few set-based statements.

    Every row is checked first. Without `reject_failed_rows` one bad row applies nothing;
    with it, the good rows apply and the bad ones carry their errors.
    """
    principal = permissions.require_manager(principal)
    with uow:
        outcome = apply_bulk(uow.session, principal, rows,
                             reject_failed_rows=reject_failed_rows, reason=reason)
        if outcome.count:
            uow.emit(StockChanged(outcome.variant_ids))
            uow.commit()
    return outcome


def apply_bulk(
    s: Session,
    principal: Principal,
    rows: Sequence[BulkRow],
    *,
    reject_failed_rows: bool,
    movement_type: MovementType = MovementType.STOCK_UPDATE,
    reason: str,
    actor: str | None = None,
) -> BulkOutcome:
    """`bulk_set_quantities` inside the caller's transaction (which commits or not)."""
    outcome = BulkOutcome(stocks=[None] * len(rows), errors=[[] for _ in rows])
    targets = _bulk_targets(s, principal, rows, outcome)
    good = [i for i in range(len(rows)) if not outcome.errors[i]]
    levels = _bulk_lock(s, sorted({targets[i] for i in good}))
    for i in good:
        level = levels.get(targets[i])
        row = rows[i]
        if level is not None and row.quantity < level.allocated and not row.force:
            stock = Stock(id=level.stock_id, variant_id=targets[i][0],
                          warehouse_id=targets[i][1], quantity=level.quantity,
                          quantity_allocated=level.allocated)
            outcome.errors[i].append(below_allocated(s, stock, row.quantity,
                                                     f"stocks.{i}.quantity"))
    if outcome.failed and not reject_failed_rows:
        return outcome
    good = [i for i in range(len(rows)) if not outcome.errors[i]]
    wanted = {targets[i]: rows[i].quantity for i in good}
    _bulk_apply(s, wanted, levels, movement_type=movement_type, reason=reason,
                actor=actor or principal.name)
    for i in good:
        level = levels[targets[i]]
        outcome.stocks[i] = StockView(level.stock_id, targets[i][0], targets[i][1],
                                      level.quantity, level.allocated,
                                      level.low_stock_threshold, level.reserved_for_batches)
    outcome.count = len(good)
    outcome.variant_ids = tuple(sorted({targets[i][0] for i in good}))
    return outcome


def _bulk_targets(
    s: Session, principal: Principal, rows: Sequence[BulkRow], outcome: BulkOutcome
) -> dict[int, tuple[int, int]]:
    """Row index -> (variant id, warehouse id) for rows that name a stock they may set.

    A SKU is unique per seller, so a row's SKU names a variant of the seller that owns the
    row's warehouse. A seller's row that names another seller's warehouse or variant gets
    the very error an unknown one gets.
    """
    permissions.require_manager(principal)
    skus = {r.sku for r in rows if r.sku is not None and r.error is None}
    variant_ids = {r.variant_id for r in rows if r.variant_id is not None}
    warehouse_ids = {r.warehouse_id for r in rows}
    visible = permissions.seller_scope(principal)
    variants = {vid: found for vid, found in
                _variants_with_sellers(s, sorted(skus), sorted(variant_ids)).items()
                if visible is None or found[1] == visible}
    by_sku = {(sku, seller): vid for vid, (sku, seller) in variants.items() if sku in skus}
    owners: dict[int, int] = {
        wid: seller for wid, seller in _select_in(
            s, select(Warehouse.id, Warehouse.seller_id), Warehouse.id,
            sorted(warehouse_ids), Integer)
        if visible is None or seller == visible}
    targets: dict[int, tuple[int, int]] = {}
    seen: set[tuple[int, int]] = set()
    for i, row in enumerate(rows):
        errors = outcome.errors[i]
        if row.error is not None:
            errors.extend(row.error.errors)
            continue
        if not 0 <= row.quantity <= MAX_STOCK:
            errors.append(InvalidInput("quantity must be 0 or more",
                                       field=f"stocks.{i}.quantity"))
        owner = owners.get(row.warehouse_id)
        if owner is None:
            errors.append(NotFound("warehouse not found", field=f"stocks.{i}.warehouseId",
                                   warehouse_id=row.warehouse_id))
        variant_id = row.variant_id
        if variant_id is None and row.sku is None:
            errors.append(InvalidInput("give variantId or sku", field=f"stocks.{i}.variantId"))
        elif row.sku is not None and owner is not None:
            found = by_sku.get((row.sku, owner))
            if found is None:
                errors.append(NotFound(f"no variant with SKU {clip(row.sku)!r} in this "
                                       "warehouse's seller's catalog",
                                       field=f"stocks.{i}.sku"))
            elif variant_id is not None and variant_id != found:
                errors.append(InvalidInput("variantId and sku name different variants",
                                           field=f"stocks.{i}.sku"))
            variant_id = found
        elif variant_id is not None and variant_id not in variants:
            errors.append(NotFound("variant not found", field=f"stocks.{i}.variantId",
                                   variant_id=variant_id))
        elif variant_id is not None and owner is not None and variants[variant_id][1] != owner:
            errors.append(InvalidInput("the warehouse belongs to another seller",
                                       field=f"stocks.{i}.warehouseId",
                                       warehouse_id=row.warehouse_id))
        pair = (variant_id, row.warehouse_id) if variant_id is not None else None
        if pair is not None and owner is not None:
            # remembered even when this row is bad: a later row for it is still a repeat
            if pair in seen:
                errors.append(InvalidInput("this stock appears in an earlier row too",
                                           field=f"stocks.{i}.warehouseId"))
            seen.add(pair)
        if errors or pair is None or owner is None:
            continue
        targets[i] = pair  # a warehouse the caller sees is one it manages (`visible`)
    return targets


_VARIANTS_PG = text(
    "SELECT id, sku, seller_id FROM product_variant "
    "WHERE sku = ANY(CAST(:skus AS VARCHAR[])) OR id = ANY(CAST(:ids AS INTEGER[]))"
)


def _variants_with_sellers(
    s: Session, skus: Sequence[str], variant_ids: Sequence[int]
) -> dict[int, tuple[str, int]]:
    """Variant id -> (SKU, seller id) of the variants named by SKU (any seller's) or by id."""
    if not skus and not variant_ids:
        return {}
    if s.get_bind().dialect.name == "postgresql":
        rows = s.execute(_VARIANTS_PG, {"skus": pg_array(skus),
                                        "ids": pg_array(variant_ids)}).all()
        return {vid: (sku, seller) for vid, sku, seller in rows}
    select_variants = select(ProductVariant.id, ProductVariant.sku, ProductVariant.seller_id)
    variants = {vid: (sku, seller) for vid, sku, seller in
                _select_in(s, select_variants, ProductVariant.sku, skus, String)}
    for vid, sku, seller in _select_in(s, select_variants, ProductVariant.id,
                                       [v for v in variant_ids if v not in variants],
                                       Integer):
        variants[vid] = (sku, seller)
    return variants


_LOCK_PAIRS = text(
    "SELECT s.id, s.variant_id, s.warehouse_id, s.quantity, s.quantity_allocated, "
    "s.low_stock_threshold, s.quantity_reserved_for_batches FROM stock s "
    "JOIN unnest(CAST(:vids AS INTEGER[]), CAST(:wids AS INTEGER[])) AS p(v, w) "
    "ON s.variant_id = p.v AND s.warehouse_id = p.w ORDER BY s.id FOR NO KEY UPDATE OF s"
)


def _bulk_lock(s: Session, pairs: Sequence[tuple[int, int]]) -> dict[tuple[int, int], Level]:
    """(variant, warehouse) -> level of the existing stocks among `pairs`, locked.

    One statement in ascending stock id, like every other lock, and only the rows named
    (PostgreSQL joins the pairs as arrays; SQLite's writers are serialized anyway).
    """
    if not pairs:
        return {}
    if s.get_bind().dialect.name == "postgresql":
        rows = s.execute(_LOCK_PAIRS, {"vids": pg_array(v for v, _ in pairs),
                                       "wids": pg_array(w for _, w in pairs)}).all()
    else:
        wanted = set(pairs)
        warehouse_ids = sorted({w for _, w in pairs})
        rows = [row for chunk in _chunks(sorted({v for v, _ in pairs}))
                for row in s.execute(
                    select(Stock.id, Stock.variant_id, Stock.warehouse_id, Stock.quantity,
                           Stock.quantity_allocated, Stock.low_stock_threshold,
                           Stock.quantity_reserved_for_batches)
                    .where(Stock.variant_id.in_(chunk), Stock.warehouse_id.in_(warehouse_ids))
                    .order_by(Stock.id))
                if (row[1], row[2]) in wanted]
    return {(vid, wid): Level(sid, q, a, threshold, b)
            for sid, vid, wid, q, a, threshold, b in rows}


def _bulk_apply(
    s: Session,
    wanted: dict[tuple[int, int], int],
    levels: dict[tuple[int, int], Level],
    *,
    movement_type: MovementType,
    reason: str,
    actor: str,
) -> None:
    """Write the new quantities (updates and inserts) and their movements; fills `levels`."""
    updates = {pair: q for pair, q in wanted.items() if pair in levels}
    inserts = {pair: q for pair, q in wanted.items() if pair not in levels}
    # the ledger skips the stocks already at their new level
    ledger.set_quantities(s, [(levels[p].stock_id, levels[p].quantity, q)
                              for p, q in updates.items()],
                          type=movement_type, actor=actor, reason=reason)
    for pair, q in updates.items():
        levels[pair] = levels[pair]._replace(quantity=q)
    movements: list[ledger.Movement] = []
    if inserts:
        created = ledger.insert_stocks(s, [(v, w, q) for (v, w), q in inserts.items()])
        for (v, w), sid in created.items():
            q = inserts[(v, w)]
            levels[(v, w)] = Level(sid, q, 0, None)
            if q:
                movements.append(ledger.Movement(sid, v, w, movement_type, q, 0, q, 0))
    ledger.record_known(s, movements, actor=actor, reason=reason)


def _select_in(
    s: Session, statement: Any, column: Any, values: Sequence[Any], item_type: Any,
) -> list[Any]:
    """Rows of `statement` where `column` is one of `values`: one array parameter on
    PostgreSQL, IN lists of at most 5,000 elsewhere."""
    if not values:
        return []
    if s.get_bind().dialect.name == "postgresql":
        return list(s.execute(statement.where(
            column.in_(select(func.unnest(cast(bindparam("values", pg_array(values)),
                                               ARRAY(item_type))))))))
    return [row for chunk in _chunks(values) for row in s.execute(statement.where(
        column.in_(chunk)))]


def _chunks(values: Sequence[object], size: int = 5000) -> list[list[object]]:
    return [list(values[i:i + size]) for i in range(0, len(values), size)]
