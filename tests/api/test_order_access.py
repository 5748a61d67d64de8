"""Who reads and changes which orders (API.md, "Transport"): sellers see the orders that hold
their variants, their own lines only; storefronts the orders they created; nobody can tell
an order it may not see from one that does not exist."""

from __future__ import annotations

from typing import Any

import pytest

from domain.models import Role
from tests.api.order_calls import (
    GET_ORDER,
    ORDER_CANCEL,
    ORDER_CONFIRM,
    ORDER_PAYLOAD,
    create_order,
    placed,
)
from tests.conftest import Api
from tests.factories import Shop, gid, shop

pytestmark = pytest.mark.anyio

UNKNOWN = 999_999

ORDERS = """query { orders(first: 50) { edges { node { id lines { id variant { id } } } } } }"""
ORDER_FULFILL = f"""
mutation($orderId: ID!, $lines: [OrderFulfillLineInput!]!) {{
  orderFulfill(orderId: $orderId, lines: $lines) {{
    {ORDER_PAYLOAD}
    fulfillment {{ id lines {{ orderLine {{ id }} quantity }} }}
  }}
}}"""
LINE_UPDATE = f"""mutation($id: ID!, $input: OrderLineUpdateInput!) {{
  orderLineUpdate(id: $id, input: $input) {{ {ORDER_PAYLOAD} }} }}"""
NODE = "query($id: ID!) { node(id: $id) { __typename id } }"
MOVEMENT_ORDERS = """query($variant: ID!) { stockMovements(variantId: $variant) {
  edges { node { type order { id lines { variant { id } } } } } } }"""


def order_rows(api: Api) -> list[Any]:
    return [tuple(r) for r in api.db.rows(
        "SELECT o.id, o.status, l.id, l.quantity, l.quantity_fulfilled FROM orders o "
        "LEFT JOIN order_line l ON l.order_id = o.id ORDER BY o.id, l.id")] + [
        tuple(r) for r in api.db.rows(
            "SELECT id, quantity, quantity_allocated FROM stock ORDER BY id")]


async def listed(api: Api, token: str) -> dict[str, list[str]]:
    """Order id -> the variant ids of the lines the caller sees, for every order it lists."""
    data = await api.gql(ORDERS, token=token)
    return {e["node"]["id"]: [ln["variant"]["id"] for ln in e["node"]["lines"]]
            for e in data["orders"]["edges"]}


async def fulfil(api: Api, order_id: str, line_id: str, quantity: int,
                 token: str) -> dict[str, Any]:
    data = await api.gql(ORDER_FULFILL, {"orderId": order_id, "lines": [
        {"orderLineId": line_id, "quantity": quantity}]}, token=token)
    return data["orderFulfill"]  # type: ignore[no-any-return]


async def mutate(api: Api, query: str, name: str, token: str, **variables: Any
                 ) -> dict[str, Any]:
    return (await api.gql(query, variables, token=token))[name]  # type: ignore[no-any-return]


@pytest.fixture
def two(api: Api) -> tuple[Shop, Shop]:
    return shop(api.db, stock1=10), shop(api.db, stock1=10)


# ------------------------------------------------------------------ storefronts

@pytest.mark.parametrize("order_type", ["DRAFT", "QUOTE", "OFFER"])
async def test_a_storefront_places_regular_orders_only(api: Api, order_type: str) -> None:
    s = shop(api.db, stock1=10)
    before = order_rows(api)

    payload = await create_order(api, order_type, [(s.variant, 2)],
                                 token=api.token(Role.STOREFRONT))

    assert payload["order"] is None
    assert [e["code"] for e in payload["errors"]] == ["PERMISSION_DENIED"]
    assert order_rows(api) == before


