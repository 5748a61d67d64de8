"""orderFulfill ships units of REGULAR orders; orderCancel releases what an order holds."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from domain.models import Role
from tests.api.order_calls import (
    ORDER_PAYLOAD,
    VARIANT_STOCKS,
    cancel,
    confirm,
    placed,
    reread,
    set_allocation,
)
from tests.conftest import Api
from tests.factories import Shop, allocations, gid, shop, split, stocks

pytestmark = pytest.mark.anyio

ORDER_FULFILL = f"""
mutation($orderId: ID!, $lines: [OrderFulfillLineInput!]!) {{
  orderFulfill(orderId: $orderId, lines: $lines) {{
    {ORDER_PAYLOAD}
    fulfillment {{ id lines {{ orderLine {{ id }} warehouse {{ id }} quantity }} }}
  }}
}}"""


async def fulfil(api: Api, order: dict[str, Any], lines: list[tuple[int, int, int | None]]
                 ) -> dict[str, Any]:
    """orderFulfill with (line index, quantity, warehouse pk or None) triples."""
    data = await api.gql(ORDER_FULFILL, {"orderId": order["id"], "lines": [
        {"orderLineId": order["lines"][i]["id"], "quantity": q,
         "warehouseId": gid("Warehouse", w) if w is not None else None}
        for i, q, w in lines]})
    return data["orderFulfill"]  # type: ignore[no-any-return]


async def placed_unallocated(api: Api, s: Shop, quantity: int) -> dict[str, Any]:
    """A REGULAR order of the shop's variant, placed while REGULAR orders allocate nothing."""
    await set_allocation(api, "REGULAR", False)
    return await placed(api, "REGULAR", [(s.variant, quantity)])


def status_of(payload: dict[str, Any]) -> str:
    """The status of the order in a payload that carries no errors."""
    assert payload["errors"] == []
    return payload["order"]["status"]  # type: ignore[no-any-return]


def failure(payload: dict[str, Any]) -> dict[str, Any]:
    assert payload["order"] is None
    assert payload.get("fulfillment") is None
    [error] = payload["errors"]
    return error  # type: ignore[no-any-return]


def fulfilled(api: Api) -> int:
    return int(api.db.scalar("SELECT count(*) FROM fulfillment"))


async def test_storefront_order_fulfilled_then_another_canceled_through_graphql(
        api: Api) -> None:
    s = shop(api.db, stock1=6, stock2=0)
    storefront = api.token(Role.STOREFRONT)
    shipped = await placed(api, "REGULAR", [(s.variant, 4)], token=storefront)
    dropped = await placed(api, "REGULAR", [(s.variant, 2)], token=storefront)

    fulfilment = await fulfil(api, shipped, [(0, 4, None)])
    canceled = await cancel(api, dropped)

    assert fulfilment["errors"] == [] and canceled["errors"] == []
    assert fulfilment["order"]["status"] == "FULFILLED"
    assert canceled["order"]["status"] == "CANCELED"
    assert allocations(canceled["order"]) == [[]]
    figures = await api.gql(VARIANT_STOCKS, {"id": gid("ProductVariant", s.variant)})
    assert sorted((x["warehouse"]["id"], x["quantity"], x["quantityAllocated"],
                   x["quantityAvailable"]) for x in figures["node"]["stocks"]) == sorted([
        (gid("Warehouse", s.w1), 2, 0, 2), (gid("Warehouse", s.w2), 0, 0, 0)])


async def test_partial_fulfilment_then_the_rest_completes_the_order(api: Api) -> None:
    s = shop(api.db, stock1=10, stock2=0)
    order = await placed(api, "REGULAR", [(s.variant, 5)])

    first = await fulfil(api, order, [(0, 2, None)])

    assert status_of(first) == "PARTIALLY_FULFILLED"
    assert first["order"]["lines"][0]["quantityFulfilled"] == 2
    assert allocations(first["order"]) == [[(gid("Warehouse", s.w1), 3)]]
    assert first["fulfillment"]["lines"] == [{
        "orderLine": {"id": order["lines"][0]["id"]}, "warehouse": {"id": gid("Warehouse", s.w1)},
        "quantity": 2}]
    assert stocks(s) == ((8, 3), (0, 0))

    second = await fulfil(api, order, [(0, 3, None)])

    assert status_of(second) == "FULFILLED"
    assert second["order"]["lines"][0]["quantityFulfilled"] == 5
    assert allocations(second["order"]) == [[]]
    assert second["fulfillment"]["id"] != first["fulfillment"]["id"]
    assert stocks(s) == ((5, 0), (0, 0))


