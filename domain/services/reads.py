"""Batched reads for the API's loaders: one statement per call, results aligned to keys."""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import (
    ARRAY,
    Integer,
    Select,
    String,
    any_,
    bindparam,
    cast,
    func,
    literal_column,
    select,
    true,
    tuple_,
    union_all,
)
from sqlalchemy.orm import Session

from domain import stock_rules
from domain.db import id_list, in_ids, pg_array
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
from domain.rows import Compiled, DriverRead, Reading
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


@functools.cache
def _rows_by_id_statement(model: type[Base], dialect: str) -> Compiled:
    table: Any = model.__table__
    return Compiled(select(table).where(in_ids(table.c.id, "ids", dialect)), dialect)


@DriverRead
def rows_by_id(dialect: str, model: type[Base], keys: Sequence[int]) -> Reading[list[Any]]:
    """`model`'s rows by primary key, aligned to keys (None: no such row), as rows with the
    model's column attributes (the same names), read without the ORM's statement building
    and object loading (four fifths of a small read) or Core's execution (domain/rows.py)."""
    found = yield from _rows_by_id_statement(model, dialect).reading(
        {"ids": id_list(keys, dialect)})
    by_id = {row.id: row for row in found}
    return [by_id.get(k) for k in keys]


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


@functools.cache
def _variants_of_products_statement(dialect: str) -> Compiled:
    table: Any = ProductVariant.__table__
    return Compiled(select(table).where(in_ids(table.c.product_id, "ids", dialect))
                    .order_by(table.c.id), dialect)


@DriverRead
def variants_of_products(dialect: str, keys: Sequence[int]) -> Reading[list[list[Any]]]:
    """Each product's variants, oldest first, as rows with the model's column attributes
    (`rows_by_id`'s kind: the ORM's loading was half of a product page's CPU)."""
    found = yield from _variants_of_products_statement(dialect).reading(
        {"ids": id_list(keys, dialect)})
    return _grouped(((row.product_id, row) for row in found), keys)


@functools.cache
def _stocks_of_variants_statement(dialect: str) -> Compiled:
    table: Any = Stock.__table__
    return Compiled(select(table).join(Warehouse, Warehouse.id == table.c.warehouse_id)
                    .where(in_ids(table.c.variant_id, "ids", dialect))
                    .order_by(Warehouse.priority, Warehouse.id), dialect)


@DriverRead
def stocks_of_variants(dialect: str, keys: Sequence[int]) -> Reading[list[list[Any]]]:
    """Each variant's stocks in the order allocation takes their warehouses (priority,
    then id), as rows with the model's column attributes."""
    found = yield from _stocks_of_variants_statement(dialect).reading(
        {"ids": id_list(keys, dialect)})
    return _grouped(((row.variant_id, row) for row in found), keys)


@functools.cache
def _availability_statement(dialect: str, by_country: bool) -> Compiled:
    statement: Any = (select(Stock.variant_id, func.sum(stock_rules.AVAILABLE).label("total"))
                      .where(in_ids(Stock.variant_id, "ids", dialect))
                      .group_by(Stock.variant_id))
    if by_country:
        statement = _serving(statement.join(ProductVariant, ProductVariant.id == Stock.variant_id),
                             bindparam("country", type_=String))
    return Compiled(statement, dialect)


def _serving(statement: Select[Any], country: Any) -> Select[Any]:
    """`statement` over stocks (and their variants) kept to the warehouses that serve
    `country` (`stock_rules.serves`, which reads the warehouse and the variant)."""
    return (statement.join(Warehouse, Warehouse.id == Stock.warehouse_id)
            .where(stock_rules.serves(country)))


@DriverRead
def availability(dialect: str, keys: Sequence[tuple[int, str | None]]) -> Reading[list[int]]:
    """Sum of available per (variant, country) over the warehouses that serve the country
    (as an order would allocate); over all warehouses if None. One statement per country
    asked, built once (a storefront's most frequent read)."""
    by_country: dict[str | None, set[int]] = defaultdict(set)
    for variant_id, country in keys:
        by_country[country].add(variant_id)
    totals: dict[tuple[int, str | None], int] = {}
    for country, variant_ids in by_country.items():
        params = {"ids": id_list(variant_ids, dialect)}
        if country is not None:
            params["country"] = country
        statement = _availability_statement(dialect, country is not None)
        for variant_id, total in (yield from statement.reading(params)):
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
        select(ProductVariant.id, ProductVariant.seller_id)
        .where(ProductVariant.id.in_(set(keys)))).all())
    return [found.get(k) for k in keys]


