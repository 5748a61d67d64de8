"""orderCreate and orderConfirm: where stock is allocated from, and when an order fails."""

from __future__ import annotations

from typing import Any

import pytest

from domain.models import Role
from tests.api.order_calls import (
    GET_ORDER,
    ORDER_CANCEL,
    ORDER_CREATE,
    VARIANT_STOCKS,
    confirm,
    create_order,
    order_input,
    placed,
    set_allocation,
)
from tests.conftest import Api
from tests.factories import allocations, gid, input_mutation, shop, split, stocks

pytestmark = pytest.mark.anyio

SELLER_CREATE = input_mutation("sellerCreate", "seller { id } errors { code }")
ZONE_CREATE = input_mutation("shippingZoneCreate", "shippingZone { id } errors { code }")
WAREHOUSE_CREATE = input_mutation("warehouseCreate", "warehouse { id } errors { code }")
PRODUCT_CREATE = input_mutation("productCreate", "product { id } errors { code }")
VARIANT_CREATE = input_mutation("productVariantCreate", "productVariant { id } errors { code }")
STOCKS_UPDATE = """
mutation($variantId: ID!, $stocks: [StockInput!]!) {
  productVariantStocksUpdate(variantId: $variantId, stocks: $stocks) { errors { code } }
}"""

STATUS_OF_TYPE = {"DRAFT": "DRAFT", "QUOTE": "QUOTE", "OFFER": "OFFER", "REGULAR": "UNFULFILLED"}


def count(api: Api, table: str) -> int:
    return int(api.db.scalar(f"SELECT count(*) FROM {table}"))


def failure(payload: dict[str, Any]) -> list[dict[str, Any]]:
    assert payload["order"] is None
    assert payload["errors"] != []
    return payload["errors"]  # type: ignore[no-any-return]


def refusal(payload: dict[str, Any]) -> tuple[str, str | None]:
    """(code, field) of the one error of a failed order."""
    [error] = failure(payload)
    return error["code"], error["field"]


def shortfall(payload: dict[str, Any], variant: int | None = None) -> tuple[int, int]:
    """(requested, available) of the one error of a failed order, INSUFFICIENT_STOCK (of
    `variant`'s units, when given)."""
    [error] = failure(payload)
    assert error["code"] == "INSUFFICIENT_STOCK"
    if variant is not None:
        assert error["variantId"] == gid("ProductVariant", variant)
    return error["requested"], error["available"]


async def test_storefront_order_on_a_catalog_built_through_graphql(api: Api) -> None:
    async def create(query: str, name: str, result: str, value: dict[str, Any]) -> str:
        payload = (await api.gql(query, {"input": value}))[name]
        assert payload["errors"] == []
        return payload[result]["id"]  # type: ignore[no-any-return]

    seller = await create(SELLER_CREATE, "sellerCreate", "seller", {"name": "Acme"})
    zone = await create(ZONE_CREATE, "shippingZoneCreate", "shippingZone",
                        {"name": "EU", "countries": ["DE", "FR"]})
    near = await create(WAREHOUSE_CREATE, "warehouseCreate", "warehouse",
                        {"sellerId": seller, "name": "Near", "shippingZoneIds": [zone],
                         "priority": 0})
    far = await create(WAREHOUSE_CREATE, "warehouseCreate", "warehouse",
                       {"sellerId": seller, "name": "Far", "shippingZoneIds": [zone],
                        "priority": 1})
    product = await create(PRODUCT_CREATE, "productCreate", "product",
                           {"sellerId": seller, "name": "Mug"})
    variant = await create(VARIANT_CREATE, "productVariantCreate", "productVariant",
                           {"productId": product, "sku": "MUG-1"})
    stocked = await api.gql(STOCKS_UPDATE, {"variantId": variant, "stocks": [
        {"warehouseId": far, "quantity": 10}, {"warehouseId": near, "quantity": 2}]})
    assert stocked["productVariantStocksUpdate"]["errors"] == []
    storefront = api.token(Role.STOREFRONT)

    data = await api.gql(ORDER_CREATE, {"input": {
        "type": "REGULAR", "shippingCountry": "FR",
        "lines": [{"variantId": variant, "quantity": 5}]}}, token=storefront)

    payload = data["orderCreate"]
    assert payload["errors"] == []
    order = payload["order"]
    assert (order["type"], order["status"], order["shippingCountry"]) == (
        "REGULAR", "UNFULFILLED", "FR")
    [line] = order["lines"]
    assert (line["variant"]["id"], line["quantity"], line["quantityFulfilled"]) == (
        variant, 5, 0)
    assert allocations(order) == [sorted([(near, 2), (far, 3)])]
    figures = await api.gql(VARIANT_STOCKS, {"id": variant})
    assert sorted((s["warehouse"]["id"], s["quantity"], s["quantityAllocated"],
                   s["quantityAvailable"]) for s in figures["node"]["stocks"]) == sorted([
        (near, 2, 2, 0), (far, 10, 3, 7)])