async def test_fulfilling_one_of_two_lines_is_partial(api: Api) -> None:
    s = shop(api.db, stock1=10, stock2=0)
    other = s.world.variant(s.product, stocks={s.w1: 4})
    order = await placed(api, "REGULAR", [(s.variant, 2), (other, 3)])

    payload = await fulfil(api, order, [(1, 3, None)])

    assert status_of(payload) == "PARTIALLY_FULFILLED"
    assert [line["quantityFulfilled"] for line in payload["order"]["lines"]] == [0, 3]
    assert stocks(s) == ((10, 2), (0, 0))
    assert s.world.stock(other, s.w1) == (1, 0)


async def test_fulfilment_from_an_explicit_warehouse_takes_its_allocation(api: Api) -> None:
    s = shop(api.db, stock1=3, stock2=5)
    order = await placed(api, "REGULAR", [(s.variant, 6)])

    payload = await fulfil(api, order, [(0, 2, s.w2)])

    assert payload["errors"] == []
    assert payload["fulfillment"]["lines"][0]["warehouse"] == {"id": gid("Warehouse", s.w2)}
    assert allocations(payload["order"]) == [split(s, 3, 1)]
    assert stocks(s) == ((3, 3), (3, 1))


async def test_fulfilment_of_a_split_line_empties_every_allocation(api: Api) -> None:
    s = shop(api.db, stock1=3, stock2=5)
    order = await placed(api, "REGULAR", [(s.variant, 6)])

    payload = await fulfil(api, order, [(0, 6, None)])

    assert status_of(payload) == "FULFILLED"
    assert sum(line["quantity"] for line in payload["fulfillment"]["lines"]) == 6
    assert stocks(s) == ((0, 0), (2, 0))


async def test_fulfilling_more_than_remains_is_invalid_and_changes_nothing(api: Api) -> None:
    s = shop(api.db, stock1=10, stock2=0)
    order = await placed(api, "REGULAR", [(s.variant, 5)])
    await fulfil(api, order, [(0, 3, None)])

    payload = await fulfil(api, order, [(0, 3, None)])

    error = failure(payload)
    assert error["code"] == "INVALID"
    assert error["field"] == "lines.0.quantity"
    assert stocks(s) == ((7, 2), (0, 0))
    after = await reread(api, order["id"])
    assert (after["status"], after["lines"][0]["quantityFulfilled"]) == (
        "PARTIALLY_FULFILLED", 3)
    assert fulfilled(api) == 1


async def test_two_fulfil_lines_of_one_order_line_count_together(api: Api) -> None:
    s = shop(api.db, stock1=10, stock2=0)
    order = await placed(api, "REGULAR", [(s.variant, 5)])

    payload = await fulfil(api, order, [(0, 3, None), (0, 3, None)])

    assert failure(payload)["code"] == "INVALID"
    assert stocks(s) == ((10, 5), (0, 0))
    assert fulfilled(api) == 0


@pytest.mark.parametrize("quantity", [0, -1])
async def test_fulfilling_a_non_positive_quantity_is_invalid(api: Api, quantity: int) -> None:
    s = shop(api.db, stock1=10, stock2=0)
    order = await placed(api, "REGULAR", [(s.variant, 5)])

    payload = await fulfil(api, order, [(0, quantity, None)])

    error = failure(payload)
    assert error["code"] == "INVALID"
    assert error["field"] == "lines.0.quantity"
    assert stocks(s) == ((10, 5), (0, 0))
    assert fulfilled(api) == 0


@pytest.mark.parametrize(("named", "quantity"), [
    pytest.param(True, 3, id="from-the-named-warehouse"),
    pytest.param(False, 2, id="without-warehouse-from-one-with-available-stock"),
])
async def test_unallocated_units_lower_quantity_only(
        api: Api, named: bool, quantity: int) -> None:
    s = shop(api.db, stock1=5, stock2=0)
    order = await placed_unallocated(api, s, quantity)

    payload = await fulfil(api, order, [(0, quantity, s.w1 if named else None)])

    assert status_of(payload) == "FULFILLED"
    assert payload["fulfillment"]["lines"][0]["warehouse"] == {"id": gid("Warehouse", s.w1)}
    assert stocks(s) == ((5 - quantity, 0), (0, 0))


