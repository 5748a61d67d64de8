"""Batched reads for the API's loaders: one statement per call, results aligned to keys."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from domain import stock_rules
from domain.models import (
    Allocation,
    Base,
    Fulfillment,
    FulfillmentLine,
    MovementType,
    Order,
    OrderLine,
    OrderStatus,
    OrderType,
    Product,
    ProductVariant,
    PurchaseOrder,
    PurchaseOrderLine,
    ShippingZone,
    ShippingZoneCountry,
    Stock,
    StockMovement,
    Warehouse,
    warehouse_shipping_zone,
)
from domain.services.orders import AllocationView, FulfillmentView

M = TypeVar("M", bound=Base)
T = TypeVar("T")


def _grouped(pairs: Iterable[tuple[int, T]], keys: Sequence[int]) -> list[list[T]]:
    """Per key, in order, the values of the (key, value) pairs that carry it."""
    found: dict[int, list[T]] = defaultdict(list)
    for key, value in pairs:
        found[key].append(value)
    return [found[k] for k in keys]


@dataclass(frozen=True, slots=True)
class ZoneRow:
    id: int
    name: str
    countries: tuple[str, ...]


def by_id(session: Session, model: type[M], keys: Sequence[int]) -> list[M | None]:
    pk: Any = model.id  # type: ignore[attr-defined]
    found = {row.id: row for row in session.scalars(  # type: ignore[attr-defined]
        select(model).where(pk.in_(set(keys))))}
    return [found.get(k) for k in keys]


def zones(session: Session, keys: Sequence[int]) -> list[ZoneRow | None]:
    names = dict(session.execute(
        select(ShippingZone.id, ShippingZone.name).where(ShippingZone.id.in_(set(keys)))
    ).all())
    countries: dict[int, list[str]] = defaultdict(list)
    for zone_id, country in session.execute(
        select(ShippingZoneCountry.zone_id, ShippingZoneCountry.country)
        .where(ShippingZoneCountry.zone_id.in_(names.keys()))
        .order_by(ShippingZoneCountry.country)
    ):
        countries[zone_id].append(country)
    return [ZoneRow(k, names[k], tuple(countries[k])) if k in names else None for k in keys]


def zone_ids_of_warehouses(session: Session, keys: Sequence[int]) -> list[list[int]]:
    return _grouped(session.execute(
        select(warehouse_shipping_zone.c.warehouse_id, warehouse_shipping_zone.c.zone_id)
        .where(warehouse_shipping_zone.c.warehouse_id.in_(set(keys)))
        .order_by(warehouse_shipping_zone.c.zone_id)
    ), keys)


def variants_of_products(session: Session, keys: Sequence[int]) -> list[list[ProductVariant]]:
    variants = session.scalars(select(ProductVariant)
                               .where(ProductVariant.product_id.in_(set(keys)))
                               .order_by(ProductVariant.id))
    return _grouped(((v.product_id, v) for v in variants), keys)


def stocks_of_variants(session: Session, keys: Sequence[int]) -> list[list[Stock]]:
    stocks = session.scalars(
        select(Stock).join(Warehouse, Warehouse.id == Stock.warehouse_id)
        .where(Stock.variant_id.in_(set(keys)))
        .order_by(Warehouse.priority, Warehouse.id)
    )
    return _grouped(((st.variant_id, st) for st in stocks), keys)


def availability(session: Session, keys: Sequence[tuple[int, str | None]]) -> list[int]:
    """Sum of available per (variant, country) over the warehouses that serve the country
    (as an order would allocate); over all warehouses if None."""
    by_country: dict[str | None, set[int]] = defaultdict(set)
    for variant_id, country in keys:
        by_country[country].add(variant_id)
    totals: dict[tuple[int, str | None], int] = {}
    for country, variant_ids in by_country.items():
        stmt = (select(Stock.variant_id, func.sum(stock_rules.AVAILABLE))
                .where(Stock.variant_id.in_(variant_ids))
                .group_by(Stock.variant_id))
        if country is not None:
            stmt = (stmt.join(Warehouse, Warehouse.id == Stock.warehouse_id)
                    .join(ProductVariant, ProductVariant.id == Stock.variant_id)
                    .join(Product, Product.id == ProductVariant.product_id)
                    .where(stock_rules.serves(country)))
        for variant_id, total in session.execute(stmt):
            totals[(variant_id, country)] = int(total or 0)
    return [totals.get(k, 0) for k in keys]


def lines_of_purchase_orders(
    session: Session, keys: Sequence[int]
) -> list[list[PurchaseOrderLine]]:
    lines = session.scalars(select(PurchaseOrderLine)
                            .where(PurchaseOrderLine.purchase_order_id.in_(set(keys)))
                            .order_by(PurchaseOrderLine.id))
    return _grouped(((line.purchase_order_id, line) for line in lines), keys)


def incoming(session: Session, keys: Sequence[tuple[int, int]]) -> list[int]:
    """Ordered minus received on purchase orders, per (variant, warehouse)."""
    totals: dict[tuple[int, int], int] = {}
    variant_ids = {v for v, _ in keys}
    for vid, wid, total in session.execute(
        select(PurchaseOrderLine.variant_id, PurchaseOrder.warehouse_id,
               func.sum(PurchaseOrderLine.quantity - PurchaseOrderLine.quantity_received))
        .join(PurchaseOrder, PurchaseOrder.id == PurchaseOrderLine.purchase_order_id)
        .where(PurchaseOrderLine.variant_id.in_(variant_ids))
        .group_by(PurchaseOrderLine.variant_id, PurchaseOrder.warehouse_id)
    ):
        totals[(vid, wid)] = int(total or 0)
    return [totals.get(k, 0) for k in keys]


@dataclass(frozen=True, slots=True)
class StockTotals:
    quantity: int
    allocated: int
    available: int


def stock_totals(session: Session, keys: Sequence[int]) -> list[StockTotals]:
    """Per variant: on-hand, allocated and available summed over all its warehouses."""
    found = {vid: StockTotals(int(q or 0), int(a or 0), int(f or 0)) for vid, q, a, f in
             session.execute(select(Stock.variant_id, func.sum(Stock.quantity),
                                    func.sum(Stock.quantity_allocated),
                                    func.sum(stock_rules.AVAILABLE))
                             .where(Stock.variant_id.in_(set(keys)))
                             .group_by(Stock.variant_id))}
    return [found.get(k, StockTotals(0, 0, 0)) for k in keys]


def incoming_of_variants(session: Session, keys: Sequence[int]) -> list[int]:
    """Ordered minus received on purchase orders, per variant over all warehouses."""
    totals = dict(session.execute(
        select(PurchaseOrderLine.variant_id,
               func.sum(PurchaseOrderLine.quantity - PurchaseOrderLine.quantity_received))
        .where(PurchaseOrderLine.variant_id.in_(set(keys)))
        .group_by(PurchaseOrderLine.variant_id)).all())
    return [int(totals.get(k) or 0) for k in keys]


def lines_of_orders(session: Session, keys: Sequence[int]) -> list[list[OrderLine]]:
    found: dict[int, list[OrderLine]] = defaultdict(list)
    for line in session.scalars(select(OrderLine).where(OrderLine.order_id.in_(set(keys)))
                                .order_by(OrderLine.id)):
        found[line.order_id].append(line)
    return [found[k] for k in keys]


def allocations_of_lines(session: Session, keys: Sequence[int]) -> list[list[AllocationView]]:
    found: dict[int, list[AllocationView]] = defaultdict(list)
    for line_id, warehouse_id, qty in session.execute(
        select(Allocation.order_line_id, Stock.warehouse_id, Allocation.quantity)
        .join(Stock, Stock.id == Allocation.stock_id)
        .join(Warehouse, Warehouse.id == Stock.warehouse_id)
        .where(Allocation.order_line_id.in_(set(keys)))
        .order_by(Warehouse.priority, Warehouse.id)
    ):
        found[line_id].append(AllocationView(warehouse_id, qty))
    return [found[k] for k in keys]


def sellers_of_variants(session: Session, keys: Sequence[int]) -> list[int | None]:
    """Each variant's seller (None: no such variant)."""
    found = dict(session.execute(
        select(ProductVariant.id, Product.seller_id)
        .join(Product, Product.id == ProductVariant.product_id)
        .where(ProductVariant.id.in_(set(keys)))).all())
    return [found.get(k) for k in keys]