@pytest.mark.parametrize("order_type", ["DRAFT", "QUOTE", "OFFER", "REGULAR"])
async def test_every_order_type_starts_in_its_status_and_allocates(
        api: Api, order_type: str) -> None:
    s = shop(api.db, stock1=10, stock2=0)

    order = await placed(api, order_type, [(s.variant, 4)])

    assert order["type"] == order_type
    assert order["status"] == STATUS_OF_TYPE[order_type]
    assert order["shippingCountry"] == "DE"
    assert allocations(order) == [[(gid("Warehouse", s.w1), 4)]]
    assert stocks(s) == ((10, 4), (0, 0))


async def test_allocation_follows_warehouse_priority_not_creation_order(api: Api) -> None:
    s = shop(api.db, stock1=2, stock2=2)
    first = s.world.warehouse(s.seller, [s.zone], priority=-5)
    s.world.set_stock(s.variant, {first: 3})

    order = await placed(api, "REGULAR", [(s.variant, 6)])

    assert allocations(order) == [sorted([(gid("Warehouse", first), 3),
                                          (gid("Warehouse", s.w1), 2),
                                          (gid("Warehouse", s.w2), 1)])]
    assert s.world.stock(s.variant, first) == (3, 3)
    assert stocks(s) == ((2, 2), (2, 1))


async def test_allocation_skips_warehouses_not_serving_the_country(api: Api) -> None:
    s = shop(api.db, stock1=0, stock2=3)
    us = s.world.warehouse(s.seller, [s.world.zone(["US"])], priority=-1)
    s.world.set_stock(s.variant, {us: 50})

    order = await placed(api, "REGULAR", [(s.variant, 3)])

    assert allocations(order) == [[(gid("Warehouse", s.w2), 3)]]
    assert s.world.stock(s.variant, us) == (50, 0)
    assert stocks(s) == ((0, 0), (3, 3))


async def test_short_order_reports_available_from_serving_warehouses_only(api: Api) -> None:
    s = shop(api.db, stock1=3, stock2=2)
    us = s.world.warehouse(s.seller, [s.world.zone(["US"])])
    s.world.set_stock(s.variant, {us: 50})

    payload = await create_order(api, "REGULAR", [(s.variant, 6)])

    assert shortfall(payload, s.variant) == (6, 5)
    assert stocks(s) == ((3, 0), (2, 0))
    assert s.world.stock(s.variant, us) == (50, 0)


async def test_one_short_variant_fails_the_whole_order(api: Api) -> None:
    s = shop(api.db, stock1=10, stock2=0)
    short = s.world.variant(s.product, stocks={s.w1: 1, s.w2: 1})

    payload = await create_order(api, "REGULAR", [(s.variant, 5), (short, 3)])

    assert shortfall(payload, short) == (3, 2)
    assert stocks(s) == ((10, 0), (0, 0))
    assert stocks(s, short) == ((1, 0), (1, 0))
    assert count(api, "orders") == 0
    assert count(api, "allocation") == 0


