"""One seller's (or storefront's) pages among others' rows: its stocks, ledger and orders,
newest first, page after page, as the filters say. On PostgreSQL stocks and movements are
read warehouse by warehouse (domain/services/reads._per_warehouse), a seller's orders from
its lines' index (reads._orders_of_seller), and a page reads at most about a page of rows,
whatever plan PostgreSQL settles on for the prepared statement."""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

import psycopg.sql
import pytest
from sqlalchemy import text

from api import ids
from domain.models import (
    MovementType,
    Order,
    OrderStatus,
    OrderType,
    Product,
    ProductVariant,
    Role,
    Stock,
    StockMovement,
)
from domain.services import orders, stock
from domain.services.reads import PageQuery, page_text
from tests.api.order_calls import ORDER_CANCEL, create_order
from tests.conftest import Api, Database
from tests.factories import ADMIN, World

pytestmark = pytest.mark.anyio

STOCKS = """query($low: Boolean, $out: Boolean, $prefix: String, $first: Int, $after: String) {
  stocks(belowThreshold: $low, outOfStock: $out, skuPrefix: $prefix, first: $first,
         after: $after) { edges { node { id } } pageInfo { hasNextPage endCursor } } }"""
MOVEMENTS = """query($types: [StockMovementType!], $first: Int, $after: String) {
  stockMovements(types: $types, first: $first, after: $after) {
    edges { node { id } } pageInfo { hasNextPage endCursor } } }"""
ORDERS = """query($statuses: [OrderStatus!], $types: [OrderType!], $first: Int,
                  $after: String) {
  orders(statuses: $statuses, types: $types, first: $first, after: $after) {
    edges { node { id } } pageInfo { hasNextPage endCursor } } }"""
OF_SELLER = """FROM {table} t JOIN warehouse w ON w.id = t.warehouse_id
               WHERE w.seller_id = :seller {where} ORDER BY t.id DESC"""


def _market(db: Database) -> tuple[int, int]:
    """Sellers A (3 warehouses) and B (2), their variants made in turns, so that their
    stocks' and movements' ids interleave; thresholds, an empty stock and an order on A's."""
    world = World(db)
    zone = world.zone(["DE"])
    sellers = [world.seller(), world.seller()]
    warehouses = {sellers[0]: [world.warehouse(sellers[0], [zone]) for _ in range(3)],
                  sellers[1]: [world.warehouse(sellers[1], [zone]) for _ in range(2)]}
    products = {s: world.product(s) for s in sellers}
    for i in range(7):
        for seller in sellers:
            kind = "TENT" if i % 2 else "TARP"
            variant = world.variant(products[seller], sku=f"{kind}-{seller}-{i}", stocks={
                w: (i + n) % 4 * 3 for n, w in enumerate(warehouses[seller])})
            for n, warehouse in enumerate(warehouses[seller]):
                if (i + n) % 3 == 0:
                    stock.set_low_stock_threshold(db.uow(), ADMIN, variant_id=variant,
                                                  warehouse_id=warehouse, threshold=5)
            if i % 3 == 1:
                orders.create(db.uow(), ADMIN, type=OrderType.REGULAR,
                              shipping_country="DE", lines=[orders.LineRequest(variant, 2)])
    return sellers[0], sellers[1]