def sellers_of_orders(session: Session, keys: Sequence[int]) -> list[frozenset[int]]:
    """The sellers whose variants each order's lines hold."""
    pairs = session.execute(
        select(OrderLine.order_id, Product.seller_id).distinct()
        .join(ProductVariant, ProductVariant.id == OrderLine.variant_id)
        .join(Product, Product.id == ProductVariant.product_id)
        .where(OrderLine.order_id.in_(set(keys)))).all()
    return [frozenset(sellers) for sellers in _grouped(pairs, keys)]


def fulfillments(session: Session, keys: Sequence[int]) -> list[FulfillmentView | None]:
    orders = dict(session.execute(select(Fulfillment.id, Fulfillment.order_id)
                                  .where(Fulfillment.id.in_(set(keys)))).all())
    existing = set(orders)
    lines: dict[int, list[tuple[int, int, int]]] = defaultdict(list)
    for fid, lid, wid, qty in session.execute(
        select(FulfillmentLine.fulfillment_id, FulfillmentLine.order_line_id,
               FulfillmentLine.warehouse_id, FulfillmentLine.quantity)
        .where(FulfillmentLine.fulfillment_id.in_(existing))
        .order_by(FulfillmentLine.id)
    ):
        lines[fid].append((lid, wid, qty))
    return [FulfillmentView(k, orders[k], tuple(lines[k])) if k in existing else None
            for k in keys]