async def test_every_short_variant_gets_its_own_error(api: Api) -> None:
    s = shop(api.db, stock1=1, stock2=0)
    other = s.world.variant(s.product, stocks={s.w1: 0, s.w2: 2})
    plenty = s.world.variant(s.product, stocks={s.w1: 100})

    payload = await create_order(api, "QUOTE", [(s.variant, 2), (plenty, 5), (other, 7)])

    errors = failure(payload)
    assert sorted((e["code"], e["variantId"], e["requested"], e["available"])
                  for e in errors) == sorted([
        ("INSUFFICIENT_STOCK", gid("ProductVariant", s.variant), 2, 1),
        ("INSUFFICIENT_STOCK", gid("ProductVariant", other), 7, 2)])
    assert s.world.stock(plenty, s.w1) == (100, 0)
    assert count(api, "orders") == 0


async def test_two_lines_of_one_variant_allocate_together(api: Api) -> None:
    s = shop(api.db, stock1=3, stock2=2)

    order = await placed(api, "REGULAR", [(s.variant, 2), (s.variant, 3)])

    assert sum(q for line in allocations(order) for _, q in line) == 5
    assert [line["quantity"] for line in order["lines"]] == [2, 3]
    assert stocks(s) == ((3, 3), (2, 2))


async def test_two_lines_of_one_variant_short_together_give_one_error(api: Api) -> None:
    s = shop(api.db, stock1=3, stock2=1)

    payload = await create_order(api, "REGULAR", [(s.variant, 3), (s.variant, 2)])

    assert shortfall(payload, s.variant) == (5, 4)
    assert stocks(s) == ((3, 0), (1, 0))


@pytest.mark.parametrize(("on_hand", "held", "order_type", "asked", "short"), [
    pytest.param((10, 2), 9, "REGULAR", 4, (4, 3), id="available-excludes-units-held"),
    pytest.param((3, 0), 3, "OFFER", 1, (1, 0), id="the-last-units-go-to-one-order-only"),
])
async def test_units_another_order_holds_are_not_available(
        api: Api, on_hand: tuple[int, int], held: int, order_type: str, asked: int,
        short: tuple[int, int]) -> None:
    s = shop(api.db, stock1=on_hand[0], stock2=on_hand[1])
    await placed(api, "REGULAR", [(s.variant, held)])

    payload = await create_order(api, order_type, [(s.variant, asked)])

    assert shortfall(payload) == short
    assert stocks(s) == ((on_hand[0], held), (on_hand[1], 0))
    assert count(api, "orders") == 1


@pytest.mark.parametrize("track", [True, False], ids=["tracked", "untracked"])
@pytest.mark.parametrize(("country", "served"), [
    pytest.param("US", False, id="no-warehouse-serves-the-country"),
    pytest.param("PL", True, id="serving-warehouse-without-stock-record"),
])
async def test_country_without_a_stock_record_serving_it_is_not_available(
        api: Api, country: str, served: bool, track: bool) -> None:
    s = shop(api.db, stock1=10, stock2=10, track=track)
    if served:
        s.world.warehouse(s.seller, [s.world.zone([country])])

    payload = await create_order(api, "REGULAR", [(s.variant, 1)], country=country)

    [error] = failure(payload)
    assert error["code"] == "NOT_AVAILABLE_IN_COUNTRY"
    assert error["variantId"] == gid("ProductVariant", s.variant)
    assert stocks(s) == ((10, 0), (10, 0))
    assert count(api, "orders") == 0


