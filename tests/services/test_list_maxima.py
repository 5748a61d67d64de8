"""The most each plain list of the API can hold, as the cost limit counts it
(api/limits.py LIST_SIZES): the domain refuses what would exceed it, changing nothing."""

from __future__ import annotations

import pytest

from api.limits import LIST_SIZES
from domain.errors import InvalidInput
from domain.models import OrderType
from domain.services import catalog, orders, stock
from tests.conftest import Database
from tests.factories import ADMIN, World, shop


def test_the_cost_limit_counts_the_maxima_the_domain_enforces() -> None:
    assert LIST_SIZES["Product.variants"] == catalog.MAX_VARIANTS_PER_PRODUCT
    assert LIST_SIZES["ProductVariant.stocks"] == catalog.MAX_WAREHOUSES_PER_SELLER
    assert LIST_SIZES["OrderLine.allocations"] == catalog.MAX_WAREHOUSES_PER_SELLER
    assert LIST_SIZES["Warehouse.shippingZones"] == catalog.MAX_ZONES_PER_WAREHOUSE
    assert LIST_SIZES["Order.lines"] == LIST_SIZES["Fulfillment.lines"] == orders.MAX_LINES
    assert LIST_SIZES["PurchaseOrder.lines"] == stock.MAX_PURCHASE_LINES


def test_a_product_holds_at_most_100_variants(db: Database) -> None:
    world = World(db)
    product = world.product(world.seller())
    for _ in range(catalog.MAX_VARIANTS_PER_PRODUCT):
        world.variant(product)
    with pytest.raises(InvalidInput, match="at most 100 variants") as refused:
        world.variant(product)
    assert refused.value.field == "productId"
    assert db.rows("SELECT count(*) FROM product_variant")[0][0] == 100


def test_a_seller_holds_at_most_100_warehouses_of_at_most_100_zones(db: Database) -> None:
    world = World(db)
    seller = world.seller()
    zones = [world.zone(["DE"]) for _ in range(catalog.MAX_ZONES_PER_WAREHOUSE + 1)]
    with pytest.raises(InvalidInput, match="at most 100 shipping zones"):
        world.warehouse(seller, zones)
    for _ in range(catalog.MAX_WAREHOUSES_PER_SELLER):
        world.warehouse(seller, zones[:1])
    with pytest.raises(InvalidInput, match="at most 100 warehouses") as refused:
        world.warehouse(seller, zones[:1])
    assert refused.value.field == "sellerId"
    assert db.rows("SELECT count(*) FROM warehouse")[0][0] == 100
    world.warehouse(world.seller(), zones[:1])  # another seller has room


def test_an_order_holds_at_most_500_lines_however_they_are_added(db: Database) -> None:
    s = shop(db, stock1=10_000)
    draft = orders.create(db.uow(), ADMIN, type=OrderType.DRAFT, shipping_country="DE",
                          lines=[orders.LineRequest(s.variant, 1)] * 300)
    orders.add_lines(db.uow(), ADMIN, draft.id, [orders.LineRequest(s.variant, 1)] * 199)
    with pytest.raises(InvalidInput, match="at most 500 lines; this one has 499"):
        orders.add_lines(db.uow(), ADMIN, draft.id, [orders.LineRequest(s.variant, 1)] * 2)
    assert db.rows("SELECT count(*) FROM order_line")[0][0] == 499
    assert s.world.stock(s.variant, s.w1) == (10_000, 499)


def test_a_purchase_order_holds_at_most_500_lines(db: Database) -> None:
    s = shop(db)
    with pytest.raises(InvalidInput, match="at most 500 lines"):
        stock.create_purchase_order(db.uow(), ADMIN, warehouse_id=s.w1,
                                    lines=[stock.PurchaseLine(s.variant, 1)] * 501)
    assert db.rows("SELECT count(*) FROM purchase_order")[0][0] == 0
