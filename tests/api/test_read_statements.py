"""The benchmark's read workloads run one statement per level of their query, whatever their
size: no N+1, and no statement more than the architecture promises.

The documents are the bench's own (bench/reads.py), sent with the token role the bench uses;
each request is counted after a warm-up request of its token (the lookup is then cached), and
`api.gql` checks it answers without errors.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from api import loop_reads
from api.context import NOT_NOW, Services
from api.loaders import ROW_READS
from api.threads import Threads
from bench.reads import (
    AVAILABILITY,
    COUNTRY,
    DASHBOARD_MOVEMENTS,
    DASHBOARD_STOCKS,
    NODE,
    NODE_MIX,
    NODES,
    PAGE,
    PRODUCT_PAGE,
    SPECS,
    TRIVIAL,
)
from domain import rows
from domain.models import Role
from domain.services import stock
from tests.api.test_query_counts import Statements, counting
from tests.conftest import Api
from tests.factories import ADMIN, World, gid

pytestmark = pytest.mark.anyio

# Statements per request (SQLite and PostgreSQL alike).
STATEMENTS = {
    TRIVIAL: 0,  # none: the token's lookup is cached
    "availability": 1,  # the page of variants by SKU, each with its availability in COUNTRY
    "product-page": 3,  # the product; its variants; one sum of availability over them
    "dashboard-stocks": 2,  # the page of flagged stocks; their variants (for `sku`)
    "dashboard-movements": 2,  # the page of movements; their warehouses (for `name`)
    "nodes": 4,  # one per type asked: variants, products, warehouses, stocks
    "node ProductVariant": 1,  # the variant (it carries its seller, for visibility)
    "node Product": 1,  # the product
    "node Warehouse": 1,  # the warehouse
    "node Stock": 1,  # the stock (an admin's: no owner to look up for visibility)
}

PRODUCTS = 4
VARIANTS_PER_PRODUCT = 10  # as the bench's product pages
SMALL_NODE_MIX = (("ProductVariant", 2), ("Product", 1), ("Warehouse", 1), ("Stock", 1))


@dataclass
class Market:
    """One seller: 3 warehouses serving COUNTRY, one that does not (its stock must not count
    in availability), PRODUCTS products of VARIANTS_PER_PRODUCT variants stocked in all 4."""

    api: Api
    seller: int
    warehouses: list[int]  # serving COUNTRY, then the other one
    products: dict[int, list[int]] = field(default_factory=dict)  # product -> its variants
    sku: dict[int, str] = field(default_factory=dict)
    available: dict[int, int] = field(default_factory=dict)  # variant -> in COUNTRY

    def stock_ids(self, warehouse: int | None = None) -> list[int]:
        where = "" if warehouse is None else f"WHERE warehouse_id = {warehouse} "
        return [int(r[0]) for r in self.api.db.rows(f"SELECT id FROM stock {where}ORDER BY id")]

    def flag(self, stocks: int) -> list[int]:
        """Give `stocks` stocks a threshold one above their available, the others 0 (never
        flagged); the flagged ones, newest first (the dashboard's order)."""
        flagged = self.stock_ids()[:stocks]
        with self.api.db.engine.begin() as conn:
            conn.exec_driver_sql("UPDATE stock SET low_stock_threshold = 0")
            conn.exec_driver_sql(
                "UPDATE stock SET low_stock_threshold = quantity - quantity_allocated + 1 "
                f"WHERE id IN ({', '.join(map(str, flagged))})")
        return sorted(flagged, reverse=True)


def _market(api: Api) -> Market:
    world = World(api.db)
    seller = world.seller()
    serving = [world.warehouse(seller, [world.zone([COUNTRY])], priority=i) for i in range(3)]
    other = world.warehouse(seller, [world.zone(["FR"])])
    market = Market(api, seller, [*serving, other])
    for p in range(PRODUCTS):
        product = world.product(seller)
        market.products[product] = []
        for v in range(VARIANTS_PER_PRODUCT):
            quantities = {w: 100 * p + 10 * v + i for i, w in enumerate(serving, 1)}
            variant = world.variant(product, sku=f"SKU-{p}-{v}",
                                    stocks={**quantities, other: 1000})
            market.products[product].append(variant)
            market.sku[variant] = f"SKU-{p}-{v}"
            market.available[variant] = sum(quantities.values())
    return market


async def _counted(api: Api, role: str, query: str, variables: dict[str, Any] | None = None,
                   seller: int | None = None) -> tuple[dict[str, Any], Statements]:
    """`data` of one request with a token of `role`, and the statements it ran."""
    token = "admin" if role == "admin" else api.token(Role(role), seller)
    await api.gql("{ __typename }", token=token)  # caches the token's lookup
    with counting(api.db) as statements:
        data = await api.gql(query, variables, token=token)
    return data, statements


async def test_the_trivial_query_runs_no_statement(api: Api) -> None:
    """`{ __typename }` reads nothing: the floor the other reads are measured from."""
    spec = SPECS[TRIVIAL]
    data, seen = await _counted(api, spec.role, spec.query)

    assert data == {"__typename": "Query"}
    assert seen.count == STATEMENTS[TRIVIAL], seen.sql


async def test_availability_of_5_skus_reads_them_in_one_statement(
        api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """5 variants by SKU, each with its availability over the 3 warehouses serving
    COUNTRY: the page carries the sums (`PageQuery.available_in`)."""
    market = _market(api)
    picked = [variants[v] for variants in market.products.values() for v in (2, 7)][:5]
    skus = [market.sku[v] for v in picked]

    planned: list[bool] = []
    connect = rows.connect

    def watched(engine: Any, *, planned_once: bool) -> Any:
        planned.append(planned_once)
        return connect(engine, planned_once=planned_once)

    async def on_loop(connection: Any, reading: Any) -> Any:  # a driver connection's
        planned.append(True)
        return await run_on_loop(connection, reading)

    run_on_loop = loop_reads.run_on_loop
    monkeypatch.setattr(rows, "connect", watched)
    monkeypatch.setattr(loop_reads, "run_on_loop", on_loop)
    data, seen = await _counted(api, "storefront", AVAILABILITY, {"skus": skus})

    figures = {e["node"]["sku"]: e["node"]["quantityAvailable"]
               for e in data["productVariants"]["edges"]}
    assert figures == {market.sku[v]: market.available[v] for v in picked}
    assert seen.count == STATEMENTS["availability"], seen.sql
    # its plan holds for any SKUs (reads._asked_skus): on PostgreSQL planned once, not
    # planned again for each request as the engine's pool left PostgreSQL to choose
    assert planned == [True]


async def test_a_product_page_of_10_variants_runs_one_statement_per_level(api: Api) -> None:
    """A product, its 10 variants and their availability in COUNTRY (3 warehouses each)."""
    market = _market(api)
    product, variants = next(iter(market.products.items()))

    data, seen = await _counted(api, "storefront", PRODUCT_PAGE,
                                {"id": gid("Product", product)})

    node = data["node"]
    assert node["id"] == gid("Product", product)
    assert {v["id"]: (v["sku"], v["quantityAvailable"]) for v in node["variants"]} == {
        gid("ProductVariant", v): (market.sku[v], market.available[v]) for v in variants}
    assert seen.count == STATEMENTS["product-page"], seen.sql


@pytest.mark.parametrize("flagged", [20, 60])
async def test_the_low_stock_dashboard_runs_as_many_statements_for_20_or_60_flagged(
    api: Api, flagged: int,
) -> None:
    """The seller's page of stocks below their threshold, newest first, with their SKUs:
    a page of 20 or a full one of 50 (of 60) costs the same."""
    market = _market(api)
    newest = market.flag(flagged)[:PAGE]
    sku_of = {int(s): market.sku[int(v)] for s, v in
              api.db.rows("SELECT id, variant_id FROM stock")}

    data, seen = await _counted(api, "seller", DASHBOARD_STOCKS, seller=market.seller)

    page = data["stocks"]
    nodes = [e["node"] for e in page["edges"]]
    assert [(n["id"], n["variant"]["sku"]) for n in nodes] == [
        (gid("Stock", s), sku_of[s]) for s in newest]
    assert all(n["quantityAvailable"] == n["lowStockThreshold"] - 1 for n in nodes)
    assert page["pageInfo"]["hasNextPage"] is (flagged > PAGE)
    assert seen.count == STATEMENTS["dashboard-stocks"], seen.sql


@pytest.mark.parametrize("adjustments", [10, 60])
async def test_the_ledger_dashboard_runs_as_many_statements_for_14_or_64_movements(
    api: Api, adjustments: int,
) -> None:
    """A variant's newest movements (its 4 stocks' first updates, then `adjustments`
    recounts across 3 of them), each with its warehouse's name: read in one batch."""
    market = _market(api)
    variant = next(iter(market.sku))
    for i in range(adjustments):  # +1 in each warehouse, then -1 in each, and so on
        stock.adjust(api.db.uow(), ADMIN, variant_id=variant,
                     warehouse_id=market.warehouses[i % 3], delta=1 - 2 * (i // 3 % 2),
                     reason="recount")
    newest = [(gid("StockMovement", int(m)), str(name)) for m, name in api.db.rows(
        "SELECT m.id, w.name FROM stock_movement m JOIN warehouse w ON w.id = m.warehouse_id "
        "WHERE m.variant_id = :v ORDER BY m.id DESC", v=variant)]

    data, seen = await _counted(api, "seller", DASHBOARD_MOVEMENTS,
                                {"variantId": gid("ProductVariant", variant)}, market.seller)

    page = data["stockMovements"]
    assert len(newest) == 4 + adjustments
    assert [(e["node"]["id"], e["node"]["warehouse"]["name"]) for e in page["edges"]] == \
        newest[:PAGE]
    assert page["pageInfo"]["hasNextPage"] is (len(newest) > PAGE)
    assert seen.count == STATEMENTS["dashboard-movements"], seen.sql


def _mixed_ids(market: Market, mix: tuple[tuple[str, int], ...]) -> list[tuple[str, int]]:
    """`mix`'s (type, pk), shuffled as the bench does. The warehouses asked are the first
    ones, the stocks lie in the third: their warehouses are not read already (the bench's
    usual case, and the one that costs most)."""
    pools = {"ProductVariant": list(market.sku), "Product": list(market.products),
             "Warehouse": market.warehouses[:2],
             "Stock": market.stock_ids(market.warehouses[2])}
    picked = [(t, pk) for t, n in mix for pk in pools[t][:n]]
    random.Random(len(picked)).shuffle(picked)
    return picked


@pytest.mark.parametrize("mix", [NODE_MIX, SMALL_NODE_MIX], ids=["20 ids", "5 ids"])
async def test_nodes_runs_as_many_statements_for_20_or_5_ids(
    api: Api, mix: tuple[tuple[str, int], ...],
) -> None:
    """`nodes` of mixed types (ProductVariant, Product, Warehouse, Stock) reads each type
    in one batch, whatever the number of ids."""
    market = _market(api)
    picked = _mixed_ids(market, mix)

    data, seen = await _counted(api, "admin", NODES, {"ids": [gid(t, pk) for t, pk in picked]})

    assert [(n["__typename"], n["id"]) for n in data["nodes"]] == [
        (t, gid(t, pk)) for t, pk in picked]
    skus = [n["sku"] for n in data["nodes"] if n["__typename"] == "ProductVariant"]
    assert skus == [market.sku[pk] for t, pk in picked if t == "ProductVariant"]
    assert seen.count == STATEMENTS["nodes"], seen.sql


@pytest.mark.parametrize("type_name", [t for t, _ in NODE_MIX])
async def test_node_reads_its_object_and_at_most_its_owner(api: Api, type_name: str) -> None:
    """`node` of one id of each type the bench draws."""
    market = _market(api)
    [(_, pk)] = _mixed_ids(market, ((type_name, 1),))

    data, seen = await _counted(api, "admin", NODE, {"id": gid(type_name, pk)})

    assert (data["node"]["__typename"], data["node"]["id"]) == (type_name, gid(type_name, pk))
    assert seen.count == STATEMENTS[f"node {type_name}"], seen.sql


def _fails_once(monkeypatch: pytest.MonkeyPatch, name: str) -> list[int]:
    """ROW_READS' `name` read failing on its first call, as a lost connection would; the
    number of keys each failed call had."""
    read = ROW_READS[name]
    failures: list[int] = []

    def fails_once(dialect: str, keys: Any) -> rows.Reading[Any]:
        if not failures:
            failures.append(len(keys))
            raise OperationalError("SELECT", {}, RuntimeError("connection lost"))
        return (yield from read.reading(dialect, keys))

    monkeypatch.setitem(ROW_READS, name, rows.DriverRead(fails_once))
    return failures


def _hops(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every read the app hands its service threads from now on, and every read it runs on
    the event loop instead (`Services.read_on_loop`, PostgreSQL): each is a trip of its own
    to the database, which the fields' values then wait for."""
    calls: list[Any] = []
    run, on_loop = Threads.run, Services.read_on_loop

    async def counted(self: Threads, fn: Any) -> Any:
        calls.append(fn)
        return await run(self, fn)

    async def counted_on_loop(self: Services, fn: Any, *args: Any) -> Any:
        try:
            found = await on_loop(self, fn, *args)
        except BaseException:
            calls.append(fn)  # it was tried, and failed
            raise
        if found is not NOT_NOW:
            calls.append(fn)
        return found

    monkeypatch.setattr(Threads, "run", counted)
    monkeypatch.setattr(Services, "read_on_loop", counted_on_loop)
    return calls


async def test_a_page_and_what_its_fields_load_take_one_thread_hop(
        api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """The seller's low-stock page and its stocks' variants (for `sku`), read ahead in the
    page's own hop: the fields answer at once, without a hop (and a loop turn) of their
    own. The storefront's availability page carries its figures: one hop as well."""
    market = _market(api)
    newest = market.flag(5)
    token = api.token(Role.SELLER, market.seller)
    storefront = api.token(Role.STOREFRONT)
    for caller in (token, storefront):
        await api.gql("{ __typename }", token=caller)
    picked = [variants[v] for variants in market.products.values() for v in (1, 4)][:5]
    hops = _hops(monkeypatch)

    stocks = await api.gql(DASHBOARD_STOCKS, token=token)
    assert len(hops) == 1
    figures = await api.gql(AVAILABILITY, {"skus": [market.sku[v] for v in picked]},
                            token=storefront)
    assert len(hops) == 2

    assert [e["node"]["id"] for e in stocks["stocks"]["edges"]] == [
        gid("Stock", s) for s in newest]
    assert all(e["node"]["variant"]["sku"] for e in stocks["stocks"]["edges"])
    assert {e["node"]["sku"]: e["node"]["quantityAvailable"]
            for e in figures["productVariants"]["edges"]} == {
        market.sku[v]: market.available[v] for v in picked}


async def test_a_failed_read_ahead_leaves_the_fields_to_read_for_themselves(
        api: Api, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    market = _market(api)
    newest = market.flag(3)
    sku_of = {int(s): market.sku[int(v)] for s, v in
              api.db.rows("SELECT id, variant_id FROM stock")}
    failures = _fails_once(monkeypatch, "variant")
    token = api.token(Role.SELLER, market.seller)
    await api.gql("{ __typename }", token=token)
    hops = _hops(monkeypatch)

    data = await api.gql(DASHBOARD_STOCKS, token=token)

    assert [(e["node"]["id"], e["node"]["variant"]["sku"]) for e in data["stocks"]["edges"]
            ] == [(gid("Stock", s), sku_of[s]) for s in newest]
    assert failures == [1]  # the 3 newest flagged stocks are one variant's
    assert len(hops) == 2  # the page (its read ahead failed), then the fields' own read
    assert "reading ahead of a page's fields failed" in caplog.text


async def test_nodes_of_several_types_take_one_thread_hop(
        api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each type's rows in one statement, all of them on one connection in one hop; the
    stocks' `quantityAvailable` is their own figures (no read of its own)."""
    market = _market(api)
    picked = _mixed_ids(market, NODE_MIX)
    await api.gql("{ __typename }")
    hops = _hops(monkeypatch)

    data = await api.gql(NODES, {"ids": [gid(t, pk) for t, pk in picked]})

    assert len(hops) == 1
    assert [(n["__typename"], n["id"]) for n in data["nodes"]] == [
        (t, gid(t, pk)) for t, pk in picked]


async def test_nodes_read_ahead_that_fails_leaves_each_type_to_read_for_itself(
        api: Api, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    market = _market(api)
    picked = _mixed_ids(market, SMALL_NODE_MIX)
    failures = _fails_once(monkeypatch, "product")
    await api.gql("{ __typename }")
    hops = _hops(monkeypatch)

    data = await api.gql(NODES, {"ids": [gid(t, pk) for t, pk in picked]})

    assert [(n["__typename"], n["id"]) for n in data["nodes"]] == [
        (t, gid(t, pk)) for t, pk in picked]
    assert failures == [1]
    assert len(hops) == 1 + len({t for t, _ in picked})  # the read ahead, then one per type
    assert "reading nodes ahead failed" in caplog.text


async def test_a_products_variants_come_with_their_availability_in_one_hop(
        api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """The product page: the product, then its variants with their figures in COUNTRY read
    in the variants' own hop (two statements on one connection)."""
    market = _market(api)
    product, variants = next(iter(market.products.items()))
    await api.gql("{ __typename }")
    hops = _hops(monkeypatch)

    with counting(api.db) as seen:
        data = await api.gql(PRODUCT_PAGE, {"id": gid("Product", product)})

    assert len(hops) == 2
    assert seen.count == STATEMENTS["product-page"], seen.sql
    assert [(v["id"], v["quantityAvailable"]) for v in data["node"]["variants"]] == [
        (gid("ProductVariant", v), market.available[v]) for v in variants]


VARIANT_STOCKS = ("query($ids: [ID!]!) { nodes(ids: $ids) { ... on ProductVariant { sku "
                  "a: stocks { quantity warehouse { id name } variant { sku } } "
                  "b: stocks { id } } } }")


async def test_variants_stocks_come_with_their_warehouses_in_one_hop(
        api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """3 variants' stocks (4 warehouses each) with their warehouses and variants: one hop
    for the variants and their products (the seller's check), one for the stocks with
    what their fields load; an alias without those fields adds nothing."""
    market = _market(api)
    picked = next(iter(market.products.values()))[:3]
    await api.gql("{ __typename }")
    hops = _hops(monkeypatch)

    data = await api.gql(VARIANT_STOCKS, {"ids": [gid("ProductVariant", v) for v in picked]})

    assert len(hops) == 3  # the variants; their products; the stocks and warehouses
    for node, variant in zip(data["nodes"], picked, strict=True):
        serving, other = market.warehouses[:3], market.warehouses[3]
        assert [s["warehouse"]["id"] for s in node["a"]] == [  # by priority, then id
            gid("Warehouse", w) for w in (serving[0], other, *serving[1:])]
        assert {s["variant"]["sku"] for s in node["a"]} == {market.sku[variant]}
        assert len(node["b"]) == len(market.warehouses)


async def test_a_failed_read_ahead_of_children_leaves_their_fields_to_read(
        api: Api, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    market = _market(api)
    product, variants = next(iter(market.products.items()))
    failures = _fails_once(monkeypatch, "availability")
    await api.gql("{ __typename }")
    hops = _hops(monkeypatch)

    data = await api.gql(PRODUCT_PAGE, {"id": gid("Product", product)})

    assert [(v["id"], v["quantityAvailable"]) for v in data["node"]["variants"]] == [
        (gid("ProductVariant", v), market.available[v]) for v in variants]
    assert failures == [VARIANTS_PER_PRODUCT]
    assert len(hops) == 3  # the product; the variants (their read ahead failed); the figures
    assert "reading ahead of a list's fields failed" in caplog.text
