"""Catalog mutations (seller, zone, warehouse, product, variant, stock) and the configuration."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text

from domain.models import Role
from tests.conftest import Api
from tests.factories import World, gid, shop

pytestmark = pytest.mark.anyio

ERRORS = "errors { code field message variantId warehouseId requested available }"
STOCKS = "stocks { warehouse { id } quantity quantityAllocated quantityAvailable }"

SELLER_CREATE = f"""
mutation($input: SellerCreateInput!) {{
  sellerCreate(input: $input) {{ seller {{ id name }} {ERRORS} }}
}}"""
ZONE_CREATE = f"""
mutation($input: ShippingZoneCreateInput!) {{
  shippingZoneCreate(input: $input) {{ shippingZone {{ id name countries }} {ERRORS} }}
}}"""
WAREHOUSE_CREATE = f"""
mutation($input: WarehouseCreateInput!) {{
  warehouseCreate(input: $input) {{
    warehouse {{ id name seller {{ id name }} shippingZones {{ id countries }} }} {ERRORS}
  }}
}}"""
PRODUCT_CREATE = f"""
mutation($input: ProductCreateInput!) {{
  productCreate(input: $input) {{
    product {{ id name seller {{ id }} variants {{ id }} }} {ERRORS}
  }}
}}"""
VARIANT_CREATE = f"""
mutation($input: ProductVariantCreateInput!) {{
  productVariantCreate(input: $input) {{
    productVariant {{ id sku trackInventory product {{ id name }} {STOCKS} }} {ERRORS}
  }}
}}"""
VARIANT_UPDATE = f"""
mutation($id: ID!, $input: ProductVariantUpdateInput!) {{
  productVariantUpdate(id: $id, input: $input) {{
    productVariant {{ id sku trackInventory }} {ERRORS}
  }}
}}"""
STOCKS_UPDATE = f"""
mutation($variantId: ID!, $stocks: [StockInput!]!) {{
  productVariantStocksUpdate(variantId: $variantId, stocks: $stocks) {{
    productVariant {{ id {STOCKS} }} {ERRORS}
  }}
}}"""
ORDER_CREATE = f"""
mutation($input: OrderCreateInput!) {{
  orderCreate(input: $input) {{ order {{ id status }} {ERRORS} }}
}}"""
CONFIG = "query { marketplaceConfiguration { allocation { orderType enabled } } }"
CONFIG_UPDATE = f"""
mutation($input: MarketplaceConfigurationUpdateInput!) {{
  marketplaceConfigurationUpdate(input: $input) {{
    marketplaceConfiguration {{ allocation {{ orderType enabled }} }} {ERRORS}
  }}
}}"""
VARIANT_STOCKS = f"""
query($id: ID!) {{ node(id: $id) {{ ... on ProductVariant {{ {STOCKS} }} }} }}"""
AVAILABLE = """
query($id: ID!, $country: String) {
  node(id: $id) { ... on ProductVariant { quantityAvailable(country: $country) } }
}"""

MALFORMED_IDS = ["not-an-id", "", "U2VsbGVyOmFiYw=="]  # the last is base64("Seller:abc")


def unknown_or_malformed(type_name: str) -> list[tuple[str, str]]:
    """(ID, expected code): an unknown `type_name` is NOT_FOUND, a malformed ID INVALID."""
    return [(gid(type_name, 999999), "NOT_FOUND"), *((bad, "INVALID") for bad in MALFORMED_IDS)]


def failure(payload: dict[str, Any], result: str) -> dict[str, Any]:
    """The only error of a failed payload, whose result field must be null."""
    assert payload[result] is None
    [error] = payload["errors"]
    return error


def refusal(payload: dict[str, Any], result: str) -> tuple[str, str | None]:
    """(code, field) of the only error of a failed payload."""
    error = failure(payload, result)
    return error["code"], error["field"]


def count(api: Api, table: str) -> int:
    return int(api.db.scalar(f"SELECT count(*) FROM {table}"))


async def stock_figures(api: Api, variant_id: int) -> dict[str, tuple[int, int, int]]:
    data = await api.gql(VARIANT_STOCKS, {"id": gid("ProductVariant", variant_id)})
    return {s["warehouse"]["id"]: (s["quantity"], s["quantityAllocated"],
                                   s["quantityAvailable"])
            for s in data["node"]["stocks"]}


async def test_catalog_built_through_graphql_answers_with_its_objects(api: Api) -> None:
    seller = (await api.gql(SELLER_CREATE, {"input": {"name": "Acme"}}))["sellerCreate"]
    zone = (await api.gql(ZONE_CREATE, {"input": {
        "name": "DACH", "countries": ["DE", "AT", "CH"]}}))["shippingZoneCreate"]
    seller_id = seller["seller"]["id"]
    zone_id = zone["shippingZone"]["id"]
    warehouse = (await api.gql(WAREHOUSE_CREATE, {"input": {
        "sellerId": seller_id, "name": "Berlin",
        "shippingZoneIds": [zone_id]}}))["warehouseCreate"]
    product = (await api.gql(PRODUCT_CREATE, {"input": {
        "sellerId": seller_id, "name": "Mug"}}))["productCreate"]
    variant = (await api.gql(VARIANT_CREATE, {"input": {
        "productId": product["product"]["id"], "sku": "MUG-RED"}}))["productVariantCreate"]
    warehouse_id = warehouse["warehouse"]["id"]
    variant_id = variant["productVariant"]["id"]

    stocked = (await api.gql(STOCKS_UPDATE, {
        "variantId": variant_id,
        "stocks": [{"warehouseId": warehouse_id, "quantity": 12}]}))["productVariantStocksUpdate"]

    assert seller["errors"] == [] and seller["seller"]["name"] == "Acme"
    assert zone["errors"] == []
    assert zone["shippingZone"]["name"] == "DACH"
    assert sorted(zone["shippingZone"]["countries"]) == ["AT", "CH", "DE"]
    assert warehouse["errors"] == []
    assert warehouse["warehouse"]["name"] == "Berlin"
    assert warehouse["warehouse"]["seller"] == {"id": seller_id, "name": "Acme"}
    assert [z["id"] for z in warehouse["warehouse"]["shippingZones"]] == [zone_id]
    assert product["errors"] == []
    assert product["product"]["name"] == "Mug"
    assert product["product"]["seller"] == {"id": seller_id}
    assert product["product"]["variants"] == []
    assert variant["errors"] == []
    assert variant["productVariant"]["sku"] == "MUG-RED"
    assert variant["productVariant"]["trackInventory"] is True
    assert variant["productVariant"]["product"] == {"id": product["product"]["id"],
                                                    "name": "Mug"}
    assert variant["productVariant"]["stocks"] == []
    assert stocked["errors"] == []
    assert stocked["productVariant"]["stocks"] == [{
        "warehouse": {"id": warehouse_id}, "quantity": 12, "quantityAllocated": 0,
        "quantityAvailable": 12}]


async def test_seller_with_empty_name_is_invalid_and_not_created(api: Api) -> None:
    data = await api.gql(SELLER_CREATE, {"input": {"name": ""}})

    assert refusal(data["sellerCreate"], "seller") == ("INVALID", "name")
    assert count(api, "seller") == 0


async def test_shipping_zone_with_empty_name_is_invalid_and_not_created(api: Api) -> None:
    data = await api.gql(ZONE_CREATE, {"input": {"name": "", "countries": ["DE"]}})

    assert refusal(data["shippingZoneCreate"], "shippingZone") == ("INVALID", "name")
    assert count(api, "shipping_zone") == 0


@pytest.mark.parametrize("country", ["XX", "DEU", "", "D"])
async def test_shipping_zone_with_unknown_country_code_is_invalid(api: Api, country: str) -> None:
    data = await api.gql(ZONE_CREATE, {"input": {"name": "Zone", "countries": ["DE", country]}})

    error = failure(data["shippingZoneCreate"], "shippingZone")
    assert error["code"] == "INVALID"
    assert error["field"] is not None and error["field"].startswith("countries")
    assert count(api, "shipping_zone") == 0
    assert count(api, "shipping_zone_country") == 0


@pytest.mark.parametrize(("seller_id", "code"), unknown_or_malformed("Seller"))
async def test_warehouse_for_unknown_or_malformed_seller_id_fails(
        api: Api, seller_id: str, code: str) -> None:
    zone = World(api.db).zone(["DE"])

    data = await api.gql(WAREHOUSE_CREATE, {"input": {
        "sellerId": seller_id, "name": "W", "shippingZoneIds": [gid("ShippingZone", zone)]}})

    assert refusal(data["warehouseCreate"], "warehouse") == (code, "sellerId")
    assert count(api, "warehouse") == 0


async def test_warehouse_with_unknown_shipping_zone_is_not_found(api: Api) -> None:
    seller = World(api.db).seller()

    data = await api.gql(WAREHOUSE_CREATE, {"input": {
        "sellerId": gid("Seller", seller), "name": "W",
        "shippingZoneIds": [gid("ShippingZone", 999999)]}})

    error = failure(data["warehouseCreate"], "warehouse")
    assert error["code"] == "NOT_FOUND"
    assert error["field"] is not None and error["field"].startswith("shippingZoneIds")
    assert count(api, "warehouse") == 0


async def test_warehouse_with_malformed_shipping_zone_id_is_invalid(api: Api) -> None:
    seller = World(api.db).seller()

    data = await api.gql(WAREHOUSE_CREATE, {"input": {
        "sellerId": gid("Seller", seller), "name": "W", "shippingZoneIds": ["garbage"]}})

    error = failure(data["warehouseCreate"], "warehouse")
    assert error["code"] == "INVALID"
    assert count(api, "warehouse") == 0


async def test_warehouse_with_empty_name_is_invalid(api: Api) -> None:
    world = World(api.db)
    seller, zone = world.seller(), world.zone(["DE"])

    data = await api.gql(WAREHOUSE_CREATE, {"input": {
        "sellerId": gid("Seller", seller), "name": "",
        "shippingZoneIds": [gid("ShippingZone", zone)]}})

    assert refusal(data["warehouseCreate"], "warehouse") == ("INVALID", "name")
    assert count(api, "warehouse") == 0


@pytest.mark.parametrize(("seller_id", "code"), unknown_or_malformed("Seller"))
async def test_product_for_unknown_or_malformed_seller_id_fails(
        api: Api, seller_id: str, code: str) -> None:
    data = await api.gql(PRODUCT_CREATE, {"input": {"sellerId": seller_id, "name": "Mug"}})

    assert refusal(data["productCreate"], "product") == (code, "sellerId")
    assert count(api, "product") == 0


async def test_product_with_empty_name_is_invalid(api: Api) -> None:
    seller = World(api.db).seller()

    data = await api.gql(PRODUCT_CREATE, {"input": {"sellerId": gid("Seller", seller),
                                                    "name": ""}})

    assert refusal(data["productCreate"], "product") == ("INVALID", "name")
    assert count(api, "product") == 0


async def test_variant_with_existing_sku_is_duplicate_and_not_created(api: Api) -> None:
    world = World(api.db)
    product = world.product(world.seller())
    world.variant(product, sku="MUG-1")

    data = await api.gql(VARIANT_CREATE, {"input": {
        "productId": gid("Product", product), "sku": "MUG-1"}})

    assert refusal(data["productVariantCreate"], "productVariant") == ("DUPLICATE", "sku")
    assert count(api, "product_variant") == 1


async def test_two_sellers_may_use_one_sku(api: Api) -> None:
    world = World(api.db)
    first_seller = world.seller()
    world.variant(world.product(first_seller), sku="SHARED-1")
    other_seller = world.seller()
    other_product = world.product(other_seller)

    data = await api.gql(VARIANT_CREATE, {"input": {
        "productId": gid("Product", other_product), "sku": "SHARED-1"}},
        token=api.token(Role.SELLER, other_seller))

    assert data["productVariantCreate"]["errors"] == []
    assert count(api, "product_variant") == 2
    both = await api.gql("""{ productVariants(skus: ["SHARED-1"], first: 10) {
        edges { node { id sku product { seller { id } } } } } }""")
    sellers = {e["node"]["product"]["seller"]["id"]
               for e in both["productVariants"]["edges"]}
    assert sellers == {gid("Seller", first_seller), gid("Seller", other_seller)}


async def test_a_sellers_duplicate_sku_does_not_say_who_else_sells_it(api: Api) -> None:
    world = World(api.db)
    seller = world.seller()
    world.variant(world.product(seller), sku="OWN-1")

    data = await api.gql(VARIANT_CREATE, {"input": {
        "productId": gid("Product", world.product(seller)), "sku": "OWN-1"}},
        token=api.token(Role.SELLER, seller))

    error = failure(data["productVariantCreate"], "productVariant")
    assert (error["code"], error["field"]) == ("DUPLICATE", "sku")
    assert "this seller" in error["message"]
    assert count(api, "product_variant") == 1


@pytest.mark.parametrize(("product_id", "code"), unknown_or_malformed("Product"))
async def test_variant_for_unknown_or_malformed_product_id_fails(
        api: Api, product_id: str, code: str) -> None:
    data = await api.gql(VARIANT_CREATE, {"input": {"productId": product_id, "sku": "X-1"}})

    assert refusal(data["productVariantCreate"], "productVariant") == (code, "productId")
    assert count(api, "product_variant") == 0


async def test_variant_with_empty_sku_is_invalid(api: Api) -> None:
    world = World(api.db)
    product = world.product(world.seller())

    data = await api.gql(VARIANT_CREATE, {"input": {"productId": gid("Product", product),
                                                    "sku": ""}})

    assert refusal(data["productVariantCreate"], "productVariant") == ("INVALID", "sku")
    assert count(api, "product_variant") == 0


async def test_variant_can_be_created_untracked(api: Api) -> None:
    world = World(api.db)
    product = world.product(world.seller())

    data = await api.gql(VARIANT_CREATE, {"input": {
        "productId": gid("Product", product), "sku": "GIFT-CARD", "trackInventory": False}})

    payload = data["productVariantCreate"]
    assert payload["errors"] == []
    assert payload["productVariant"]["trackInventory"] is False
    assert api.db.scalar("SELECT track_inventory FROM product_variant") in (False, 0)


async def test_variant_update_switches_inventory_tracking(api: Api) -> None:
    s = shop(api.db)

    data = await api.gql(VARIANT_UPDATE, {"id": gid("ProductVariant", s.variant),
                                          "input": {"trackInventory": False}})

    payload = data["productVariantUpdate"]
    assert payload["errors"] == []
    assert payload["productVariant"]["id"] == gid("ProductVariant", s.variant)
    assert payload["productVariant"]["trackInventory"] is False


async def test_variant_update_of_unknown_variant_is_not_found(api: Api) -> None:
    data = await api.gql(VARIANT_UPDATE, {"id": gid("ProductVariant", 999999),
                                          "input": {"trackInventory": False}})

    assert failure(data["productVariantUpdate"], "productVariant")["code"] == "NOT_FOUND"


async def test_stocks_update_creates_a_missing_stock(api: Api) -> None:
    s = shop(api.db, stock1=4, stock2=0)
    w3 = s.world.warehouse(s.seller, [s.zone], priority=2)

    data = await api.gql(STOCKS_UPDATE, {
        "variantId": gid("ProductVariant", s.variant),
        "stocks": [{"warehouseId": gid("Warehouse", w3), "quantity": 9}]})

    assert data["productVariantStocksUpdate"]["errors"] == []
    assert await stock_figures(api, s.variant) == {
        gid("Warehouse", s.w1): (4, 0, 4),
        gid("Warehouse", s.w2): (0, 0, 0),
        gid("Warehouse", w3): (9, 0, 9)}
    assert count(api, "stock") == 3


async def test_stocks_update_sets_on_hand_quantity_not_available(api: Api) -> None:
    s = shop(api.db, stock1=10, stock2=0)
    await api.gql(ORDER_CREATE, {"input": {
        "type": "REGULAR", "shippingCountry": "DE",
        "lines": [{"variantId": gid("ProductVariant", s.variant), "quantity": 3}]}})

    data = await api.gql(STOCKS_UPDATE, {
        "variantId": gid("ProductVariant", s.variant),
        "stocks": [{"warehouseId": gid("Warehouse", s.w1), "quantity": 8}]})

    assert data["productVariantStocksUpdate"]["errors"] == []
    assert s.world.stock(s.variant, s.w1) == (8, 3)
    figures = await stock_figures(api, s.variant)
    assert figures[gid("Warehouse", s.w1)] == (8, 3, 5)


async def test_stocks_update_with_negative_quantity_is_invalid_and_changes_nothing(
        api: Api) -> None:
    s = shop(api.db, stock1=5, stock2=2)

    data = await api.gql(STOCKS_UPDATE, {
        "variantId": gid("ProductVariant", s.variant),
        "stocks": [{"warehouseId": gid("Warehouse", s.w1), "quantity": -1}]})

    assert refusal(data["productVariantStocksUpdate"], "productVariant") == (
        "INVALID", "stocks.0.quantity")
    assert s.world.stock(s.variant, s.w1) == (5, 0)


async def test_stocks_update_with_one_bad_row_applies_no_row(api: Api) -> None:
    s = shop(api.db, stock1=5, stock2=2)

    data = await api.gql(STOCKS_UPDATE, {
        "variantId": gid("ProductVariant", s.variant),
        "stocks": [{"warehouseId": gid("Warehouse", s.w1), "quantity": 50},
                   {"warehouseId": gid("Warehouse", s.w2), "quantity": -3}]})

    assert refusal(data["productVariantStocksUpdate"], "productVariant") == (
        "INVALID", "stocks.1.quantity")
    assert s.world.stock(s.variant, s.w1) == (5, 0)
    assert s.world.stock(s.variant, s.w2) == (2, 0)


async def test_stocks_update_of_unknown_variant_is_not_found(api: Api) -> None:
    s = shop(api.db)

    data = await api.gql(STOCKS_UPDATE, {
        "variantId": gid("ProductVariant", 999999),
        "stocks": [{"warehouseId": gid("Warehouse", s.w1), "quantity": 1}]})

    assert refusal(data["productVariantStocksUpdate"], "productVariant") == (
        "NOT_FOUND", "variantId")
    assert count(api, "stock") == 2


async def test_stocks_update_in_unknown_warehouse_is_not_found(api: Api) -> None:
    s = shop(api.db, stock1=5)

    data = await api.gql(STOCKS_UPDATE, {
        "variantId": gid("ProductVariant", s.variant),
        "stocks": [{"warehouseId": gid("Warehouse", s.w1), "quantity": 7},
                   {"warehouseId": gid("Warehouse", 999999), "quantity": 1}]})

    assert refusal(data["productVariantStocksUpdate"], "productVariant") == (
        "NOT_FOUND", "stocks.1.warehouseId")
    assert s.world.stock(s.variant, s.w1) == (5, 0)
    assert count(api, "stock") == 2


async def test_stocks_update_with_malformed_warehouse_id_is_invalid(api: Api) -> None:
    s = shop(api.db, stock1=5)

    data = await api.gql(STOCKS_UPDATE, {
        "variantId": gid("ProductVariant", s.variant),
        "stocks": [{"warehouseId": "nope", "quantity": 1}]})

    assert refusal(data["productVariantStocksUpdate"], "productVariant") == (
        "INVALID", "stocks.0.warehouseId")
    assert s.world.stock(s.variant, s.w1) == (5, 0)


async def test_quantity_available_sums_warehouses_serving_the_country(api: Api) -> None:
    s = shop(api.db, stock1=6, stock2=4)
    us_zone = s.world.zone(["US"])
    w_us = s.world.warehouse(s.seller, [us_zone])
    s.world.set_stock(s.variant, {w_us: 20})
    await api.gql(ORDER_CREATE, {"input": {
        "type": "REGULAR", "shippingCountry": "DE",
        "lines": [{"variantId": gid("ProductVariant", s.variant), "quantity": 7}]}})
    vid = gid("ProductVariant", s.variant)

    de = await api.gql(AVAILABLE, {"id": vid, "country": "DE"})
    us = await api.gql(AVAILABLE, {"id": vid, "country": "US"})
    pl = await api.gql(AVAILABLE, {"id": vid, "country": "PL"})
    everywhere = await api.gql(AVAILABLE, {"id": vid, "country": None})

    assert de["node"]["quantityAvailable"] == 3
    assert us["node"]["quantityAvailable"] == 20
    assert pl["node"]["quantityAvailable"] == 0
    assert everywhere["node"]["quantityAvailable"] == 23


async def test_quantity_available_in_a_country_counts_only_the_variants_own_sellers_warehouses(
    api: Api,
) -> None:
    s = shop(api.db, stock1=6, stock2=4)
    other_seller = s.world.seller()
    theirs = s.world.warehouse(other_seller, [s.zone])  # serves DE too
    # a stock of this variant in the other seller's warehouse: the services refuse to make
    # one, so it can only come from a direct write; orders never allocate from it
    with api.db.engine.begin() as conn:
        conn.execute(text("INSERT INTO stock (variant_id, warehouse_id, quantity, "
                          "quantity_allocated) VALUES (:v, :w, 20, 0)"),
                     {"v": s.variant, "w": theirs})
    vid = gid("ProductVariant", s.variant)

    de = await api.gql(AVAILABLE, {"id": vid, "country": "DE"})
    too_many = await api.gql(ORDER_CREATE, {"input": {
        "type": "REGULAR", "shippingCountry": "DE",
        "lines": [{"variantId": vid, "quantity": 11}]}})

    assert de["node"]["quantityAvailable"] == 10
    [error] = too_many["orderCreate"]["errors"]
    assert (error["code"], error["available"]) == ("INSUFFICIENT_STOCK", 10)


async def test_every_order_type_allocates_by_default(api: Api) -> None:
    data = await api.gql(CONFIG)

    assert sorted((a["orderType"], a["enabled"])
                  for a in data["marketplaceConfiguration"]["allocation"]) == [
        ("DRAFT", True), ("OFFER", True), ("QUOTE", True), ("REGULAR", True)]


async def test_configuration_update_keeps_the_types_not_listed(api: Api) -> None:
    await api.gql(CONFIG_UPDATE, {"input": {"allocation": [
        {"orderType": "QUOTE", "enabled": False}]}})

    data = await api.gql(CONFIG_UPDATE, {"input": {"allocation": [
        {"orderType": "DRAFT", "enabled": False}, {"orderType": "OFFER", "enabled": True}]}})

    payload = data["marketplaceConfigurationUpdate"]
    assert payload["errors"] == []
    expected = [("DRAFT", False), ("OFFER", True), ("QUOTE", False), ("REGULAR", True)]
    assert sorted((a["orderType"], a["enabled"])
                  for a in payload["marketplaceConfiguration"]["allocation"]) == expected
    queried = await api.gql(CONFIG)
    assert sorted((a["orderType"], a["enabled"])
                  for a in queried["marketplaceConfiguration"]["allocation"]) == expected


async def test_configuration_update_without_entries_changes_nothing(api: Api) -> None:
    await api.gql(CONFIG_UPDATE, {"input": {"allocation": [
        {"orderType": "REGULAR", "enabled": False}]}})

    data = await api.gql(CONFIG_UPDATE, {"input": {}})

    payload = data["marketplaceConfigurationUpdate"]
    assert payload["errors"] == []
    assert sorted((a["orderType"], a["enabled"])
                  for a in payload["marketplaceConfiguration"]["allocation"]) == [
        ("DRAFT", True), ("OFFER", True), ("QUOTE", True), ("REGULAR", False)]