async def _walk(api: Api, query: str, field: str, variables: dict[str, Any], token: str,
                first: int) -> list[int]:
    """Every id of every page, following the cursors."""
    found: list[int] = []
    after = None
    while True:
        page = (await api.gql(query, {**variables, "first": first, "after": after},
                              token))[field]
        found += [ids.parse(e["node"]["id"])[1] for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            return found
        after = page["pageInfo"]["endCursor"]


async def test_a_sellers_stock_pages_hold_its_stocks_newest_first_with_each_filter(
        api: Api) -> None:
    seller, other = _market(api.db)
    token = api.token(Role.SELLER, seller)
    free = "t.quantity - t.quantity_allocated"
    cases = [({}, ""),
             ({"low": True}, f"AND t.low_stock_threshold IS NOT NULL "
                             f"AND {free} < t.low_stock_threshold"),
             ({"low": False}, f"AND NOT (t.low_stock_threshold IS NOT NULL "
                              f"AND {free} < t.low_stock_threshold)"),
             ({"out": True}, f"AND {free} <= 0"),
             ({"out": False, "prefix": "TENT"},
              f"AND {free} > 0 AND t.variant_id IN "
              f"(SELECT id FROM product_variant WHERE sku LIKE 'TENT%')")]
    for variables, where in cases:
        want = [r[0] for r in api.db.rows(
            "SELECT t.id " + OF_SELLER.format(table="stock", where=where), seller=seller)]
        assert want, variables  # every case finds some
        for first in (1, 2, 5, 50):
            assert await _walk(api, STOCKS, "stocks", variables, token, first) == want, \
                (variables, first)
    assert await _walk(api, STOCKS, "stocks", {}, api.token(Role.SELLER, other), 4) == [
        r[0] for r in api.db.rows("SELECT t.id " + OF_SELLER.format(table="stock", where=""),
                                  seller=other)]


async def test_a_sellers_ledger_pages_hold_its_movements_newest_first(api: Api) -> None:
    seller, _ = _market(api.db)
    token = api.token(Role.SELLER, seller)
    for variables, where in (({}, ""), ({"types": ["ALLOCATION"]}, "AND t.type = 'ALLOCATION'")):
        want = [r[0] for r in api.db.rows(
            "SELECT t.id " + OF_SELLER.format(table="stock_movement", where=where),
            seller=seller)]
        assert want, variables
        for first in (1, 3, 50):
            assert await _walk(api, MOVEMENTS, "stockMovements", variables, token,
                               first) == want, (variables, first)


@pytest.mark.parametrize(("model", "query"), [
    (Stock, PageQuery(first=5, stock_seller_id=0)),
    (Stock, PageQuery(first=5, stock_seller_id=0, below_threshold=True)),
    (StockMovement, PageQuery(first=5, warehouse_seller_id=0)),
    (StockMovement, PageQuery(first=5, warehouse_seller_id=0,
                              movement_types=(MovementType.STOCK_UPDATE,))),
])
def test_a_sellers_page_reads_a_page_per_warehouse_whatever_the_plan(
        pg_db: Database, model: type[Any], query: PageQuery) -> None:
    # seller A's 2 warehouses hold the oldest rows, B's one all 400 newer ones: walked by
    # id, A's first page would read B's rows first (the generic plan of `warehouse_id IN
    # (A's warehouses)` did, from the sixth run of the prepared statement)
    world = World(pg_db)
    zone = world.zone(["DE"])
    a, b = world.seller(), world.seller()
    mine = [world.warehouse(a, [zone]), world.warehouse(a, [zone])]
    product = world.product(a)
    for _ in range(10):
        variant = world.variant(product, stocks=dict.fromkeys(mine, 1))
        for warehouse in mine:
            stock.set_low_stock_threshold(pg_db.uow(), ADMIN, variant_id=variant,
                                          warehouse_id=warehouse, threshold=5)
    theirs, their_product = world.warehouse(b, [zone]), world.product(b)
    with pg_db.engine.begin() as conn:  # B's 400 stocks with thresholds, and a movement each
        for sql in ("""INSERT INTO product_variant (product_id, seller_id, sku, track_inventory)
                       SELECT :product, :seller, 'B-' || g, true FROM generate_series(1, 400) g""",
                    """INSERT INTO stock (variant_id, warehouse_id, quantity, quantity_allocated,
                                          low_stock_threshold)
                       SELECT id, :warehouse, 1, 0, 5 FROM product_variant
                       WHERE seller_id = :seller ORDER BY id""",
                    """INSERT INTO stock_movement (stock_id, variant_id, warehouse_id, type,
                           quantity_change, allocated_change, quantity_after, allocated_after,
                           actor)
                       SELECT id, variant_id, warehouse_id, 'STOCK_UPDATE', 1, 0, 1, 0, 'test'
                       FROM stock WHERE warehouse_id = :warehouse ORDER BY id"""):
            conn.execute(text(sql), {"product": their_product, "seller": b,
                                     "warehouse": theirs})
        conn.execute(text("ANALYZE"))
    sql, params = page_text("postgresql", model, dataclasses.replace(query, **{
        f: a for f in ("stock_seller_id", "warehouse_seller_id")
        if getattr(query, f) is not None}))
    plan = _generic_plan(pg_db, sql, params)
    read = _rows_read(plan, model.__tablename__)
    assert 0 < read <= len(mine) * (query.first + 1), (read, plan)


@pytest.mark.parametrize("newer", [400, 20_000])
def test_a_storefronts_sku_page_reads_the_skus_asked_not_the_newer_variants(
        pg_db: Database, newer: int) -> None:
    # the asked SKUs are the oldest variants, `newer` others came after: the generic plan
    # walked them all by id, newest first (a LIMIT it cannot see looks cheap to reach)
    world = World(pg_db)
    zone = world.zone(["DE"])
    seller = world.seller()
    warehouse, product = world.warehouse(seller, [zone]), world.product(seller)
    asked = [world.variant(product, stocks={warehouse: 5}) for _ in range(3)]
    with pg_db.engine.begin() as conn:
        conn.execute(text("""INSERT INTO product_variant (product_id, seller_id, sku,
                                                          track_inventory)
                             SELECT :product, :seller, 'NEW-' || g, true
                             FROM generate_series(1, :newer) g"""),
                     {"product": product, "seller": seller, "newer": newer})
        conn.execute(text("ANALYZE"))
    skus = tuple(pg_db.scalar(f"SELECT sku FROM product_variant WHERE id = {v}")
                 for v in asked)
    query = PageQuery(first=5, skus=(*skus, skus[0], "NONE"), available_in="DE")
    sql, params = page_text("postgresql", ProductVariant, query)
    plan = _generic_plan(pg_db, sql, params)
    read = _rows_read(plan, "product_variant")
    # many variants: each SKU asked is looked up by index and each variant found read by id,
    # never a walk of them all; few: PostgreSQL may scan the few for each SKU instead
    # (per loop PostgreSQL reports rows rounded: a SKU that matches none may count as one)
    given = query.skus or ()
    assert read <= ((newer + 4) * len(given) if newer < 1000 else 2 * len(set(given))), \
        (read, plan)
    assert _index_walks(plan, "product_variant_pkey") == 0, plan
    with pg_db.engine.connect() as conn:
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        cursor.execute(sql, params)
        found = cursor.fetchall()
    assert [(row[0], row[-1]) for row in found] == [(v, 5) for v in reversed(asked)]


def _index_walks(plan: Any, index: str) -> int:
    """The plan's scans of `index` without a condition: walks of the whole index."""
    if isinstance(plan, list):
        return sum(_index_walks(p, index) for p in plan)
    node = plan.get("Plan", plan)
    own = int(node.get("Index Name") == index and "Index Cond" not in node)
    return own + sum(_index_walks(child, index) for child in node.get("Plans", ()))


def _generic_plan(db: Database, sql: str, params: dict[str, Any]) -> Any:
    """EXPLAIN ANALYZE of the statement run as PostgreSQL runs a prepared statement from
    its sixth run on, when it settles on the generic plan: its parameters stay parameters
    (`$1`...), planned without their values."""
    names = list(dict.fromkeys(re.findall(r"%\((\w+)\)s", sql)))
    prepared = re.sub(r"%\((\w+)\)s", lambda m: f"${names.index(m.group(1)) + 1}", sql)
    with db.engine.connect() as conn:
        raw: Any = conn.connection.dbapi_connection
        arguments = ", ".join(psycopg.sql.Literal(params[name]).as_string(raw)
                              for name in names)
        cursor = raw.cursor()
        cursor.execute("SET plan_cache_mode = force_generic_plan")
        cursor.execute(f"PREPARE planned AS {prepared}")
        cursor.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE planned({arguments})")
        plan = cursor.fetchone()[0]  # type: ignore[index]
        conn.rollback()
        cursor.execute("DEALLOCATE planned")
    return plan if isinstance(plan, list) else json.loads(plan)


def _rows_read(plan: Any, table: str) -> int:
    """The rows the plan's scans of `table` read, over all their loops: those they returned
    and those their filter removed (a walk that keeps none still reads what it passes)."""
    if isinstance(plan, list):
        return sum(_rows_read(p, table) for p in plan)
    node = plan.get("Plan", plan)
    own = 0
    if node.get("Relation Name") == table:
        passed = sum(node.get(f"Rows Removed by {what}", 0) for what in ("Filter", "Index Recheck"))
        own = round((node["Actual Rows"] + passed) * node["Actual Loops"])
    return own + sum(_rows_read(child, table) for child in node.get("Plans", ()))


async def test_a_sellers_and_a_storefronts_order_pages_hold_their_orders_newest_first(
        api: Api) -> None:
    world = World(api.db)
    zone = world.zone(["DE"])
    sellers = [world.seller(), world.seller()]
    variants = {}
    for seller in sellers:
        warehouse, product = world.warehouse(seller, [zone]), world.product(seller)
        variants[seller] = [world.variant(product, stocks={warehouse: 100}) for _ in range(2)]
    a, b = sellers
    tokens = {"a": api.token(Role.SELLER, a), "b": api.token(Role.SELLER, b),
              "s1": api.token(Role.STOREFRONT), "s2": api.token(Role.STOREFRONT)}
    token_ids = {name: i for i, name in enumerate(tokens, start=int(api.db.scalar(
        "SELECT max(id) FROM api_token")) - len(tokens) + 1)}
    mixes = [[(variants[a][0], 1)], [(variants[b][0], 1)],
             [(variants[b][1], 2), (variants[a][1], 1), (variants[a][0], 1)]]
    for n in range(5):  # interleaved: every caller's orders spread over the ids
        for name in ("s1", "s2", "a", "b", "admin"):
            lines = mixes[n % 3] if name in ("s1", "s2", "admin") \
                else [(variants[a if name == "a" else b][n % 2], 1)]
            order_type = "REGULAR" if name.startswith("s") or n % 2 else "DRAFT"
            made = await create_order(api, order_type, lines,
                                      token=tokens.get(name, "admin"))
            assert made["errors"] == [], made
            if n % 4 == 1:
                await api.gql(ORDER_CANCEL, {"id": made["order"]["id"]},
                              token=tokens.get(name, "admin"))

    def expected(who: str, where: str) -> list[int]:
        mine = "o.created_by_token_id = :token"
        if who in ("a", "b"):
            mine += (" OR EXISTS (SELECT 1 FROM order_line l JOIN product_variant v ON "
                     "v.id = l.variant_id WHERE l.order_id = o.id AND v.seller_id = :seller)")
        return [r[0] for r in api.db.rows(
            f"SELECT o.id FROM orders o WHERE ({mine}) {where} ORDER BY o.id DESC",
            token=token_ids[who], seller=a if who == "a" else b)]

    cases = [({}, ""), ({"statuses": ["CANCELED"]}, "AND o.status = 'CANCELED'"),
             ({"types": ["DRAFT"], "statuses": ["UNFULFILLED", "DRAFT"]},
              "AND o.type = 'DRAFT' AND o.status IN ('UNFULFILLED', 'DRAFT')")]
    for who in ("a", "b", "s1"):
        for variables, where in cases:
            want = expected(who, where)
            if not where:
                assert len(want) >= 5, who
            for first in (1, 2, 7):
                assert await _walk(api, ORDERS, "orders", variables, tokens[who],
                                   first) == want, (who, variables, first)



@pytest.mark.parametrize("statuses", [None, (OrderStatus.UNFULFILLED,)])
def test_a_sellers_order_page_reads_about_a_page_whatever_the_plan(
        pg_db: Database, statuses: tuple[OrderStatus, ...] | None) -> None:
    # seller A's 10 orders are the oldest, B's 20,000 the newest, and one token made them all:
    # A's first page used to gather every order id of A's lines, or walk the orders by id
    # past B's (for A's lines, or for its token's orders, estimated as many as the other's)
    world = World(pg_db)
    a, b = world.seller(), world.seller()
    mine, theirs = (world.variant(world.product(s)) for s in (a, b))
    with pg_db.engine.begin() as conn:
        for variant, seller, count in ((mine, a, 10), (theirs, b, 20_000)):
            conn.execute(text("""
                WITH o AS (INSERT INTO orders (type, status, shipping_country, allocated,
                                               created_by_token_id)
                           SELECT 'REGULAR', 'UNFULFILLED', 'DE', false, 7
                           FROM generate_series(1, :count) RETURNING id)
                INSERT INTO order_line (order_id, variant_id, seller_id, quantity,
                                        quantity_fulfilled)
                SELECT id, :variant, :seller, 1, 0 FROM o"""),
                {"count": count, "variant": variant, "seller": seller})
        conn.execute(text("ANALYZE"))
    query = PageQuery(first=5, order_token_id=8, order_seller_id=a, statuses=statuses)
    plan = _generic_plan(pg_db, *page_text("postgresql", Order, query))
    assert 0 < _rows_read(plan, "order_line") <= query.first + 1, plan
    assert _rows_read(plan, "orders") <= 3 * (query.first + 1), plan


@pytest.mark.parametrize(("token", "cursor"), [(8, None), (8, "newest"), (7, None),
                                               (7, "middle")])
def test_a_tokens_order_page_reads_about_a_page_whatever_the_plan(
        pg_db: Database, token: int, cursor: str | None) -> None:
    # token 8 made the 10 oldest orders, token 7 the 20,000 newest: a page of either, first
    # or from a cursor deep in token 7's orders, is a walk of (created_by_token_id, id) from
    # where the page begins, whatever the plan (the seller's page above shows the walk of
    # every order by id a token's page took when one token had made them all)
    with pg_db.engine.begin() as conn:
        for who, count in ((8, 10), (7, 20_000)):
            conn.execute(text("""
                INSERT INTO orders (type, status, shipping_country, allocated,
                                    created_by_token_id)
                SELECT 'REGULAR', 'UNFULFILLED', 'DE', false, :token
                FROM generate_series(1, :count)"""), {"token": who, "count": count})
        conn.execute(text("ANALYZE"))
    ids = [r[0] for r in pg_db.rows(
        f"SELECT id FROM orders WHERE created_by_token_id = {token} ORDER BY id DESC")]
    before = None if cursor is None else ids[0] + 1 if cursor == "newest" else ids[len(ids) // 2]
    query = PageQuery(first=5, order_token_id=token, before_id=before)
    sql, params = page_text("postgresql", Order, query)
    plan = _generic_plan(pg_db, sql, params)
    assert 0 < _rows_read(plan, "orders") <= query.first + 1, plan
    with pg_db.engine.connect() as conn:
        cursor_ = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        cursor_.execute(sql, params)
        found = [row[0] for row in cursor_.fetchall()]
    start = 0 if before is None else next(i for i, pk in enumerate(ids) if pk < before)
    assert found == ids[start:start + query.first + 1]


@pytest.mark.parametrize(("model", "query"), [
    (Product, PageQuery(first=5, seller_id=0)),
    (ProductVariant, PageQuery(first=5, variant_seller_id=0)),
])
def test_a_sellers_catalog_page_reads_a_page_whatever_the_plan(
        pg_db: Database, model: type[Any], query: PageQuery) -> None:
    # seller A's 300 variants (30 products) are the oldest, B's 300 the newest: a page of
    # A's read all of A's rows and sorted them, or walked past B's
    world = World(pg_db)
    sellers = (world.seller(), world.seller())
    with pg_db.engine.begin() as conn:
        for seller in sellers:
            conn.execute(text("""
                WITH p AS (INSERT INTO product (seller_id, name)
                           SELECT :seller, 'p' || g FROM generate_series(1, 30) g
                           RETURNING id)
                INSERT INTO product_variant (product_id, seller_id, sku, track_inventory)
                SELECT p.id, :seller, 'S' || :seller || '-' || p.id || '-' || k, true
                FROM p, generate_series(1, 10) k"""), {"seller": seller})
        conn.execute(text("ANALYZE"))
    given = {f: sellers[0] for f in ("seller_id", "variant_seller_id")
             if getattr(query, f) is not None}
    plan = _generic_plan(pg_db, *page_text("postgresql", model,
                                           dataclasses.replace(query, **given)))
    assert 0 < _rows_read(plan, model.__tablename__) <= query.first + 1, plan