async def test_stock_record_of_zero_units_makes_the_country_available(api: Api) -> None:
    s = shop(api.db, stock1=10, stock2=0)
    pl = s.world.warehouse(s.seller, [s.world.zone(["PL"])])
    s.world.set_stock(s.variant, {pl: 0})

    payload = await create_order(api, "REGULAR", [(s.variant, 1)], country="PL")

    assert shortfall(payload) == (1, 0)
    assert s.world.stock(s.variant, pl) == (0, 0)


async def test_untracked_variant_with_zero_unit_record_can_be_sold(api: Api) -> None:
    s = shop(api.db, stock1=0, stock2=0, track=False)

    order = await placed(api, "REGULAR", [(s.variant, 25)])

    assert order["status"] == "UNFULFILLED"
    assert allocations(order) == [[]]
    assert stocks(s) == ((0, 0), (0, 0))


async def test_untracked_line_beside_tracked_line_allocates_only_the_tracked(
        api: Api) -> None:
    s = shop(api.db, stock1=4, stock2=0)
    untracked = s.world.variant(s.product, track=False, stocks={s.w1: 1})

    order = await placed(api, "REGULAR", [(s.variant, 4), (untracked, 9)])

    assert allocations(order) == [[(gid("Warehouse", s.w1), 4)], []]
    assert stocks(s) == ((4, 4), (0, 0))
    assert s.world.stock(untracked, s.w1) == (1, 0)


async def test_variant_switched_to_untracked_stops_allocating(api: Api) -> None:
    s = shop(api.db, stock1=2, stock2=0)
    await api.gql("""mutation($id: ID!) { productVariantUpdate(id: $id,
        input: {trackInventory: false}) { errors { code } } }""",
                  {"id": gid("ProductVariant", s.variant)})

    order = await placed(api, "REGULAR", [(s.variant, 5)])

    assert allocations(order) == [[]]
    assert stocks(s) == ((2, 0), (0, 0))


@pytest.mark.parametrize(("order_type", "quantity"), [("DRAFT", 50), ("REGULAR", 5)])
async def test_disabled_type_places_its_order_without_allocations_or_stock_check(
        api: Api, order_type: str, quantity: int) -> None:
    s = shop(api.db, stock1=3, stock2=0)
    await set_allocation(api, order_type, False)

    order = await placed(api, order_type, [(s.variant, quantity)])

    assert order["status"] == STATUS_OF_TYPE[order_type]  # REGULAR: UNFULFILLED
    assert allocations(order) == [[]]
    assert stocks(s) == ((3, 0), (0, 0))


async def test_disabled_type_still_checks_country_availability(api: Api) -> None:
    s = shop(api.db, stock1=3, stock2=0)
    await set_allocation(api, "QUOTE", False)

    payload = await create_order(api, "QUOTE", [(s.variant, 1)], country="US")

    [error] = failure(payload)
    assert error["code"] == "NOT_AVAILABLE_IN_COUNTRY"
    assert count(api, "orders") == 0


async def test_disabling_one_type_leaves_the_others_allocating(api: Api) -> None:
    s = shop(api.db, stock1=10, stock2=0)
    await set_allocation(api, "OFFER", False)

    offer = await placed(api, "OFFER", [(s.variant, 2)])
    quote = await placed(api, "QUOTE", [(s.variant, 3)])

    assert allocations(offer) == [[]]
    assert allocations(quote) == [[(gid("Warehouse", s.w1), 3)]]
    assert stocks(s) == ((10, 3), (0, 0))


@pytest.mark.parametrize("order_type", ["DRAFT", "QUOTE", "OFFER", "REGULAR"])
async def test_toggling_a_type_never_touches_existing_allocations(
        api: Api, order_type: str) -> None:
    s = shop(api.db, stock1=5, stock2=5)
    order = await placed(api, order_type, [(s.variant, 7)])

    await set_allocation(api, order_type, False)
    after_disable = stocks(s)
    await set_allocation(api, order_type, True)

    assert after_disable == ((5, 5), (5, 2))
    assert stocks(s) == ((5, 5), (5, 2))
    reread = await api.gql(GET_ORDER, {"id": order["id"]})
    assert allocations(reread["node"]) == allocations(order) == [split(s, 5, 2)]


