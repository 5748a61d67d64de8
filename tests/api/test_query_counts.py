"""No N+1: reads run a small, bounded number of statements whatever their size."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event

from domain.models import OrderType
from domain.services import orders
from tests.conftest import Api, Database
from tests.factories import ADMIN, World, gid

pytestmark = pytest.mark.anyio


class Statements:
    def __init__(self) -> None:
        self.sql: list[str] = []

    @property
    def count(self) -> int:
        return len(self.sql)


@contextmanager
def counting(db: Database) -> Iterator[Statements]:
    seen = Statements()

    def record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if not statement.startswith("BEGIN"):  # SQLite's explicit transaction start
            seen.sql.append(statement)

    # the order path's statements bypass SQLAlchemy: psycopg's Connection.execute, or the
    # gated pysqlite connection's execute/executemany (SQLAlchemy itself runs cursors)
    if db.engine.dialect.name == "postgresql":
        import psycopg

        from api import loop_reads

        # and the reads the event loop runs itself (loop_reads.run_on_loop)
        patched: list[tuple[Any, str, Any]] = [(psycopg.Connection, "execute",
                                                psycopg.Connection.execute),
                                               (loop_reads, "_on_loop", loop_reads._on_loop)]
    else:
        pooled = db.engine.raw_connection()
        gated = type(pooled.driver_connection)
        pooled.close()
        patched = [(gated, name, getattr(gated, name)) for name in ("execute", "executemany")]

    def counting_call(original: Any) -> Any:
        def call(self: Any, statement: Any, *args: Any, **kwargs: Any) -> Any:
            if not str(statement).startswith("BEGIN"):
                seen.sql.append(str(statement))
            return original(self, statement, *args, **kwargs)
        return call  # (loop_reads._on_loop's first argument is the connection, as `self` here)

    # reads by id and sums over ids run on the driver connections (PostgreSQL), which the
    # psycopg patch above counts; Core's statements are counted on the engine
    engines = {db.engine}
    for owner, name, original in patched:
        setattr(owner, name, counting_call(original))
    for engine in engines:
        event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        for owner, name, original in patched:
            setattr(owner, name, original)
        for engine in engines:
            event.remove(engine, "before_cursor_execute", record)


def _catalog(db: Database, variants: int) -> tuple[World, list[int], list[int]]:
    world = World(db)
    seller = world.seller()
    zone = world.zone(["DE"])
    warehouses = [world.warehouse(seller, [zone], priority=i) for i in range(3)]
    product = world.product(seller)
    variant_ids = [world.variant(product, stocks={w: 100 for w in warehouses})
                   for _ in range(variants)]
    return world, warehouses, variant_ids


ORDER_QUERY = """
query($id: ID!) { node(id: $id) { ... on Order { id status lines {
  id quantity quantityFulfilled
  variant { id sku product { name seller { name } } }
  allocations { quantity warehouse { id name seller { id } } } } } } }"""


async def test_reading_an_order_with_50_lines_runs_a_fixed_number_of_statements(
    api: Api,
) -> None:
    _, _, variant_ids = _catalog(api.db, 50)
    view = orders.create(api.db.uow(), ADMIN, type=OrderType.REGULAR, shipping_country="DE",
                         lines=[orders.LineRequest(v, 150) for v in variant_ids])
    await api.gql("{ __typename }")  # the token lookup is cached after this

    with counting(api.db) as statements:
        data = await api.gql(ORDER_QUERY, {"id": gid("Order", view.id)})

    lines = data["node"]["lines"]
    assert len(lines) == 50
    assert sum(len(line["allocations"]) for line in lines) == 100
    # order, lines, allocations, variants, products, sellers, warehouses
    assert statements.count <= 8, statements.sql


async def test_reading_100_variants_with_stocks_runs_a_fixed_number_of_statements(
    api: Api,
) -> None:
    _catalog(api.db, 100)
    await api.gql("{ __typename }")

    with counting(api.db) as statements:
        data = await api.gql("""{ productVariants(first: 100) { edges { node {
            sku quantityAvailable(country: "DE") product { name }
            stocks { quantity quantityAllocated quantityAvailable warehouse { name } } } } } }""")

    nodes = [e["node"] for e in data["productVariants"]["edges"]]
    assert len(nodes) == 100
    assert all(len(n["stocks"]) == 3 and n["quantityAvailable"] == 300 for n in nodes)
    assert statements.count <= 6, statements.sql


async def test_reading_a_page_of_100_orders_runs_a_fixed_number_of_statements(
    api: Api,
) -> None:
    _, _, variant_ids = _catalog(api.db, 3)
    for _ in range(100):
        orders.create(api.db.uow(), ADMIN, type=OrderType.REGULAR, shipping_country="DE",
                      lines=[orders.LineRequest(v, 1) for v in variant_ids])
    await api.gql("{ __typename }")

    with counting(api.db) as statements:
        data = await api.gql("""{ orders(first: 100) { edges { node { id status
            lines { quantity variant { sku } allocations { quantity warehouse { name } } }
        } } pageInfo { hasNextPage } } }""")

    assert len(data["orders"]["edges"]) == 100
    assert statements.count <= 6, statements.sql


CREATE = """mutation($input: OrderCreateInput!) { orderCreate(input: $input) {
  order { id status lines { id quantity allocations { quantity warehouse { id } } } }
  errors { code } } }"""


async def test_creating_a_3_line_order_runs_a_small_fixed_number_of_statements(
    api: Api,
) -> None:
    _, _, variant_ids = _catalog(api.db, 3)
    await api.gql("{ __typename }")
    lines = [{"variantId": gid("ProductVariant", v), "quantity": 150} for v in variant_ids]

    with counting(api.db) as statements:
        data = await api.gql(CREATE, {"input": {"type": "REGULAR", "shippingCountry": "DE",
                                                "lines": lines}})

    assert data["orderCreate"]["errors"] == []
    sql = "\n".join(s[:100] for s in statements.sql)
    if api.db.engine.dialect.name == "postgresql":
        # the plan's read (stocks with the config), then one statement that inserts the
        # order, lines and allocations, moves the guarded counters and writes the ledger
        # (both in autocommit on one connection, so psycopg sends no BEGIN and no
        # COMMIT); the payload's warehouses: one batched read
        assert statements.count == 3, sql
    else:
        # read stocks (with the config), insert order, lines, allocations, guarded counter
        # update (executemany), its ledger movements (executemany); the payload's
        # warehouses: one batched read
        assert statements.count == 7, sql


async def test_nodes_reads_each_type_in_one_statement_whatever_the_number_of_ids(
    api: Api,
) -> None:
    """`nodes` of 100 variants, 300 stocks and 3 warehouses: a statement per type."""
    _, warehouses, variant_ids = _catalog(api.db, 100)
    stock_ids = [int(r[0]) for r in api.db.rows("SELECT id FROM stock")]
    wanted = ([gid("ProductVariant", v) for v in variant_ids]
              + [gid("Stock", s) for s in stock_ids]
              + [gid("Warehouse", w) for w in warehouses] + ["bogus", gid("Product", 10**6)])
    await api.gql("{ __typename }")

    with counting(api.db) as statements:
        data = await api.gql("query($ids: [ID!]!) { nodes(ids: $ids) { __typename id } }",
                             {"ids": wanted})

    assert [n and n["id"] for n in data["nodes"]] == [*wanted[:-2], None, None]
    # variants, their products, stocks, warehouses, products (the unknown one)
    assert statements.count <= 5, statements.sql