async def test_unallocated_units_never_eat_other_orders_allocations(api: Api) -> None:
    s = shop(api.db, stock1=5, stock2=0)
    await placed(api, "REGULAR", [(s.variant, 4)])
    unallocated = await placed_unallocated(api, s, 3)

    short = await fulfil(api, unallocated, [(0, 3, s.w1)])

    error = failure(short)
    assert error["code"] == "INSUFFICIENT_STOCK"
    assert error["variantId"] == gid("ProductVariant", s.variant)
    assert (error["requested"], error["available"]) == (3, 1)
    assert stocks(s) == ((5, 4), (0, 0))
    assert (await reread(api, unallocated["id"]))["status"] == "UNFULFILLED"

    enough = await fulfil(api, unallocated, [(0, 1, s.w1)])

    assert status_of(enough) == "PARTIALLY_FULFILLED"
    assert stocks(s) == ((4, 4), (0, 0))


async def test_unallocated_units_need_available_stock_in_the_named_warehouse(
        api: Api) -> None:
    s = shop(api.db, stock1=0, stock2=9)
    order = await placed_unallocated(api, s, 2)

    payload = await fulfil(api, order, [(0, 2, s.w1)])

    error = failure(payload)
    assert error["code"] == "INSUFFICIENT_STOCK"
    assert stocks(s) == ((0, 0), (9, 0))


async def test_untracked_variant_keeps_its_figures_when_fulfilled(api: Api) -> None:
    s = shop(api.db, stock1=7, stock2=0, track=False)
    order = await placed(api, "REGULAR", [(s.variant, 30)])

    payload = await fulfil(api, order, [(0, 30, None)])

    assert status_of(payload) == "FULFILLED"
    assert payload["order"]["lines"][0]["quantityFulfilled"] == 30
    assert stocks(s) == ((7, 0), (0, 0))


async def test_confirmed_draft_can_be_fulfilled(api: Api) -> None:
    s = shop(api.db, stock1=4, stock2=0)
    draft = await placed(api, "DRAFT", [(s.variant, 4)])
    confirmed = (await confirm(api, draft["id"]))["order"]

    payload = await fulfil(api, confirmed, [(0, 4, None)])

    assert status_of(payload) == "FULFILLED"
    assert stocks(s) == ((0, 0), (0, 0))


@pytest.mark.parametrize("order_type", ["DRAFT", "QUOTE", "OFFER"])
async def test_fulfilling_an_order_that_is_not_regular_is_invalid_state(
        api: Api, order_type: str) -> None:
    s = shop(api.db, stock1=10, stock2=0)
    order = await placed(api, order_type, [(s.variant, 3)])

    payload = await fulfil(api, order, [(0, 3, None)])

    assert failure(payload)["code"] == "INVALID_STATE"
    assert stocks(s) == ((10, 3), (0, 0))
    assert (await reread(api, order["id"]))["status"] == order_type
    assert fulfilled(api) == 0


async def test_fulfilling_a_canceled_order_is_invalid_state(api: Api) -> None:
    s = shop(api.db, stock1=10, stock2=0)
    order = await placed(api, "REGULAR", [(s.variant, 3)])
    await cancel(api, order)

    payload = await fulfil(api, order, [(0, 3, None)])

    assert failure(payload)["code"] == "INVALID_STATE"
    assert stocks(s) == ((10, 0), (0, 0))
    assert fulfilled(api) == 0


async def test_fulfilling_an_unknown_order_is_not_found(api: Api) -> None:
    s = shop(api.db, stock1=10, stock2=0)
    order = await placed(api, "REGULAR", [(s.variant, 3)])

    payload = await fulfil(api, {"id": gid("Order", 999999), "lines": order["lines"]},
                           [(0, 1, None)])

    assert failure(payload)["code"] == "NOT_FOUND"
    assert stocks(s) == ((10, 3), (0, 0))