async def test_a_storefront_reads_and_cancels_the_orders_it_created(api: Api) -> None:
    s = shop(api.db, stock1=10)
    mine, other = api.token(Role.STOREFRONT), api.token(Role.STOREFRONT)
    order = await placed(api, "REGULAR", [(s.variant, 3)], token=mine)
    await placed(api, "REGULAR", [(s.variant, 1)], token=other)

    read = await api.gql(GET_ORDER, {"id": order["id"]}, token=mine)
    line = await api.gql(NODE, {"id": order["lines"][0]["id"]}, token=mine)
    mine_listed = await listed(api, mine)
    canceled = await mutate(api, ORDER_CANCEL, "orderCancel", mine, id=order["id"])

    assert read["node"] == order
    assert line["node"] == {"__typename": "OrderLine", "id": order["lines"][0]["id"]}
    assert mine_listed == {order["id"]: [gid("ProductVariant", s.variant)]}
    assert canceled["errors"] == [] and canceled["order"]["status"] == "CANCELED"
    assert s.world.stock(s.variant, s.w1) == (10, 1)  # only the other order's unit


async def test_another_storefronts_order_looks_like_no_order(api: Api) -> None:
    s = shop(api.db, stock1=10)
    owner, other = api.token(Role.STOREFRONT), api.token(Role.STOREFRONT)
    order = await placed(api, "REGULAR", [(s.variant, 3)], token=owner)
    before = order_rows(api)

    read = await api.gql(GET_ORDER, {"id": order["id"]}, token=other)
    line = await api.gql(NODE, {"id": order["lines"][0]["id"]}, token=other)
    foreign = await mutate(api, ORDER_CANCEL, "orderCancel", other, id=order["id"])
    unknown = await mutate(api, ORDER_CANCEL, "orderCancel", other,
                           id=gid("Order", UNKNOWN))

    assert read == {"node": None} and line == {"node": None}
    assert await listed(api, other) == {}
    assert foreign["errors"] == unknown["errors"]
    assert [e["code"] for e in foreign["errors"]] == ["NOT_FOUND"]
    assert order_rows(api) == before


async def test_a_storefront_neither_edits_nor_confirms_nor_fulfils(api: Api) -> None:
    s = shop(api.db, stock1=10)
    token = api.token(Role.STOREFRONT)
    order = await placed(api, "REGULAR", [(s.variant, 3)], token=token)
    before = order_rows(api)

    edited = await mutate(api, LINE_UPDATE, "orderLineUpdate", token,
                          id=order["lines"][0]["id"], input={"quantity": 1})
    confirmed = await mutate(api, ORDER_CONFIRM, "orderConfirm", token, id=order["id"])
    fulfilled = await fulfil(api, order["id"], order["lines"][0]["id"], 1, token)

    assert [[e["code"] for e in p["errors"]] for p in (edited, confirmed, fulfilled)] == [
        ["PERMISSION_DENIED"]] * 3
    assert order_rows(api) == before


# ------------------------------------------------------------------ sellers

@pytest.mark.parametrize("order_type", ["DRAFT", "QUOTE", "OFFER", "REGULAR"])
async def test_a_seller_places_every_type_of_order_from_its_own_variants(
        api: Api, two: tuple[Shop, Shop], order_type: str) -> None:
    a, _ = two
    token = api.token(Role.SELLER, a.seller)

    order = await placed(api, order_type, [(a.variant, 2)], token=token)

    assert order["type"] == order_type
    assert a.world.stock(a.variant, a.w1) == (10, 2)
    assert await listed(api, token) == {order["id"]: [gid("ProductVariant", a.variant)]}


async def test_another_sellers_variant_in_an_order_looks_unknown(
        api: Api, two: tuple[Shop, Shop]) -> None:
    a, b = two
    token = api.token(Role.SELLER, a.seller)
    before = order_rows(api)

    foreign = await create_order(api, "REGULAR", [(a.variant, 1), (b.variant, 1)], token=token)
    unknown = await create_order(api, "REGULAR", [(a.variant, 1), (UNKNOWN, 1)], token=token)

    assert foreign["order"] is None
    assert [(e["code"], e["field"], e["message"]) for e in foreign["errors"]] == [
        (e["code"], e["field"], e["message"]) for e in unknown["errors"]] == [
        ("NOT_FOUND", "lines.1.variantId", "variant not found")]
    assert order_rows(api) == before


