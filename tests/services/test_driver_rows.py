"""domain/rows.py: a statement run on the DBAPI connection gives the rows Core gives, value
for value and type for type (SQLite's datetimes, enums, booleans, NULLs), on both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Integer, String, bindparam, func, select

from api.loaders import ROW_READS
from domain import rows
from domain.models import (
    Base,
    MovementType,
    Order,
    OrderLine,
    OrderStatus,
    OrderType,
    Product,
    ProductVariant,
    PurchaseOrder,
    SalesChannel,
    Seller,
    Stock,
    StockMovement,
    Warehouse,
)
from domain.services import orders, reads
from tests.conftest import Database
from tests.factories import ADMIN, shop


def _books(db: Database) -> dict[str, Any]:
    """A shop with two variants, stock set twice, an order and a canceled one."""
    s = shop(db, stock1=10, stock2=5)
    other = s.world.variant(s.product, sku="OTHER_%/1", track=False, stocks={s.w1: 3})
    s.world.set_stock(s.variant, {s.w1: 12, s.w2: 5})
    kept = orders.create(db.uow(), ADMIN, type=OrderType.REGULAR, shipping_country="DE",
                         lines=[orders.LineRequest(s.variant, 2)])
    dropped = orders.create(db.uow(), ADMIN, type=OrderType.DRAFT, shipping_country="DE",
                            lines=[orders.LineRequest(s.variant, 1)])
    orders.cancel(db.uow(), ADMIN, dropped.id)
    return {"variant": s.variant, "other": other, "w1": s.w1, "order": kept.id}


def _on_driver(db: Database, read: Any, *args: Any, planned_once: bool = False) -> Any:
    with rows.connect(db.engine, planned_once=planned_once) as driver:
        return read(driver, *args)


def _same(found: list[Any], expected: list[Any]) -> None:
    assert [tuple(r) for r in found] == [tuple(r) for r in expected]
    assert [[type(v) for v in r] for r in found] == [[type(v) for v in r] for r in expected]
    assert [r._fields for r in found] == [tuple(r._fields) for r in expected]


BY_ID: dict[str, type[Base]] = {
    "seller": Seller, "warehouse": Warehouse, "product": Product, "variant": ProductVariant,
    "order": Order, "order_line": OrderLine, "movement": StockMovement, "stock": Stock,
    "purchase_order": PurchaseOrder}


CHILDREN: dict[str, tuple[type[Base], str]] = {
    "variants_of_product": (ProductVariant, "product_id"),
    "stocks_of_variant": (Stock, "variant_id")}


def test_every_read_by_id_is_checked() -> None:
    assert set(BY_ID) | set(CHILDREN) == set(ROW_READS) - {"availability"}


@pytest.mark.parametrize("name", sorted(CHILDREN))
def test_children_are_cores_rows_in_order(db: Database, name: str) -> None:
    s = shop(db, stock1=10, stock2=5)
    s.world.variant(s.product, stocks={s.w2: 3})
    newest = s.world.warehouse(s.seller, [s.zone], priority=0)  # before w2, after w1
    s.world.set_stock(s.variant, {newest: 1})
    shop(db, stock1=4)  # another seller's product and variant
    model, parent = CHILDREN[name]
    table: Any = model.__table__
    ordered = select(table).order_by(table.c.id)
    if model is Stock:  # the order allocation takes warehouses in: priority, then id
        ordered = (select(table).join(Warehouse, Warehouse.id == table.c.warehouse_id)
                   .order_by(Warehouse.priority, Warehouse.id))
    with db.engine.connect() as conn:
        every = list(conn.execute(ordered))
    keys = [*sorted({getattr(row, parent) for row in every}, reverse=True), 10_000]
    found = _on_driver(db, ROW_READS[name], keys, planned_once=True)

    assert found[-1] == []
    for key, children in zip(keys, found, strict=True):
        _same(children, [row for row in every if getattr(row, parent) == key])
    assert max(map(len, found)) > 1
    if model is Stock:
        assert [row.warehouse_id for row in found[keys.index(s.variant)]] == [
            s.w1, newest, s.w2]


@pytest.mark.parametrize("name", sorted(BY_ID))
def test_rows_by_id_are_cores_rows(db: Database, name: str) -> None:
    _books(db)
    table: Any = BY_ID[name].__table__
    with db.engine.connect() as conn:
        expected = list(conn.execute(select(table).order_by(table.c.id)))
    keys = [row.id for row in expected] + [10_000]
    found = _on_driver(db, ROW_READS[name], keys, planned_once=True)

    assert found[-1] is None
    _same(found[:-1], expected)


@pytest.mark.parametrize(("model", "filters"), [
    (ProductVariant, {"skus": ("OTHER_%/1", "nope")}),
    (ProductVariant, {"skus": ()}),
    (ProductVariant, {"sku_prefix": "OTHER_%"}),
    (ProductVariant, {"skus": ("OTHER_%/1", "nope"), "available_in": "DE"}),
    (ProductVariant, {"available_in": "US"}),
    (Stock, {"below_threshold": False, "out_of_stock": False}),
    (StockMovement, {"movement_types": (MovementType.STOCK_UPDATE, MovementType.ALLOCATION)}),
    (StockMovement, {"since": datetime.now(UTC) - timedelta(hours=1), "before_id": 10_000}),
    (StockMovement, {"until": datetime.now(UTC) + timedelta(hours=1)}),
    (Order, {"statuses": (OrderStatus.CANCELED,), "types": (OrderType.DRAFT,)}),
    (Order, {}),
])
def test_pages_are_cores_rows(db: Database, model: type[Base], filters: dict[str, Any]
                              ) -> None:
    _books(db)
    query = reads.PageQuery(first=50, **filters)
    with db.engine.connect() as conn:
        given = tuple(n for n in reads._FILTERS if getattr(query, n) is not None)
        shape = tuple((n, getattr(query, n) if n in reads._SHAPED else None) for n in given)
        _, params = reads._page_call(db.engine.dialect.name, model, query)
        expected = list(conn.execute(
            reads._page_select(model, db.engine.dialect.name, shape), params))
    found = _on_driver(db, reads.page, model, query)

    _same(found, expected)
    if filters.get("skus") == ():
        assert found == []
    elif model is not Stock:
        assert found, "the case reads some rows"


def test_availability_sums_per_country(db: Database) -> None:
    books = _books(db)
    keys = [(books["variant"], "DE"), (books["variant"], None), (books["other"], "DE"),
            (books["variant"], "US"), (10_000, "DE")]

    found = _on_driver(db, reads.availability, keys, planned_once=True)

    assert found == [15, 15, 3, 0, 0]  # 12 + 5 on hand, 2 allocated (the kept order)


@pytest.mark.parametrize("dialect", ["postgresql", "sqlite"])
def test_what_it_cannot_run_as_core_would_is_refused_when_built(dialect: str) -> None:
    items = bindparam("sku", expanding=True)
    clashing = select(ProductVariant.id).where(ProductVariant.sku.in_(items),
                                               ProductVariant.id == bindparam("sku_1"))
    unnamed = select(ProductVariant.id, func.count())
    twice = select(Stock.id, Warehouse.id).join(Warehouse, Warehouse.id == Stock.warehouse_id)

    for statement in (clashing, unnamed, twice):
        with pytest.raises(rows.Unsupported):
            rows.Compiled(statement.group_by(ProductVariant.id)
                          if statement is unnamed else statement, dialect)
    if dialect == "postgresql":  # psycopg's Float processor wants the driver's type code
        with pytest.raises(rows.Unsupported, match="type code"):
            rows.Compiled(select(SalesChannel.__table__), dialect)


@pytest.mark.parametrize("dialect", ["postgresql", "sqlite"])
def test_an_integer_literal_is_written_into_the_text(dialect: str) -> None:
    limited = select(ProductVariant.id).where(ProductVariant.sku.in_(
        bindparam("skus", expanding=True))).order_by(ProductVariant.id.desc()).limit(
        bindparam("limit", type_=Integer, literal_execute=True))
    compiled = rows.Compiled(limited, dialect)

    sql, values = compiled.text({"skus": ["a", "b"], "limit": 7})
    again, _ = compiled.text({"skus": ["c"], "limit": 3})

    assert "LIMIT 7" in sql and "limit" not in values and len(values) >= 2
    assert "LIMIT 3" in again and "LIMIT 7" not in again
    with pytest.raises(TypeError):  # only an int is ever written into SQL
        compiled.text({"skus": ["a"], "limit": "1; DROP TABLE stock"})
    with pytest.raises(rows.Unsupported, match="Integer"):
        rows.Compiled(select(ProductVariant.id).where(
            ProductVariant.sku == bindparam("sku", type_=String, literal_execute=True)),
            dialect)


def test_a_page_by_skus_finds_any_sku_as_written(db: Database) -> None:
    # on PostgreSQL the SKUs go as one array literal (db.pg_array): quotes, backslashes,
    # commas, braces, blanks and the word NULL stay what they are
    s = shop(db, stock1=1)
    odd = ['a"b', "c\\d", "e,f", "{g}", "h i", "NULL", "ü-ß", 'i\\"j']
    made = {s.world.variant(s.product, sku=sku): sku for sku in odd}
    query = reads.PageQuery(first=50, skus=(*odd, odd[0], "absent"))

    found = _on_driver(db, reads.page, ProductVariant, query)

    assert [(row.id, row.sku) for row in found] == sorted(made.items(), reverse=True)