async def test_order_of_disabled_type_allocates_when_confirmed(api: Api) -> None:
    s = shop(api.db, stock1=3, stock2=4)
    await set_allocation(api, "DRAFT", False)
    draft = await placed(api, "DRAFT", [(s.variant, 5)])

    payload = await confirm(api, draft["id"])

    assert payload["errors"] == []
    order = payload["order"]
    assert (order["id"], order["type"], order["status"]) == (draft["id"], "REGULAR",
                                                             "UNFULFILLED")
    assert allocations(order) == [split(s, 3, 2)]
    assert stocks(s) == ((3, 3), (4, 2))


async def test_confirming_an_unallocated_order_short_of_stock_changes_nothing(
        api: Api) -> None:
    s = shop(api.db, stock1=3, stock2=1)
    await set_allocation(api, "QUOTE", False)
    quote = await placed(api, "QUOTE", [(s.variant, 6)])

    payload = await confirm(api, quote["id"])

    assert shortfall(payload, s.variant) == (6, 4)
    assert stocks(s) == ((3, 0), (1, 0))
    reread = (await api.gql(GET_ORDER, {"id": quote["id"]}))["node"]
    assert (reread["type"], reread["status"]) == ("QUOTE", "QUOTE")
    assert allocations(reread) == [[]]


async def test_confirming_an_allocated_order_keeps_its_allocations(api: Api) -> None:
    s = shop(api.db, stock1=3, stock2=4)
    offer = await placed(api, "OFFER", [(s.variant, 5)])

    payload = await confirm(api, offer["id"])

    assert payload["errors"] == []
    assert (payload["order"]["type"], payload["order"]["status"]) == ("REGULAR", "UNFULFILLED")
    assert allocations(payload["order"]) == allocations(offer) == [split(s, 3, 2)]
    assert stocks(s) == ((3, 3), (4, 2))


async def test_confirming_allocated_order_after_type_was_disabled_keeps_allocations(
        api: Api) -> None:
    s = shop(api.db, stock1=10, stock2=0)
    draft = await placed(api, "DRAFT", [(s.variant, 4)])
    await set_allocation(api, "DRAFT", False)

    payload = await confirm(api, draft["id"])

    assert payload["errors"] == []
    assert allocations(payload["order"]) == [[(gid("Warehouse", s.w1), 4)]]
    assert stocks(s) == ((10, 4), (0, 0))


async def test_confirming_a_regular_order_is_invalid_state(api: Api) -> None:
    s = shop(api.db, stock1=10, stock2=0)
    order = await placed(api, "REGULAR", [(s.variant, 4)])

    payload = await confirm(api, order["id"])

    [error] = failure(payload)
    assert error["code"] == "INVALID_STATE"
    assert stocks(s) == ((10, 4), (0, 0))


async def test_confirming_a_canceled_draft_is_invalid_state(api: Api) -> None:
    s = shop(api.db, stock1=10, stock2=0)
    draft = await placed(api, "DRAFT", [(s.variant, 4)])
    await api.gql(ORDER_CANCEL, {"id": draft["id"]})

    payload = await confirm(api, draft["id"])

    [error] = failure(payload)
    assert error["code"] == "INVALID_STATE"
    assert stocks(s) == ((10, 0), (0, 0))
    reread = (await api.gql(GET_ORDER, {"id": draft["id"]}))["node"]
    assert reread["status"] == "CANCELED"


async def test_confirming_an_unknown_order_is_not_found(api: Api) -> None:
    payload = await confirm(api, gid("Order", 999999))

    [error] = failure(payload)
    assert error["code"] == "NOT_FOUND"