def sellers_of_orders(session: Session, keys: Sequence[int]) -> list[frozenset[int]]:
    """The sellers whose variants each order's lines hold."""
    pairs = session.execute(
        select(OrderLine.order_id, OrderLine.seller_id).distinct()
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
    # variants: each row also carries `available`, its `availability` in this country
    available_in: str | None = None


# filters whose value changes the statement, not only its parameters
_SHAPED = frozenset({"out_of_stock", "below_threshold"})
_FILTERS = tuple(name for name in PageQuery.__slots__ if name != "first")
_LIKE_ESCAPE = "/"


@DriverRead
def page(dialect: str, model: type[Base], query: PageQuery) -> Reading[list[Any]]:
    """The page's rows, with the model's column attributes (no ORM objects), read on the
    DBAPI connection (no Session or Core execution around one statement: domain/rows.py).

    The statement is built and compiled once per model and set of filters given
    (`_page_statement`), the values go as parameters: building it for every request cost
    more than running it.
    """
    statement, params = _page_call(dialect, model, query)
    return (yield from statement.reading(params))


def planned_once(query: PageQuery) -> bool:
    """Whether the page's statement has one plan good for any values, so that PostgreSQL
    may plan it once (`Services.read_driver`): a page by SKUs (`_asked_skus`). Left to
    choose, PostgreSQL planned it anew for every request (its custom plan looked cheaper
    than the generic one), which cost more than running it."""
    return query.skus is not None


def page_text(dialect: str, model: type[M], query: PageQuery) -> tuple[str, dict[str, Any]]:
    """What `page` sends the driver: the SQL text and its values (the bench's EXPLAIN)."""
    statement, params = _page_call(dialect, model, query)
    return statement.text(params)


def _page_call(dialect: str, model: type[M], query: PageQuery
               ) -> tuple[Compiled, dict[str, Any]]:
    given = tuple(name for name in _FILTERS if getattr(query, name) is not None)
    shape = tuple((name, getattr(query, name) if name in _SHAPED else None) for name in given)
    params: dict[str, Any] = {"limit": query.first + 1}
    for name in given:
        value = getattr(query, name)
        if name == "sku_prefix":
            params["sku_prefix"] = _escaped(value) + "%"
        elif name == "skus" and dialect == "postgresql":
            params["skus"] = pg_array(value)  # one text, cast (`_asked_skus`)
        elif name not in _SHAPED:
            params[name] = list(value) if isinstance(value, tuple) else value
    return _page_statement(model, dialect, shape), params


def _available_in(country: Any) -> Any:
    """A variant's `availability` in `country`, as a column of a statement over variants:
    the page and its figures in one statement (the storefront's most frequent read)."""
    over_stocks = (select(func.coalesce(func.sum(stock_rules.AVAILABLE), 0)).select_from(Stock)
                   .where(Stock.variant_id == ProductVariant.id))
    return (_serving(over_stocks, country).correlate(ProductVariant)
            .scalar_subquery().label("available"))


def _escaped(prefix: str) -> str:
    """A LIKE pattern's literal part (what `startswith(..., autoescape=True)` does)."""
    return (prefix.replace(_LIKE_ESCAPE, _LIKE_ESCAPE * 2)
            .replace("%", _LIKE_ESCAPE + "%").replace("_", _LIKE_ESCAPE + "_"))


@functools.lru_cache(maxsize=256)
def _page_statement(model: type[Base], dialect: str,
                    shape: tuple[tuple[str, Any], ...]) -> Compiled:
    """Newest first, at most `:limit` rows, with a WHERE clause per filter in `shape`."""
    return Compiled(_page_select(model, dialect, shape), dialect)


# the filter that confines a page to one seller's warehouses, for the models that have one
_SELLER_OF_WAREHOUSE = {Stock: "stock_seller_id", StockMovement: "warehouse_seller_id"}
# filters that pick their rows by an index of their own: with one, the page stays one walk
_OWN_INDEX = frozenset({"warehouse_id", "variant_id", "only_id"})


def _page_select(model: type[Base], dialect: str,
                 shape: tuple[tuple[str, Any], ...]) -> Select[Any]:
    seller = _SELLER_OF_WAREHOUSE.get(model)
    given = {name for name, _ in shape}
    if model is Order and "order_seller_id" in given:
        return _orders_of_seller(dialect, shape)
    if dialect == "postgresql" and seller in given and not given & _OWN_INDEX:
        return _per_warehouse(model, dialect, shape, seller)
    pk: Any = model.id  # type: ignore[attr-defined]
    table: Any = model.__table__
    column: Any = model
    stmt: Select[Any] = (select(table).order_by(pk.desc())
                         .limit(_limit()))
    for name, value in shape:
        param: Any = bindparam(name)
        if name == "before_id":
            if not (dialect == "postgresql" and "order_token_id" in given):  # (_of_token)
                stmt = stmt.where(pk < param)
        elif name == "seller_id":
            stmt = stmt.where(column.seller_id == param)
        elif name == "only_id":
            stmt = stmt.where(pk == param)
        elif name == "variant_seller_id":  # (a variant carries its product's seller)
            stmt = stmt.where(ProductVariant.seller_id == param)
        elif name == "variant_id":
            stmt = stmt.where(column.variant_id == param)
        elif name == "warehouse_id":
            stmt = stmt.where(column.warehouse_id == param)
        elif name == "warehouse_seller_id":
            stmt = stmt.where(StockMovement.warehouse_id.in_(
                select(Warehouse.id).where(Warehouse.seller_id == param)))
        elif name == "movement_types":
            stmt = stmt.where(StockMovement.type.in_(bindparam(name, expanding=True)))
        elif name == "since":
            stmt = stmt.where(StockMovement.created_at >= param)
        elif name == "until":
            stmt = stmt.where(StockMovement.created_at < param)
        elif name == "sku_prefix":
            matching = select(ProductVariant.id).where(
                ProductVariant.sku.like(param, escape=_LIKE_ESCAPE))
            stmt = stmt.where((Stock.variant_id if model is Stock else pk).in_(matching))
        elif name == "stock_seller_id":
            stmt = stmt.where(Stock.warehouse_id.in_(
                select(Warehouse.id).where(Warehouse.seller_id == param)))
        elif name == "out_of_stock":
            free = stock_rules.FREE
            stmt = stmt.where(free <= 0 if value else free > 0)
        elif name == "below_threshold":
            free = stock_rules.FREE
            below = (Stock.low_stock_threshold.is_not(None)) & (free < Stock.low_stock_threshold)
            stmt = stmt.where(below if value else ~below)
        elif name == "skus":
            stmt = _asked_skus(stmt, dialect)
        elif name == "statuses":
            stmt = stmt.where(Order.status.in_(bindparam(name, expanding=True)))
        elif name == "types":
            stmt = stmt.where(Order.type.in_(bindparam(name, expanding=True)))
        elif name == "order_token_id":  # (with order_seller_id: _orders_of_seller)
            stmt = _of_token(stmt, "before_id" in given) if dialect == "postgresql" \
                else stmt.where(Order.created_by_token_id == param)
        elif name == "available_in":
            stmt = stmt.add_columns(_available_in(param))
        else:
            raise AssertionError(f"no filter {name}")
    return stmt


def _asked_skus(stmt: Select[Any], dialect: str) -> Select[Any]:
    """The variants among `stmt`'s whose SKU is asked (`:skus`, a short list).

    On PostgreSQL, each SKU asked is looked up on its own and the few variants found are
    sorted: by the (sku, seller_id) index from about a thousand variants on; on a catalog
    of a few hundred PostgreSQL may scan it for each SKU instead (cheap at that size, and
    tested as the bound). The SKUs are one array (one
    text parameter: `db.pg_array`). The generic plan of a prepared statement (from its
    sixth run) otherwise walked the variants by id, newest first, keeping those asked
    (with a LIMIT it cannot see the walk looks cheap): every variant newer than the oldest
    one asked, 130 µs of PostgreSQL's time in each storefront read on the bench's 1,000.
    Joined to the SKUs as a table, a catalog that small was hashed whole instead (a scan
    of every variant, ~60 µs); a LATERAL lookup with `OFFSET 0` is not merged into the
    join, so each SKU is an index probe. The order is on `id + 0`, which the primary
    key's index cannot hand over.
    """
    if dialect != "postgresql":
        return stmt.where(ProductVariant.sku.in_(bindparam("skus", expanding=True)))
    asked = select(func.unnest(cast(bindparam("skus", type_=String), ARRAY(String)))
                   .label("sku")).distinct().subquery("asked")
    variant: Any = ProductVariant.__table__.alias("by_sku")
    found = (select(variant.c.id).where(variant.c.sku == asked.c.sku)
             .offset(literal_column("0")).lateral("found"))
    ids = select(found.c.id).select_from(asked).join(found, true()).scalar_subquery()
    return stmt.where(ProductVariant.id == any_(func.array(ids))).order_by(None) \
        .order_by(_unindexed(ProductVariant.id).desc())


def _orders_of_seller(dialect: str, shape: tuple[tuple[str, Any], ...]) -> Select[Any]:
    """A seller token's orders: those it created and those holding the seller's variants,
    newest first. Each of the two is read newest first for at most a page, from its own
    index (orders (created_by_token_id, id); order_line (seller_id, order_id)), the other
    filters applied in both; the page is the newest of their union.

    Before, the seller's lines were found through variants and products, every order id
    of the seller's gathered for each page: 180-240 ms for a seller with 250,000 of 500,000
    orders, and a walk of the orders by id for a small one (7-17 ms).
    """
    rest = tuple((name, value) for name, value in shape
                 if name not in ("order_token_id", "order_seller_id"))
    created = _page_select(Order, dialect, (*rest, ("order_token_id", None))) \
        .with_only_columns(Order.id)
    holding = select(OrderLine.order_id.label("id")) \
        .where(OrderLine.seller_id == bindparam("order_seller_id"))
    for name, _ in rest:
        if name == "before_id":
            holding = holding.where(OrderLine.order_id < bindparam(name))
        elif name in ("statuses", "types"):
            # each line's order looked up as the seller's lines are walked, newest first: a
            # join let the plan merge them with a walk of all orders by id
            of_line = select(Order.status if name == "statuses" else Order.type) \
                .where(Order.id == OrderLine.order_id).scalar_subquery()
            holding = holding.where(of_line.in_(bindparam(name, expanding=True)))
        else:
            raise AssertionError(f"no filter {name} for a seller's orders")
    holding = holding.distinct().order_by(OrderLine.order_id.desc()) \
        .limit(_limit())
    newest = union_all(select(created.subquery().c.id), select(holding.subquery().c.id))
    # sorted after they are found, not by the primary key's index: walking that newest
    # first, as the generic plan of a prepared statement did, read every newer order
    return (select(Order.__table__).where(Order.id.in_(newest))
            .order_by(_unindexed(Order.id).desc()).limit(_limit()))


def _of_token(stmt: Select[Any], before: bool) -> Select[Any]:
    """The orders of `stmt` a token created (`:order_token_id`), newest first, below
    `:before_id` if `before` (PostgreSQL): a walk of the index on (created_by_token_id, id)
    from the cursor, whatever the plan.

    When one token had made most orders, the generic plan of `created_by_token_id = :token
    ORDER BY id DESC` walked every order by id (its estimate of a token's orders is their
    average: most of them), keeping a few of another token's. Ordering by the token too
    does not stop that while the token is an equality: PostgreSQL drops a sort key held to
    one value. So the token is a range of one value, and the cursor a row comparison,
    which the index takes as where its walk begins.
    """
    token, order_id = Order.created_by_token_id, Order.id
    param = bindparam("order_token_id", type_=Integer)
    cursor = bindparam("before_id", type_=Integer)
    upper = tuple_(token, order_id) < tuple_(param, cursor) if before \
        else token <= param
    return stmt.where(upper, token >= param).order_by(None) \
        .order_by(token.desc(), order_id.desc())


def _limit() -> Any:
    """A page's LIMIT, written into the statement's text (`rows.Compiled`): PostgreSQL's
    generic plan of a prepared statement takes a LIMIT it cannot see for a tenth of the
    rows, so walking an index in the page's order, keeping the rows that match, looks
    cheap, however many rows the walk passes before it finds a page."""
    return bindparam("limit", type_=Integer, literal_execute=True)


def _unindexed(column: Any) -> Any:
    """`column + 0`: the same order, which no index hands over, so PostgreSQL finds the
    few rows asked first and sorts them, instead of walking an index in that order."""
    return column.op("+")(literal_column("0"))


def _per_warehouse(model: type[Base], dialect: str, shape: tuple[tuple[str, Any], ...],
                   seller: str) -> Select[Any]:
    """One seller's page (PostgreSQL): each of its warehouses' newest rows (by the index
    on (warehouse_id, id), the other filters applied there), then the newest of those.

    Walking the table by id and keeping the seller's rows read the other sellers' rows as
    well: ~50 per row kept with 1,000 sellers, the whole table for a seller with few. And
    PostgreSQL switches a prepared statement to its generic plan after five runs, which
    for `warehouse_id IN (the seller's warehouses)` is that walk: a seller's page among
    1,000 sellers' 600,000 stocks went from 0.2 ms to 30 ms on its sixth run, its ledger
    page took 40 ms from the first. Per warehouse, a page reads at most `limit` rows of
    each of the seller's warehouses, whatever the plan and the others' books.
    """
    newest = (_page_select(model, dialect, tuple(item for item in shape if item[0] != seller))
              .where(model.warehouse_id == Warehouse.id)  # type: ignore[attr-defined]
              .lateral("newest"))
    return (select(*newest.c).select_from(Warehouse).join(newest, true())
            .where(Warehouse.seller_id == bindparam(seller))
            .order_by(newest.c.id.desc()).limit(_limit()))