async def test_a_seller_sees_its_own_lines_of_an_order_it_shares(
        api: Api, two: tuple[Shop, Shop]) -> None:
    a, b = two
    order = await placed(api, "REGULAR", [(a.variant, 1), (b.variant, 2)])
    a_line, b_line = (ln["id"] for ln in order["lines"])
    token_a, token_b = api.token(Role.SELLER, a.seller), api.token(Role.SELLER, b.seller)

    seen_a = await api.gql(GET_ORDER, {"id": order["id"]}, token=token_a)
    own_line = await api.gql(NODE, {"id": a_line}, token=token_a)
    their_line = await api.gql(NODE, {"id": b_line}, token=token_a)

    assert [ln["id"] for ln in seen_a["node"]["lines"]] == [a_line]
    assert own_line["node"] == {"__typename": "OrderLine", "id": a_line}
    assert their_line == {"node": None}
    assert await listed(api, token_a) == {order["id"]: [gid("ProductVariant", a.variant)]}
    assert await listed(api, token_b) == {order["id"]: [gid("ProductVariant", b.variant)]}


async def test_a_seller_fulfils_its_own_lines_of_a_shared_order(
        api: Api, two: tuple[Shop, Shop]) -> None:
    a, b = two
    order = await placed(api, "REGULAR", [(a.variant, 1), (b.variant, 2)])
    a_line, b_line = (ln["id"] for ln in order["lines"])
    token = api.token(Role.SELLER, a.seller)

    own = await fulfil(api, order["id"], a_line, 1, token)
    before = order_rows(api)
    theirs = await fulfil(api, order["id"], b_line, 1, token)
    unknown = await fulfil(api, order["id"], gid("OrderLine", UNKNOWN), 1, token)

    assert own["errors"] == []
    assert own["order"]["status"] == "PARTIALLY_FULFILLED"  # the other seller's line is open
    assert [ln["id"] for ln in own["order"]["lines"]] == [a_line]
    assert own["fulfillment"]["lines"] == [{"orderLine": {"id": a_line}, "quantity": 1}]
    assert a.world.stock(a.variant, a.w1) == (9, 0)
    assert theirs["errors"] == unknown["errors"]
    assert [(e["code"], e["field"]) for e in theirs["errors"]] == [
        ("NOT_FOUND", "lines.0.orderLineId")]
    assert order_rows(api) == before


async def test_a_shared_order_is_changed_by_neither_seller(
        api: Api, two: tuple[Shop, Shop]) -> None:
    a, b = two
    order = await placed(api, "DRAFT", [(a.variant, 1), (b.variant, 2)])
    token = api.token(Role.SELLER, a.seller)
    before = order_rows(api)

    canceled = await mutate(api, ORDER_CANCEL, "orderCancel", token, id=order["id"])
    confirmed = await mutate(api, ORDER_CONFIRM, "orderConfirm", token, id=order["id"])
    edited = await mutate(api, LINE_UPDATE, "orderLineUpdate", token,
                          id=order["lines"][0]["id"], input={"quantity": 2})

    assert [[e["code"] for e in p["errors"]] for p in (canceled, confirmed, edited)] == [
        ["PERMISSION_DENIED"]] * 3
    assert order_rows(api) == before


async def test_a_seller_edits_confirms_and_cancels_its_own_orders(
        api: Api, two: tuple[Shop, Shop]) -> None:
    a, _ = two
    token = api.token(Role.SELLER, a.seller)
    draft = await placed(api, "DRAFT", [(a.variant, 1)])  # placed by an admin
    other = await placed(api, "QUOTE", [(a.variant, 1)])

    edited = await mutate(api, LINE_UPDATE, "orderLineUpdate", token,
                          id=draft["lines"][0]["id"], input={"quantity": 3})
    confirmed = await mutate(api, ORDER_CONFIRM, "orderConfirm", token, id=draft["id"])
    canceled = await mutate(api, ORDER_CANCEL, "orderCancel", token, id=other["id"])

    assert [p["errors"] for p in (edited, confirmed, canceled)] == [[], [], []]
    assert confirmed["order"]["status"] == "UNFULFILLED"
    assert canceled["order"]["status"] == "CANCELED"
    assert a.world.stock(a.variant, a.w1) == (10, 3)