@dataclass(frozen=True, slots=True)
class PageQuery:
    """Newest first: rows with id below `before_id`, at most `first + 1` (to see a next page)."""

    first: int
    before_id: int | None = None
    seller_id: int | None = None
    only_id: int | None = None
    variant_seller_id: int | None = None
    skus: tuple[str, ...] | None = None
    statuses: tuple[OrderStatus, ...] | None = None
    types: tuple[OrderType, ...] | None = None
    variant_id: int | None = None
    warehouse_id: int | None = None
    warehouse_seller_id: int | None = None
    movement_types: tuple[MovementType, ...] | None = None
    since: datetime | None = None
    until: datetime | None = None
    sku_prefix: str | None = None
    stock_seller_id: int | None = None
    out_of_stock: bool | None = None
    below_threshold: bool | None = None
    # orders: those created by this token, or (for a seller) holding its variants
    order_token_id: int | None = None
    order_seller_id: int | None = None


def page(session: Session, model: type[M], query: PageQuery) -> list[M]:
    pk: Any = model.id  # type: ignore[attr-defined]
    stmt: Select[Any] = select(model).order_by(pk.desc()).limit(query.first + 1)
    if query.before_id is not None:
        stmt = stmt.where(pk < query.before_id)
    if query.seller_id is not None:
        stmt = stmt.where(model.seller_id == query.seller_id)  # type: ignore[attr-defined]
    if query.only_id is not None:
        stmt = stmt.where(pk == query.only_id)
    if query.variant_seller_id is not None:
        stmt = stmt.where(ProductVariant.product_id.in_(
            select(Product.id).where(Product.seller_id == query.variant_seller_id)))
    if query.variant_id is not None:
        stmt = stmt.where(model.variant_id == query.variant_id)  # type: ignore[attr-defined]
    if query.warehouse_id is not None:
        stmt = stmt.where(model.warehouse_id == query.warehouse_id)  # type: ignore[attr-defined]
    if query.warehouse_seller_id is not None:
        stmt = stmt.where(StockMovement.warehouse_id.in_(
            select(Warehouse.id).where(Warehouse.seller_id == query.warehouse_seller_id)))
    if query.movement_types:
        stmt = stmt.where(StockMovement.type.in_(query.movement_types))
    if query.since is not None:
        stmt = stmt.where(StockMovement.created_at >= query.since)
    if query.until is not None:
        stmt = stmt.where(StockMovement.created_at < query.until)
    if query.sku_prefix is not None:
        matching = select(ProductVariant.id).where(
            ProductVariant.sku.startswith(query.sku_prefix, autoescape=True))
        stmt = stmt.where((Stock.variant_id if model is Stock else pk).in_(matching))
    if query.stock_seller_id is not None:
        stmt = stmt.where(Stock.warehouse_id.in_(
            select(Warehouse.id).where(Warehouse.seller_id == query.stock_seller_id)))
    free = stock_rules.FREE
    if query.out_of_stock is not None:
        stmt = stmt.where(free <= 0 if query.out_of_stock else free > 0)
    if query.below_threshold is not None:
        below = (Stock.low_stock_threshold.is_not(None)) & (free < Stock.low_stock_threshold)
        stmt = stmt.where(below if query.below_threshold else ~below)
    if query.skus is not None:
        stmt = stmt.where(ProductVariant.sku.in_(query.skus))
    if query.statuses:
        stmt = stmt.where(Order.status.in_(query.statuses))
    if query.types:
        stmt = stmt.where(Order.type.in_(query.types))
    if query.order_token_id is not None:
        mine = Order.created_by_token_id == query.order_token_id
        if query.order_seller_id is not None:
            mine = mine | Order.id.in_(
                select(OrderLine.order_id)
                .join(ProductVariant, ProductVariant.id == OrderLine.variant_id)
                .join(Product, Product.id == ProductVariant.product_id)
                .where(Product.seller_id == query.order_seller_id))
        stmt = stmt.where(mine)
    return list(session.scalars(stmt))
