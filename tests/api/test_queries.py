"""Core queries: node/nodes and the Relay connections (paging, order, filters)."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from domain.models import Role
from tests.conftest import Api
from tests.factories import World, gid, shop

pytestmark = pytest.mark.anyio

NODE = """
query($id: ID!) {
  node(id: $id) {
    __typename id
    ... on Seller { name }
    ... on ShippingZone { countries }
    ... on Warehouse { seller { id } shippingZones { id } }
    ... on Product { seller { id } variants { id } }
    ... on ProductVariant { sku product { id } }
    ... on Order { status lines { id } }
    ... on OrderLine { quantity variant { id } }
    ... on Fulfillment { lines { quantity } }
  }
}"""
NODES = "query($ids: [ID!]!) { nodes(ids: $ids) { __typename id } }"
SELLERS = """
query($first: Int, $after: String) {
  sellers(first: $first, after: $after) {
    edges { cursor node { id name } } pageInfo { hasNextPage endCursor }
  }
}"""
WAREHOUSES = """
query($sellerId: ID, $first: Int, $after: String) {
  warehouses(sellerId: $sellerId, first: $first, after: $after) {
    edges { node { id seller { id } } } pageInfo { hasNextPage endCursor }
  }
}"""
PRODUCTS = """
query($sellerId: ID, $first: Int, $after: String) {
  products(sellerId: $sellerId, first: $first, after: $after) {
    edges { node { id seller { id } } } pageInfo { hasNextPage endCursor }
  }
}"""
VARIANTS = """
query($skus: [String!], $first: Int, $after: String) {
  productVariants(skus: $skus, first: $first, after: $after) {
    edges { node { id sku } } pageInfo { hasNextPage endCursor }
  }
}"""
ORDERS = """
query($statuses: [OrderStatus!], $types: [OrderType!], $first: Int, $after: String) {
  orders(statuses: $statuses, types: $types, first: $first, after: $after) {
    edges { node { id type status } } pageInfo { hasNextPage endCursor }
  }
}"""
ORDER_CREATE = """
mutation($input: OrderCreateInput!) {
  orderCreate(input: $input) { order { id lines { id } } errors { code } }
}"""
ORDER_FULFILL = """
mutation($orderId: ID!, $lines: [OrderFulfillLineInput!]!) {
  orderFulfill(orderId: $orderId, lines: $lines) { fulfillment { id } errors { code } }
}"""
ORDER_CANCEL = "mutation($id: ID!) { orderCancel(id: $id) { errors { code } } }"

MALFORMED = ["not-an-id", "", "!!!", base64.b64encode(b"Seller:abc").decode(),
             base64.b64encode(b"Seller:-3").decode(), base64.b64encode(b"Seller").decode(),
             base64.b64encode(b"\xff\xfe:1").decode(), "A" * 5000]


def ids_of(connection: dict[str, Any]) -> list[str]:
    return [edge["node"]["id"] for edge in connection["edges"]]


async def place(api: Api, variant: int, order_type: str = "REGULAR") -> dict[str, Any]:
    data = await api.gql(ORDER_CREATE, {"input": {
        "type": order_type, "shippingCountry": "DE",
        "lines": [{"variantId": gid("ProductVariant", variant), "quantity": 1}]}})
    assert data["orderCreate"]["errors"] == []
    return data["orderCreate"]["order"]  # type: ignore[no-any-return]


async def top_level_errors(api: Api, query: str, variables: dict[str, Any]) -> list[Any]:
    response = await api.post(query, variables)
    assert response.status_code in (200, 400), response.text
    body = response.json()
    assert body.get("data") is None or all(v is None for v in body["data"].values())
    assert body["errors"]
    return body["errors"]  # type: ignore[no-any-return]


async def test_node_answers_every_type_by_its_global_id(api: Api) -> None:
    s = shop(api.db, stock1=5, stock2=0)
    order = await place(api, s.variant)
    fulfilment = (await api.gql(ORDER_FULFILL, {"orderId": order["id"], "lines": [
        {"orderLineId": order["lines"][0]["id"], "quantity": 1}]}))["orderFulfill"]
    expected = {
        "Seller": gid("Seller", s.seller), "ShippingZone": gid("ShippingZone", s.zone),
        "Warehouse": gid("Warehouse", s.w1), "Product": gid("Product", s.product),
        "ProductVariant": gid("ProductVariant", s.variant), "Order": order["id"],
        "OrderLine": order["lines"][0]["id"], "Fulfillment": fulfilment["fulfillment"]["id"]}

    answers = {name: (await api.gql(NODE, {"id": node_id}))["node"]
               for name, node_id in expected.items()}

    for name, node_id in expected.items():
        assert (answers[name]["__typename"], answers[name]["id"]) == (name, node_id)
    assert sorted(answers["ShippingZone"]["countries"]) == ["DE", "FR"]
    assert answers["Warehouse"]["seller"] == {"id": gid("Seller", s.seller)}
    assert answers["Product"]["variants"] == [{"id": gid("ProductVariant", s.variant)}]
    assert answers["ProductVariant"]["product"] == {"id": gid("Product", s.product)}
    assert answers["Order"]["status"] == "FULFILLED"
    assert answers["OrderLine"]["variant"] == {"id": gid("ProductVariant", s.variant)}
    assert answers["Fulfillment"]["lines"] == [{"quantity": 1}]


@pytest.mark.parametrize("type_name", ["Seller", "Warehouse", "Product", "ProductVariant",
                                       "Order", "OrderLine", "Fulfillment", "ShippingZone",
                                       "NoSuchType"])
async def test_node_of_unknown_id_is_null(api: Api, type_name: str) -> None:
    shop(api.db)

    data = await api.gql(NODE, {"id": gid(type_name, 999999)})

    assert data["node"] is None


@pytest.mark.parametrize("node_id", MALFORMED)
async def test_node_of_malformed_id_is_null(api: Api, node_id: str) -> None:
    data = await api.gql(NODE, {"id": node_id})

    assert data["node"] is None


async def test_node_of_id_with_wrong_type_is_null(api: Api) -> None:
    s = shop(api.db)

    data = await api.gql(NODE, {"id": gid("Product", s.seller + 1000)})

    assert data["node"] is None


async def test_nodes_answers_null_for_each_unknown_or_malformed_id(api: Api) -> None:
    s = shop(api.db)

    data = await api.gql(NODES, {"ids": [gid("Seller", s.seller), "garbage",
                                         gid("Warehouse", 999999), gid("Product", s.product)]})

    assert data["nodes"] == [{"__typename": "Seller", "id": gid("Seller", s.seller)}, None,
                             None, {"__typename": "Product", "id": gid("Product", s.product)}]


@pytest.mark.parametrize("type_name", ["Product", "Warehouse"])
async def test_seller_token_reads_its_own_objects_but_not_foreign_ones(
        api: Api, type_name: str) -> None:
    mine = shop(api.db)
    theirs = shop(api.db)
    token = api.token(Role.SELLER, mine.seller)
    pk = {"Product": lambda s: s.product, "Warehouse": lambda s: s.w1}[type_name]

    own = await api.gql(NODE, {"id": gid(type_name, pk(mine))}, token=token)
    foreign = await api.gql(NODE, {"id": gid(type_name, pk(theirs))}, token=token)
    both = await api.gql(NODES, {"ids": [gid(type_name, pk(mine)), gid(type_name, pk(theirs))]},
                         token=token)

    assert own["node"]["id"] == gid(type_name, pk(mine))
    assert foreign["node"] is None
    assert both["nodes"] == [{"__typename": type_name, "id": gid(type_name, pk(mine))}, None]


async def test_connection_returns_twenty_by_default_newest_first(api: Api) -> None:
    world = World(api.db)
    sellers = [world.seller(f"seller-{i:02d}") for i in range(25)]

    data = await api.gql(SELLERS, {})

    connection = data["sellers"]
    assert ids_of(connection) == [gid("Seller", pk) for pk in reversed(sellers)][:20]
    assert connection["pageInfo"]["hasNextPage"] is True
    assert connection["pageInfo"]["endCursor"] == connection["edges"][-1]["cursor"]


async def test_connection_pages_with_after_cursor_until_the_end(api: Api) -> None:
    world = World(api.db)
    sellers = [world.seller() for _ in range(5)]

    page1 = (await api.gql(SELLERS, {"first": 2}))["sellers"]
    page2 = (await api.gql(SELLERS, {"first": 2,
                                     "after": page1["pageInfo"]["endCursor"]}))["sellers"]
    page3 = (await api.gql(SELLERS, {"first": 2,
                                     "after": page2["pageInfo"]["endCursor"]}))["sellers"]

    newest_first = [gid("Seller", pk) for pk in reversed(sellers)]
    assert ids_of(page1) == newest_first[0:2]
    assert ids_of(page2) == newest_first[2:4]
    assert ids_of(page3) == newest_first[4:5]
    assert [p["pageInfo"]["hasNextPage"] for p in (page1, page2, page3)] == [True, True, False]


@pytest.mark.parametrize(("sellers", "first", "more"), [
    pytest.param(101, 100, True, id="at most one hundred"),
    pytest.param(3, 3, False, id="exactly first items have no next page"),
])
async def test_connection_gives_first_items_and_says_whether_more_follow(
        api: Api, sellers: int, first: int, more: bool) -> None:
    world = World(api.db)
    for _ in range(sellers):
        world.seller()

    data = await api.gql(SELLERS, {"first": first})

    assert len(data["sellers"]["edges"]) == first
    assert data["sellers"]["pageInfo"]["hasNextPage"] is more


@pytest.mark.parametrize("first", [101, -1, 1000])
@pytest.mark.parametrize("query", [SELLERS, WAREHOUSES, PRODUCTS, VARIANTS, ORDERS])
async def test_first_above_one_hundred_or_negative_is_a_graphql_error(
        api: Api, query: str, first: int) -> None:
    World(api.db).seller()

    errors = await top_level_errors(api, query, {"first": first})

    message = errors[0]["message"]
    assert "first" in message.lower()
    assert "Traceback" not in message


@pytest.mark.parametrize("after", ["garbage", "", "Y3Vyc29yOmFiYw=="])
async def test_malformed_after_cursor_is_a_graphql_error(api: Api, after: str) -> None:
    World(api.db).seller()

    errors = await top_level_errors(api, SELLERS, {"after": after})

    assert "after" in errors[0]["message"].lower()


async def test_empty_connection_has_no_next_page(api: Api) -> None:
    data = await api.gql(SELLERS, {})

    assert data["sellers"] == {"edges": [], "pageInfo": {"hasNextPage": False,
                                                         "endCursor": None}}


async def test_warehouses_filter_by_seller(api: Api) -> None:
    a = shop(api.db)
    b = shop(api.db)

    only_a = await api.gql(WAREHOUSES, {"sellerId": gid("Seller", a.seller)})
    every = await api.gql(WAREHOUSES, {})

    assert ids_of(only_a["warehouses"]) == [gid("Warehouse", a.w2), gid("Warehouse", a.w1)]
    assert ids_of(every["warehouses"]) == [gid("Warehouse", w)
                                           for w in (b.w2, b.w1, a.w2, a.w1)]


async def test_products_filter_by_seller(api: Api) -> None:
    a = shop(api.db)
    b = shop(api.db)
    extra = a.world.product(a.seller)

    only_a = await api.gql(PRODUCTS, {"sellerId": gid("Seller", a.seller)})
    only_b = await api.gql(PRODUCTS, {"sellerId": gid("Seller", b.seller)})
    every = await api.gql(PRODUCTS, {})

    assert ids_of(only_a["products"]) == [gid("Product", extra), gid("Product", a.product)]
    assert ids_of(only_b["products"]) == [gid("Product", b.product)]
    assert ids_of(every["products"]) == [gid("Product", p)
                                         for p in (extra, b.product, a.product)]


async def test_product_variants_filter_by_skus(api: Api) -> None:
    s = shop(api.db)
    red = s.world.variant(s.product, sku="MUG-RED")
    s.world.variant(s.product, sku="MUG-BLUE")
    green = s.world.variant(s.product, sku="MUG-GREEN")

    chosen = await api.gql(VARIANTS, {"skus": ["MUG-GREEN", "MUG-RED", "NO-SUCH-SKU"]})
    none = await api.gql(VARIANTS, {"skus": []})
    every = await api.gql(VARIANTS, {})

    assert ids_of(chosen["productVariants"]) == [gid("ProductVariant", green),
                                                 gid("ProductVariant", red)]
    assert none["productVariants"]["edges"] == []
    assert len(every["productVariants"]["edges"]) == 4


async def test_orders_filter_by_status_and_type_newest_first(api: Api) -> None:
    s = shop(api.db, stock1=100, stock2=0)
    regular = await place(api, s.variant)
    draft = await place(api, s.variant, "DRAFT")
    canceled = await place(api, s.variant)
    await api.gql(ORDER_CANCEL, {"id": canceled["id"]})
    quote = await place(api, s.variant, "QUOTE")

    every = await api.gql(ORDERS, {})
    unfulfilled = await api.gql(ORDERS, {"statuses": ["UNFULFILLED"]})
    open_or_draft = await api.gql(ORDERS, {"statuses": ["UNFULFILLED", "DRAFT"]})
    regular_type = await api.gql(ORDERS, {"types": ["REGULAR"]})
    both = await api.gql(ORDERS, {"types": ["REGULAR"], "statuses": ["CANCELED"]})
    quotes = await api.gql(ORDERS, {"types": ["QUOTE", "OFFER"]})

    assert ids_of(every["orders"]) == [quote["id"], canceled["id"], draft["id"], regular["id"]]
    assert ids_of(unfulfilled["orders"]) == [regular["id"]]
    assert ids_of(open_or_draft["orders"]) == [draft["id"], regular["id"]]
    assert ids_of(regular_type["orders"]) == [canceled["id"], regular["id"]]
    assert ids_of(both["orders"]) == [canceled["id"]]
    assert ids_of(quotes["orders"]) == [quote["id"]]


async def test_filtered_orders_page_with_after_cursor(api: Api) -> None:
    s = shop(api.db, stock1=100, stock2=0)
    regulars = [await place(api, s.variant) for _ in range(3)]
    await place(api, s.variant, "DRAFT")

    page1 = (await api.gql(ORDERS, {"types": ["REGULAR"], "first": 2}))["orders"]
    page2 = (await api.gql(ORDERS, {"types": ["REGULAR"], "first": 2,
                                    "after": page1["pageInfo"]["endCursor"]}))["orders"]

    newest_first = [o["id"] for o in reversed(regulars)]
    assert ids_of(page1) + ids_of(page2) == newest_first
    assert (page1["pageInfo"]["hasNextPage"], page2["pageInfo"]["hasNextPage"]) == (True,
                                                                                    False)