async def test_another_sellers_order_looks_like_no_order(
        api: Api, two: tuple[Shop, Shop]) -> None:
    a, b = two
    order = await placed(api, "DRAFT", [(a.variant, 1)])
    token = api.token(Role.SELLER, b.seller)
    before = order_rows(api)

    calls = [
        (ORDER_CANCEL, "orderCancel", {"id": order["id"]}, {"id": gid("Order", UNKNOWN)}),
        (ORDER_CONFIRM, "orderConfirm", {"id": order["id"]}, {"id": gid("Order", UNKNOWN)}),
        (LINE_UPDATE, "orderLineUpdate",
         {"id": order["lines"][0]["id"], "input": {"quantity": 2}},
         {"id": gid("OrderLine", UNKNOWN), "input": {"quantity": 2}}),
    ]
    for query, name, foreign, unknown in calls:
        seen = await mutate(api, query, name, token, **foreign)
        missing = await mutate(api, query, name, token, **unknown)
        assert seen["errors"] == missing["errors"], name
        assert [e["code"] for e in seen["errors"]] == ["NOT_FOUND"], name
    assert await api.gql(GET_ORDER, {"id": order["id"]}, token=token) == {"node": None}
    assert await listed(api, token) == {}
    assert order_rows(api) == before


async def test_a_sellers_movements_show_their_order(api: Api, two: tuple[Shop, Shop]) -> None:
    a, b = two
    order = await placed(api, "REGULAR", [(a.variant, 1), (b.variant, 2)])

    data = await api.gql(MOVEMENT_ORDERS, {"variant": gid("ProductVariant", a.variant)},
                         token=api.token(Role.SELLER, a.seller))

    allocation = [e["node"] for e in data["stockMovements"]["edges"]
                  if e["node"]["type"] == "ALLOCATION"]
    assert allocation == [{"type": "ALLOCATION", "order": {
        "id": order["id"], "lines": [{"variant": {"id": gid("ProductVariant", a.variant)}}]}}]


# ------------------------------------------------------------------ anonymous callers

@pytest.mark.parametrize("query", [
    "{ sellers { edges { node { id } } } }",
    "{ warehouses { edges { node { id } } } }",
    "{ products { edges { node { id } } } }",
    "{ productVariants(skus: [\"X\"]) { edges { node { sku } } } }",
    "{ orders { edges { node { id } } } }",
    "{ marketplaceConfiguration { allocation { orderType } } }",
    "{ node(id: \"U2VsbGVyOjE=\") { id } }",
    "{ nodes(ids: [\"U2VsbGVyOjE=\"]) { id } }",
])
async def test_without_a_token_nothing_is_readable(api: Api, query: str) -> None:
    shop(api.db)

    response = await api.post(query, token=None)

    assert response.status_code == 200
    body = response.json()
    assert [e["extensions"]["code"] for e in body["errors"]] == ["PERMISSION_DENIED"]
    assert body["data"] is None or not any(body["data"].values())


async def test_without_a_token_the_schema_and_typename_answer(api: Api) -> None:
    response = await api.post("{ __typename __schema { queryType { name } } }", token=None)

    assert response.json() == {"data": {"__typename": "Query",
                                        "__schema": {"queryType": {"name": "Query"}}}}


# ------------------------------------------------------------------ denied fields

VARIANT_PAGE = """query($id: ID!) { node(id: $id) { ... on ProductVariant {
  sku quantityAvailable(country: "DE") stocks { quantity }
  stockTotals { quantity } } } }"""


async def test_a_denied_field_leaves_the_rest_of_the_answer(api: Api) -> None:
    s = shop(api.db, stock1=7)

    response = await api.post(VARIANT_PAGE, {"id": gid("ProductVariant", s.variant)},
                              token=api.token(Role.STOREFRONT))

    body = response.json()
    assert body["data"] == {"node": {"sku": body["data"]["node"]["sku"],
                                     "quantityAvailable": 7, "stocks": [],
                                     "stockTotals": None}}
    assert [(e["path"], e["extensions"]["code"]) for e in body["errors"]] == [
        (["node", "stockTotals"], "PERMISSION_DENIED")]


async def test_the_owner_reads_the_gated_fields(api: Api) -> None:
    s = shop(api.db, stock1=7)

    data = await api.gql(VARIANT_PAGE, {"id": gid("ProductVariant", s.variant)},
                         token=api.token(Role.SELLER, s.seller))

    assert data["node"]["stockTotals"] == {"quantity": 7}
    assert sorted(st["quantity"] for st in data["node"]["stocks"]) == [0, 7]