async def test_fulfilling_an_unknown_line_is_not_found(api: Api) -> None:
    s = shop(api.db, stock1=10, stock2=0)
    order = await placed(api, "REGULAR", [(s.variant, 3)])

    payload = await fulfil(api, {"id": order["id"], "lines": [{"id": gid("OrderLine", 999999)}]},
                           [(0, 1, None)])

    assert failure(payload)["code"] == "NOT_FOUND"
    assert stocks(s) == ((10, 3), (0, 0))


@pytest.mark.parametrize("order_type", ["DRAFT", "QUOTE", "OFFER", "REGULAR"])
async def test_cancel_releases_every_allocation_of_the_order(api: Api, order_type: str) -> None:
    s = shop(api.db, stock1=3, stock2=5)
    other = s.world.variant(s.product, stocks={s.w1: 2})
    keep = await placed(api, "REGULAR", [(other, 1)])
    order = await placed(api, order_type, [(s.variant, 6), (other, 1)])

    payload = await cancel(api, order)

    assert status_of(payload) == "CANCELED"
    assert allocations(payload["order"]) == [[], []]
    assert stocks(s) == ((3, 0), (5, 0))
    assert s.world.stock(other, s.w1) == (2, 1)
    assert allocations(await reread(api, keep["id"])) == [[(gid("Warehouse", s.w1), 1)]]


async def test_canceled_units_can_be_ordered_again(api: Api) -> None:
    s = shop(api.db, stock1=3, stock2=0)
    order = await placed(api, "REGULAR", [(s.variant, 3)])
    await cancel(api, order)

    again = await placed(api, "REGULAR", [(s.variant, 3)])

    assert allocations(again) == [[(gid("Warehouse", s.w1), 3)]]
    assert stocks(s) == ((3, 3), (0, 0))


async def test_cancel_of_partially_fulfilled_order_releases_the_rest(api: Api) -> None:
    s = shop(api.db, stock1=10, stock2=0)
    order = await placed(api, "REGULAR", [(s.variant, 5)])
    await fulfil(api, order, [(0, 2, None)])

    payload = await cancel(api, order)

    assert status_of(payload) == "CANCELED"
    assert payload["order"]["lines"][0]["quantityFulfilled"] == 2
    assert stocks(s) == ((8, 0), (0, 0))


async def test_cancel_of_an_unallocated_order_changes_no_stock(api: Api) -> None:
    s = shop(api.db, stock1=10, stock2=0)
    await set_allocation(api, "OFFER", False)
    order = await placed(api, "OFFER", [(s.variant, 5)])

    payload = await cancel(api, order)

    assert status_of(payload) == "CANCELED"
    assert stocks(s) == ((10, 0), (0, 0))


async def ship_all(api: Api, s: Shop, order: dict[str, Any]) -> None:
    """Fulfil the order's 4 units."""
    await fulfil(api, order, [(0, 4, None)])


async def cancel_then_sell_again(api: Api, s: Shop, order: dict[str, Any]) -> None:
    """Cancel the order, then sell 7 units to another."""
    await cancel(api, order)
    await placed(api, "REGULAR", [(s.variant, 7)])


@pytest.mark.parametrize(("finish", "status", "after"), [
    pytest.param(ship_all, "FULFILLED", ((6, 0), (0, 0)), id="fulfilled"),
    pytest.param(cancel_then_sell_again, "CANCELED", ((10, 7), (0, 0)), id="canceled-again"),
])
async def test_an_order_in_a_final_status_cannot_be_canceled(
        api: Api, finish: Callable[[Api, Shop, dict[str, Any]], Awaitable[None]], status: str,
        after: tuple[tuple[int, int], tuple[int, int]]) -> None:
    s = shop(api.db, stock1=10, stock2=0)
    order = await placed(api, "REGULAR", [(s.variant, 4)])
    await finish(api, s, order)

    payload = await cancel(api, order)

    assert failure(payload)["code"] == "INVALID_STATE"
    assert stocks(s) == after
    assert (await reread(api, order["id"]))["status"] == status


async def test_canceling_an_unknown_order_is_not_found(api: Api) -> None:
    payload = await cancel(api, {"id": gid("Order", 999999)})

    assert failure(payload)["code"] == "NOT_FOUND"
