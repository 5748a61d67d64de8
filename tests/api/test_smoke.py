from __future__ import annotations

import pytest

from tests.conftest import Api
from tests.factories import gid, shop

pytestmark = pytest.mark.anyio

ORDER_CREATE = """
mutation($input: OrderCreateInput!) {
  orderCreate(input: $input) {
    order { id type status shippingCountry lines { id quantity quantityFulfilled
            variant { sku } allocations { warehouse { id } quantity } } }
    errors { code field message variantId warehouseId requested available }
  }
}"""


async def test_order_allocates_in_priority_order_then_splits(api: Api) -> None:
    s = shop(api.db, stock1=3, stock2=5)

    data = await api.gql(ORDER_CREATE, {"input": {
        "type": "REGULAR", "shippingCountry": "DE",
        "lines": [{"variantId": gid("ProductVariant", s.variant), "quantity": 4}]}})

    payload = data["orderCreate"]
    assert payload["errors"] == []
    assert payload["order"]["status"] == "UNFULFILLED"
    allocations = payload["order"]["lines"][0]["allocations"]
    assert [(a["warehouse"]["id"], a["quantity"]) for a in allocations] == [
        (gid("Warehouse", s.w1), 3), (gid("Warehouse", s.w2), 1)]
    assert s.world.stock(s.variant, s.w1) == (3, 3)
    assert s.world.stock(s.variant, s.w2) == (5, 1)


async def test_short_order_fails_whole_and_changes_nothing(api: Api) -> None:
    s = shop(api.db, stock1=2, stock2=1)
    vid = gid("ProductVariant", s.variant)

    data = await api.gql(ORDER_CREATE, {"input": {
        "type": "REGULAR", "shippingCountry": "DE",
        "lines": [{"variantId": vid, "quantity": 2}, {"variantId": vid, "quantity": 2}]}})

    payload = data["orderCreate"]
    assert payload["order"] is None
    [error] = payload["errors"]
    assert error["code"] == "INSUFFICIENT_STOCK"
    assert (error["variantId"], error["requested"], error["available"]) == (vid, 4, 3)
    assert s.world.stock(s.variant, s.w1) == (2, 0)