async def test_same_idempotency_key_returns_the_first_order_and_allocates_once(
        api: Api) -> None:
    s = shop(api.db, stock1=10, stock2=0)
    variables = order_input("REGULAR", [(s.variant, 3)], key="checkout-42")
    first = (await api.gql(ORDER_CREATE, variables))["orderCreate"]

    second = (await api.gql(ORDER_CREATE, variables))["orderCreate"]

    assert first["errors"] == [] and second["errors"] == []
    assert second["order"]["id"] == first["order"]["id"]
    assert allocations(second["order"]) == [[(gid("Warehouse", s.w1), 3)]]
    assert stocks(s) == ((10, 3), (0, 0))
    assert count(api, "orders") == 1


async def test_different_idempotency_keys_place_different_orders(api: Api) -> None:
    s = shop(api.db, stock1=10, stock2=0)

    first = (await api.gql(ORDER_CREATE, order_input("REGULAR", [(s.variant, 3)],
                                                      key="a")))["orderCreate"]
    second = (await api.gql(ORDER_CREATE, order_input("REGULAR", [(s.variant, 3)],
                                                       key="b")))["orderCreate"]

    assert first["order"]["id"] != second["order"]["id"]
    assert stocks(s) == ((10, 6), (0, 0))


@pytest.mark.parametrize("quantity", [0, -1, 1_000_001])
async def test_line_quantity_out_of_bounds_is_invalid_with_its_path(
        api: Api, quantity: int) -> None:
    s = shop(api.db, stock1=10, stock2=0)

    payload = await create_order(api, "REGULAR", [(s.variant, 1), (s.variant, quantity)])

    assert refusal(payload) == ("INVALID", "lines.1.quantity")
    assert stocks(s) == ((10, 0), (0, 0))
    assert count(api, "orders") == 0


async def test_line_quantity_of_one_million_is_accepted(api: Api) -> None:
    s = shop(api.db, stock1=0, stock2=0, track=False)

    order = await placed(api, "REGULAR", [(s.variant, 1_000_000)])

    assert order["lines"][0]["quantity"] == 1_000_000


async def test_order_without_lines_is_invalid(api: Api) -> None:
    payload = await create_order(api, "REGULAR", [])

    [error] = failure(payload)
    assert error["code"] == "INVALID"
    assert count(api, "orders") == 0


@pytest.mark.parametrize("country", ["XX", "DEU", "", "de1"])
async def test_unknown_shipping_country_is_invalid(api: Api, country: str) -> None:
    s = shop(api.db, stock1=10, stock2=0)

    payload = await create_order(api, "REGULAR", [(s.variant, 1)], country=country)

    assert refusal(payload) == ("INVALID", "shippingCountry")
    assert stocks(s) == ((10, 0), (0, 0))
    assert count(api, "orders") == 0


async def test_unknown_variant_is_not_found(api: Api) -> None:
    s = shop(api.db, stock1=10, stock2=0)

    payload = await create_order(api, "REGULAR", [(s.variant, 1), (999999, 1)])

    assert refusal(payload) == ("NOT_FOUND", "lines.1.variantId")
    assert stocks(s) == ((10, 0), (0, 0))
    assert count(api, "orders") == 0


@pytest.mark.parametrize("variant_id", ["not-an-id", "", "UHJvZHVjdFZhcmlhbnQ6LTE="])
async def test_malformed_variant_id_is_invalid(api: Api, variant_id: str) -> None:
    s = shop(api.db, stock1=10, stock2=0)

    data = await api.gql(ORDER_CREATE, {"input": {
        "type": "REGULAR", "shippingCountry": "DE",
        "lines": [{"variantId": variant_id, "quantity": 1}]}})

    [error] = failure(data["orderCreate"])
    assert error["code"] == "INVALID"
    assert error["field"] == "lines.0.variantId"
    assert stocks(s) == ((10, 0), (0, 0))
    assert count(api, "orders") == 0
