"""Seller dashboard reads: stock levels by warehouse with filters, per-variant totals."""

from __future__ import annotations

from typing import Any

import pytest

from domain.models import OrderType, Role
from domain.services import orders, stock
from tests.api.test_query_counts import counting
from tests.conftest import Api
from tests.factories import ADMIN, World, gid

pytestmark = pytest.mark.anyio

STOCKS = """query($seller: ID, $warehouse: ID, $prefix: String, $out: Boolean, $low: Boolean,
                  $first: Int) {
  stocks(sellerId: $seller, warehouseId: $warehouse, skuPrefix: $prefix, outOfStock: $out,
         belowThreshold: $low, first: $first) {
    edges { node { id quantity quantityAllocated quantityAvailable lowStockThreshold
                   variant { sku } warehouse { name } } }
    pageInfo { hasNextPage } } }"""


def _world(api: Api) -> dict[str, Any]:
    world = World(api.db)
    seller = world.seller()
    zone = world.zone(["DE"])
    w1 = world.warehouse(seller, [zone])
    w2 = world.warehouse(seller, [zone])
    product = world.product(seller)
    tent = world.variant(product, sku="TENT-1", stocks={w1: 5, w2: 0})
    tarp = world.variant(product, sku="TARP-1", stocks={w1: 2})
    for variant, warehouse in ((tent, w1), (tent, w2), (tarp, w1)):
        stock.set_low_stock_threshold(api.db.uow(), ADMIN, variant_id=variant,
                                      warehouse_id=warehouse, threshold=3)
    orders.create(api.db.uow(), ADMIN, type=OrderType.REGULAR, shipping_country="DE",
                  lines=[orders.LineRequest(tent, 4)])
    return {"seller": seller, "w1": w1, "w2": w2, "tent": tent, "tarp": tarp}


def _skus(data: dict[str, Any]) -> list[tuple[str, str]]:
    return sorted((e["node"]["variant"]["sku"], e["node"]["warehouse"]["name"])
                  for e in data["stocks"]["edges"])


async def test_stock_levels_filter_by_warehouse_prefix_and_state(api: Api) -> None:
    w = _world(api)
    names = {w["w1"]: api.db.scalar("SELECT name FROM warehouse WHERE id = :i", i=w["w1"]),
             w["w2"]: api.db.scalar("SELECT name FROM warehouse WHERE id = :i", i=w["w2"])}

    everything = await api.gql(STOCKS, {})
    in_w1 = await api.gql(STOCKS, {"warehouse": gid("Warehouse", w["w1"])})
    tents = await api.gql(STOCKS, {"prefix": "TENT"})
    out = await api.gql(STOCKS, {"out": True})
    low = await api.gql(STOCKS, {"low": True})

    assert len(everything["stocks"]["edges"]) == 3
    assert _skus(in_w1) == sorted([("TENT-1", names[w["w1"]]), ("TARP-1", names[w["w1"]])])
    assert {s for s, _ in _skus(tents)} == {"TENT-1"}
    assert _skus(out) == [("TENT-1", names[w["w2"]])]
    # available: TENT w1 = 1, TENT w2 = 0, TARP w1 = 2; all below 3
    assert len(low["stocks"]["edges"]) == 3


async def test_a_seller_sees_only_its_own_stock_levels(api: Api) -> None:
    w = _world(api)
    other = World(api.db).seller()

    own = await api.gql(STOCKS, {}, token=api.token(Role.SELLER, w["seller"]))
    foreign = await api.gql(STOCKS, {}, token=api.token(Role.SELLER, other))
    storefront = (await api.post(STOCKS, {}, token=api.token(Role.STOREFRONT))).json()

    assert len(own["stocks"]["edges"]) == 3
    assert foreign["stocks"]["edges"] == []
    assert storefront["errors"][0]["extensions"]["code"] == "PERMISSION_DENIED"


async def test_variant_totals_sum_every_warehouse_and_incoming(api: Api) -> None:
    w = _world(api)
    stock.create_purchase_order(api.db.uow(), ADMIN, warehouse_id=w["w2"],
                                lines=[stock.PurchaseLine(w["tent"], 10)])

    data = await api.gql("""{ productVariants(skuPrefix: "TENT") { edges { node { sku
        stockTotals { quantity quantityAllocated quantityAvailable quantityIncoming } } } } }""")

    [node] = [e["node"] for e in data["productVariants"]["edges"]]
    assert node["stockTotals"] == {"quantity": 5, "quantityAllocated": 4,
                                   "quantityAvailable": 1, "quantityIncoming": 10}


async def test_a_page_of_100_stock_levels_runs_a_fixed_number_of_statements(api: Api) -> None:
    world = World(api.db)
    seller = world.seller()
    zone = world.zone(["DE"])
    warehouses = [world.warehouse(seller, [zone]) for _ in range(2)]
    product = world.product(seller)
    for _ in range(50):
        world.variant(product, stocks={w: 1 for w in warehouses})
    await api.gql("{ __typename }")

    with counting(api.db) as statements:
        data = await api.gql("""{ stocks(first: 100) { edges { node { quantity quantityIncoming
            variant { sku stockTotals { quantity quantityIncoming } product { name } }
            warehouse { name seller { name } } } } } }""")

    assert len(data["stocks"]["edges"]) == 100
    assert statements.count <= 9, statements.sql


async def test_stock_update_sets_and_clears_the_low_stock_threshold(api: Api) -> None:
    w = _world(api)
    ids = {"variantId": gid("ProductVariant", w["tarp"]), "warehouseId": gid("Warehouse", w["w1"])}
    mutation = """mutation($input: StockUpdateInput!) { stockUpdate(input: $input) {
        stock { lowStockThreshold quantity } errors { code field } } }"""

    set_ = await api.gql(mutation, {"input": {**ids, "lowStockThreshold": 10}})
    bad = await api.gql(mutation, {"input": {**ids, "lowStockThreshold": -1}})
    cleared = await api.gql(mutation, {"input": {**ids, "lowStockThreshold": None}})

    assert set_["stockUpdate"] == {"stock": {"lowStockThreshold": 10, "quantity": 2},
                                   "errors": []}
    assert bad["stockUpdate"]["errors"] == [{"code": "INVALID",
                                             "field": "input.lowStockThreshold"}]
    assert cleared["stockUpdate"]["stock"]["lowStockThreshold"] is None
