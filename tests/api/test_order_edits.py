"""Line edits of DRAFT/QUOTE/OFFER orders re-allocate the difference; other orders refuse."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.order_calls import ORDER_PAYLOAD, cancel, confirm, placed, reread, set_allocation
from tests.conftest import Api
from tests.factories import Shop, allocations, gid, id_mutation, shop, split, stocks

pytestmark = pytest.mark.anyio

LINES_CREATE = f"""
mutation($orderId: ID!, $lines: [OrderLineInput!]!) {{
  orderLinesCreate(orderId: $orderId, lines: $lines) {{ {ORDER_PAYLOAD} }}
}}"""
LINE_UPDATE = f"""
mutation($id: ID!, $input: OrderLineUpdateInput!) {{
  orderLineUpdate(id: $id, input: $input) {{ {ORDER_PAYLOAD} }}
}}"""
LINE_DELETE = id_mutation("orderLineDelete", ORDER_PAYLOAD)
EDITABLE = ["DRAFT", "QUOTE", "OFFER"]


def new_lines(lines: list[tuple[int, int]]) -> list[dict[str, Any]]:
    return [{"variantId": gid("ProductVariant", v), "quantity": q} for v, q in lines]


def failure(payload: dict[str, Any]) -> dict[str, Any]:
    assert payload["order"] is None
    [error] = payload["errors"]
    return error  # type: ignore[no-any-return]


@pytest.mark.parametrize("order_type", EDITABLE)
async def test_added_line_allocates_its_quantity(api: Api, order_type: str) -> None:
    s = shop(api.db, stock1=10, stock2=0)
    other = s.world.variant(s.product, stocks={s.w1: 1, s.w2: 6})
    order = await placed(api, order_type, [(s.variant, 2)])

    data = await api.gql(LINES_CREATE, {"orderId": order["id"],
                                        "lines": new_lines([(other, 4)])})

    payload = data["orderLinesCreate"]
    assert payload["errors"] == []
    assert payload["order"]["status"] == order_type
    assert allocations(payload["order"]) == [
        [(gid("Warehouse", s.w1), 2)],
        split(s, 1, 3)]
    assert stocks(s) == ((10, 2), (0, 0))
    assert stocks(s, other) == ((1, 1), (6, 3))


async def test_added_line_of_variant_already_ordered_allocates_only_the_addition(
        api: Api) -> None:
    s = shop(api.db, stock1=10, stock2=0)
    order = await placed(api, "DRAFT", [(s.variant, 3)])

    data = await api.gql(LINES_CREATE, {"orderId": order["id"],
                                        "lines": new_lines([(s.variant, 4)])})

    payload = data["orderLinesCreate"]
    assert payload["errors"] == []
    assert sum(line["quantity"] for line in payload["order"]["lines"]) == 7
    assert stocks(s) == ((10, 7), (0, 0))


async def test_added_line_short_of_stock_changes_nothing(api: Api) -> None:
    s = shop(api.db, stock1=5, stock2=1)
    order = await placed(api, "QUOTE", [(s.variant, 3)])

    data = await api.gql(LINES_CREATE, {"orderId": order["id"],
                                        "lines": new_lines([(s.variant, 4)])})

    error = failure(data["orderLinesCreate"])
    assert error["code"] == "INSUFFICIENT_STOCK"
    assert error["variantId"] == gid("ProductVariant", s.variant)
    assert stocks(s) == ((5, 3), (1, 0))
    after = await reread(api, order["id"])
    assert [line["quantity"] for line in after["lines"]] == [3]
    assert allocations(after) == [[(gid("Warehouse", s.w1), 3)]]


async def test_added_line_for_country_without_stock_record_is_not_available(
        api: Api) -> None:
    s = shop(api.db, stock1=5, stock2=0)
    elsewhere = s.world.variant(s.product, stocks={
        s.world.warehouse(s.seller, [s.world.zone(["US"])]): 9})
    order = await placed(api, "OFFER", [(s.variant, 1)])

    data = await api.gql(LINES_CREATE, {"orderId": order["id"],
                                        "lines": new_lines([(elsewhere, 1)])})

    error = failure(data["orderLinesCreate"])
    assert error["code"] == "NOT_AVAILABLE_IN_COUNTRY"
    assert len((await reread(api, order["id"]))["lines"]) == 1


@pytest.mark.parametrize("quantity", [0, -2, 1_000_001])
async def test_added_line_with_quantity_out_of_bounds_is_invalid(
        api: Api, quantity: int) -> None:
    s = shop(api.db, stock1=5, stock2=0)
    order = await placed(api, "DRAFT", [(s.variant, 1)])

    data = await api.gql(LINES_CREATE, {"orderId": order["id"],
                                        "lines": new_lines([(s.variant, 1),
                                                            (s.variant, quantity)])})

    error = failure(data["orderLinesCreate"])
    assert error["code"] == "INVALID"
    assert error["field"] == "lines.1.quantity"
    assert stocks(s) == ((5, 1), (0, 0))
    assert len((await reread(api, order["id"]))["lines"]) == 1


async def test_adding_lines_to_unknown_order_is_not_found(api: Api) -> None:
    s = shop(api.db, stock1=5, stock2=0)

    data = await api.gql(LINES_CREATE, {"orderId": gid("Order", 999999),
                                        "lines": new_lines([(s.variant, 1)])})

    assert failure(data["orderLinesCreate"])["code"] == "NOT_FOUND"
    assert stocks(s) == ((5, 0), (0, 0))


async def test_raising_a_line_allocates_only_the_difference(api: Api) -> None:
    s = shop(api.db, stock1=0, stock2=10)
    order = await placed(api, "DRAFT", [(s.variant, 3)])
    s.world.set_stock(s.variant, {s.w1: 10})

    data = await api.gql(LINE_UPDATE, {"id": order["lines"][0]["id"],
                                       "input": {"quantity": 5}})

    payload = data["orderLineUpdate"]
    assert payload["errors"] == []
    assert payload["order"]["lines"][0]["quantity"] == 5
    assert allocations(payload["order"]) == [split(s, 2, 3)]
    assert stocks(s) == ((10, 2), (10, 3))


async def test_lowering_a_line_releases_the_difference(api: Api) -> None:
    s = shop(api.db, stock1=4, stock2=4)
    order = await placed(api, "QUOTE", [(s.variant, 6)])

    data = await api.gql(LINE_UPDATE, {"id": order["lines"][0]["id"],
                                       "input": {"quantity": 2}})

    payload = data["orderLineUpdate"]
    assert payload["errors"] == []
    assert payload["order"]["lines"][0]["quantity"] == 2
    assert sum(q for _, q in allocations(payload["order"])[0]) == 2
    (q1, a1), (q2, a2) = stocks(s)
    assert (q1, q2, a1 + a2) == (4, 4, 2)


async def test_lowering_a_line_keeps_its_other_allocations(api: Api) -> None:
    s = shop(api.db, stock1=10, stock2=0)
    other = s.world.variant(s.product, stocks={s.w1: 10})
    order = await placed(api, "OFFER", [(s.variant, 5), (other, 4)])

    await api.gql(LINE_UPDATE, {"id": order["lines"][0]["id"], "input": {"quantity": 1}})

    assert stocks(s) == ((10, 1), (0, 0))
    assert s.world.stock(other, s.w1) == (10, 4)


async def test_raising_a_line_beyond_stock_changes_nothing(api: Api) -> None:
    s = shop(api.db, stock1=4, stock2=1)
    order = await placed(api, "DRAFT", [(s.variant, 3)])

    data = await api.gql(LINE_UPDATE, {"id": order["lines"][0]["id"],
                                       "input": {"quantity": 6}})

    error = failure(data["orderLineUpdate"])
    assert error["code"] == "INSUFFICIENT_STOCK"
    assert error["variantId"] == gid("ProductVariant", s.variant)
    assert stocks(s) == ((4, 3), (1, 0))
    after = await reread(api, order["id"])
    assert after["lines"][0]["quantity"] == 3
    assert allocations(after) == [[(gid("Warehouse", s.w1), 3)]]


async def test_raising_a_line_up_to_the_last_unit_succeeds(api: Api) -> None:
    s = shop(api.db, stock1=4, stock2=1)
    order = await placed(api, "DRAFT", [(s.variant, 3)])

    data = await api.gql(LINE_UPDATE, {"id": order["lines"][0]["id"],
                                       "input": {"quantity": 5}})

    assert data["orderLineUpdate"]["errors"] == []
    assert stocks(s) == ((4, 4), (1, 1))


@pytest.mark.parametrize("quantity", [0, -1, 1_000_001])
async def test_line_update_with_quantity_out_of_bounds_is_invalid(
        api: Api, quantity: int) -> None:
    s = shop(api.db, stock1=5, stock2=0)
    order = await placed(api, "DRAFT", [(s.variant, 2)])

    data = await api.gql(LINE_UPDATE, {"id": order["lines"][0]["id"],
                                       "input": {"quantity": quantity}})

    assert failure(data["orderLineUpdate"])["code"] == "INVALID"
    assert stocks(s) == ((5, 2), (0, 0))
    assert (await reread(api, order["id"]))["lines"][0]["quantity"] == 2


async def test_updating_an_unknown_line_is_not_found(api: Api) -> None:
    data = await api.gql(LINE_UPDATE, {"id": gid("OrderLine", 999999),
                                       "input": {"quantity": 1}})

    assert failure(data["orderLineUpdate"])["code"] == "NOT_FOUND"


async def test_deleting_a_line_releases_its_allocations(api: Api) -> None:
    s = shop(api.db, stock1=3, stock2=3)
    other = s.world.variant(s.product, stocks={s.w1: 10})
    order = await placed(api, "QUOTE", [(s.variant, 5), (other, 2)])

    data = await api.gql(LINE_DELETE, {"id": order["lines"][0]["id"]})

    payload = data["orderLineDelete"]
    assert payload["errors"] == []
    assert [line["variant"]["id"] for line in payload["order"]["lines"]] == [
        gid("ProductVariant", other)]
    assert stocks(s) == ((3, 0), (3, 0))
    assert s.world.stock(other, s.w1) == (10, 2)


async def test_deleting_an_unknown_line_is_not_found(api: Api) -> None:
    data = await api.gql(LINE_DELETE, {"id": gid("OrderLine", 999999)})

    assert failure(data["orderLineDelete"])["code"] == "NOT_FOUND"


async def test_edits_of_an_order_of_disabled_type_allocate_nothing(api: Api) -> None:
    s = shop(api.db, stock1=2, stock2=0)
    await set_allocation(api, "DRAFT", False)
    order = await placed(api, "DRAFT", [(s.variant, 1)])

    added = await api.gql(LINES_CREATE, {"orderId": order["id"],
                                         "lines": new_lines([(s.variant, 30)])})
    updated = await api.gql(LINE_UPDATE, {"id": order["lines"][0]["id"],
                                          "input": {"quantity": 40}})

    assert added["orderLinesCreate"]["errors"] == []
    assert updated["orderLineUpdate"]["errors"] == []
    assert allocations(updated["orderLineUpdate"]["order"]) == [[], []]
    assert stocks(s) == ((2, 0), (0, 0))


async def regular_order(api: Api, s: Shop, how: str) -> dict[str, Any]:
    """An UNFULFILLED REGULAR order of 3 units: placed directly or confirmed from a draft."""
    if how == "placed":
        return await placed(api, "REGULAR", [(s.variant, 3)])
    draft = await placed(api, "DRAFT", [(s.variant, 3)])
    confirmed = await confirm(api, draft["id"])
    assert confirmed["errors"] == []
    return confirmed["order"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("how", ["placed", "confirmed"])
async def test_adding_lines_to_a_regular_order_is_invalid_state(api: Api, how: str) -> None:
    s = shop(api.db, stock1=10, stock2=0)
    order = await regular_order(api, s, how)

    data = await api.gql(LINES_CREATE, {"orderId": order["id"],
                                        "lines": new_lines([(s.variant, 1)])})

    assert failure(data["orderLinesCreate"])["code"] == "INVALID_STATE"
    assert stocks(s) == ((10, 3), (0, 0))
    assert len((await reread(api, order["id"]))["lines"]) == 1


@pytest.mark.parametrize("how", ["placed", "confirmed"])
async def test_updating_a_line_of_a_regular_order_is_invalid_state(
        api: Api, how: str) -> None:
    s = shop(api.db, stock1=10, stock2=0)
    order = await regular_order(api, s, how)

    data = await api.gql(LINE_UPDATE, {"id": order["lines"][0]["id"],
                                       "input": {"quantity": 1}})

    assert failure(data["orderLineUpdate"])["code"] == "INVALID_STATE"
    assert stocks(s) == ((10, 3), (0, 0))
    assert (await reread(api, order["id"]))["lines"][0]["quantity"] == 3


@pytest.mark.parametrize("how", ["placed", "confirmed"])
async def test_deleting_a_line_of_a_regular_order_is_invalid_state(
        api: Api, how: str) -> None:
    s = shop(api.db, stock1=10, stock2=0)
    order = await regular_order(api, s, how)

    data = await api.gql(LINE_DELETE, {"id": order["lines"][0]["id"]})

    assert failure(data["orderLineDelete"])["code"] == "INVALID_STATE"
    assert stocks(s) == ((10, 3), (0, 0))
    assert len((await reread(api, order["id"]))["lines"]) == 1


async def test_editing_a_canceled_draft_is_invalid_state(api: Api) -> None:
    s = shop(api.db, stock1=10, stock2=0)
    draft = await placed(api, "DRAFT", [(s.variant, 3)])
    await cancel(api, draft)
    line_id = draft["lines"][0]["id"]

    added = await api.gql(LINES_CREATE, {"orderId": draft["id"],
                                         "lines": new_lines([(s.variant, 1)])})
    updated = await api.gql(LINE_UPDATE, {"id": line_id, "input": {"quantity": 5}})
    deleted = await api.gql(LINE_DELETE, {"id": line_id})

    assert failure(added["orderLinesCreate"])["code"] == "INVALID_STATE"
    assert failure(updated["orderLineUpdate"])["code"] == "INVALID_STATE"
    assert failure(deleted["orderLineDelete"])["code"] == "INVALID_STATE"
    assert stocks(s) == ((10, 0), (0, 0))
    after = await reread(api, draft["id"])
    assert [line["quantity"] for line in after["lines"]] == [3]
    assert allocations(after) == [[]]
