"""Transport, tokens and roles, and bad input that must never become a 500 or a traceback."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from domain.models import Role
from tests.conftest import Api
from tests.factories import Shop, gid, input_mutation, shop

UNKNOWN = 999_999

pytestmark = pytest.mark.anyio

ERRORS = "errors { code field message }"
ORDER_CREATE = input_mutation("orderCreate", f"order {{ id lines {{ id }} }} {ERRORS}")
SELLER_CREATE = input_mutation("sellerCreate", f"seller {{ id }} {ERRORS}")
PRODUCT_CREATE = input_mutation("productCreate", f"product {{ id }} {ERRORS}")
VARIANT_CREATE = input_mutation("productVariantCreate", f"productVariant {{ id }} {ERRORS}")
STOCKS_UPDATE = f"""
mutation($variantId: ID!, $stocks: [StockInput!]!) {{
  productVariantStocksUpdate(variantId: $variantId, stocks: $stocks) {{
    productVariant {{ id }} {ERRORS}
  }}
}}"""
CONFIG_UPDATE = input_mutation(
    "marketplaceConfigurationUpdate",
    f"marketplaceConfiguration {{ allocation {{ orderType enabled }} }} {ERRORS}")
VARIANT_FIGURES = """
query($id: ID!) {
  node(id: $id) { ... on ProductVariant { quantityAvailable(country: "DE") } }
}"""
VARIANT_STOCKS = """
query($id: ID!) {
  node(id: $id) { ... on ProductVariant { stocks { quantity quantityAllocated } } }
}"""

# every core mutation, with the name of its result field(s)
MUTATIONS: dict[str, tuple[str, list[str]]] = {
    "sellerCreate": ("""mutation($input: SellerCreateInput!) {
        sellerCreate(input: $input) { seller { id } errors { code } } }""", ["seller"]),
    "shippingZoneCreate": ("""mutation($input: ShippingZoneCreateInput!) {
        shippingZoneCreate(input: $input) { shippingZone { id } errors { code } } }""",
                           ["shippingZone"]),
    "warehouseCreate": ("""mutation($input: WarehouseCreateInput!) {
        warehouseCreate(input: $input) { warehouse { id } errors { code } } }""", ["warehouse"]),
    "productCreate": ("""mutation($input: ProductCreateInput!) {
        productCreate(input: $input) { product { id } errors { code } } }""", ["product"]),
    "productVariantCreate": ("""mutation($input: ProductVariantCreateInput!) {
        productVariantCreate(input: $input) { productVariant { id } errors { code } } }""",
                             ["productVariant"]),
    "productVariantUpdate": ("""mutation($id: ID!, $input: ProductVariantUpdateInput!) {
        productVariantUpdate(id: $id, input: $input) { productVariant { id } errors { code } } }""",
                             ["productVariant"]),
    "productVariantStocksUpdate": ("""mutation($variantId: ID!, $stocks: [StockInput!]!) {
        productVariantStocksUpdate(variantId: $variantId, stocks: $stocks) {
          productVariant { id } errors { code } } }""", ["productVariant"]),
    "marketplaceConfigurationUpdate": ("""mutation($input: MarketplaceConfigurationUpdateInput!) {
        marketplaceConfigurationUpdate(input: $input) {
          marketplaceConfiguration { allocation { enabled } } errors { code } } }""",
                                       ["marketplaceConfiguration"]),
    "orderCreate": ("""mutation($input: OrderCreateInput!) {
        orderCreate(input: $input) { order { id } errors { code } } }""", ["order"]),
    "orderLinesCreate": ("""mutation($orderId: ID!, $lines: [OrderLineInput!]!) {
        orderLinesCreate(orderId: $orderId, lines: $lines) { order { id } errors { code } } }""",
                         ["order"]),
    "orderLineUpdate": ("""mutation($id: ID!, $input: OrderLineUpdateInput!) {
        orderLineUpdate(id: $id, input: $input) { order { id } errors { code } } }""", ["order"]),
    "orderLineDelete": ("""mutation($id: ID!) {
        orderLineDelete(id: $id) { order { id } errors { code } } }""", ["order"]),
    "orderConfirm": ("""mutation($id: ID!) {
        orderConfirm(id: $id) { order { id } errors { code } } }""", ["order"]),
    "orderCancel": ("""mutation($id: ID!) {
        orderCancel(id: $id) { order { id } errors { code } } }""", ["order"]),
    "orderFulfill": ("""mutation($orderId: ID!, $lines: [OrderFulfillLineInput!]!) {
        orderFulfill(orderId: $orderId, lines: $lines) {
          order { id } fulfillment { id } errors { code } } }""", ["order", "fulfillment"]),
}

LEAKS = ("Traceback", "File \"", "sqlalchemy", "psycopg", "sqlite3", "SELECT ", "INSERT ",
         "UPDATE ", "IntegrityError", "DataError")


async def shop_with_orders(api: Api) -> tuple[Shop, dict[str, Any], dict[str, Any]]:
    """A shop, an allocated DRAFT of 2 and an allocated REGULAR order of 3."""
    s = shop(api.db, stock1=10, stock2=0)
    orders = []
    for order_type, quantity in (("DRAFT", 2), ("REGULAR", 3)):
        data = await api.gql(ORDER_CREATE, {"input": {
            "type": order_type, "shippingCountry": "DE",
            "lines": [{"variantId": gid("ProductVariant", s.variant), "quantity": quantity}]}})
        assert data["orderCreate"]["errors"] == []
        orders.append(data["orderCreate"]["order"])
    return s, orders[0], orders[1]


def variables_for(name: str, s: Shop, draft: dict[str, Any],
                  regular: dict[str, Any]) -> dict[str, Any]:
    """Input every mutation would accept from an admin."""
    variant = gid("ProductVariant", s.variant)
    return {
        "sellerCreate": {"input": {"name": "Sneaky"}},
        "shippingZoneCreate": {"input": {"name": "Z", "countries": ["PL"]}},
        "warehouseCreate": {"input": {"sellerId": gid("Seller", s.seller), "name": "W",
                                      "shippingZoneIds": [gid("ShippingZone", s.zone)]}},
        "productCreate": {"input": {"sellerId": gid("Seller", s.seller), "name": "P"}},
        "productVariantCreate": {"input": {"productId": gid("Product", s.product),
                                           "sku": "SNEAKY-1"}},
        "productVariantUpdate": {"id": variant, "input": {"trackInventory": False}},
        "productVariantStocksUpdate": {"variantId": variant, "stocks": [
            {"warehouseId": gid("Warehouse", s.w1), "quantity": 99}]},
        "marketplaceConfigurationUpdate": {"input": {"allocation": [
            {"orderType": "REGULAR", "enabled": False}]}},
        "orderCreate": {"input": {"type": "REGULAR", "shippingCountry": "DE",
                                  "lines": [{"variantId": variant, "quantity": 1}]}},
        "orderLinesCreate": {"orderId": draft["id"],
                             "lines": [{"variantId": variant, "quantity": 1}]},
        "orderLineUpdate": {"id": draft["lines"][0]["id"], "input": {"quantity": 5}},
        "orderLineDelete": {"id": draft["lines"][0]["id"]},
        "orderConfirm": {"id": draft["id"]},
        "orderCancel": {"id": regular["id"]},
        "orderFulfill": {"orderId": regular["id"], "lines": [
            {"orderLineId": regular["lines"][0]["id"], "quantity": 1}]},
    }[name]


def snapshot(api: Api) -> list[Any]:
    """Everything a mutation could change."""
    tables = ["seller", "shipping_zone", "warehouse", "product", "product_variant", "orders",
              "order_line", "allocation", "fulfillment"]
    return ([api.db.scalar(f"SELECT count(*) FROM {t}") for t in tables]
            + [tuple(r) for r in api.db.rows(
                "SELECT variant_id, warehouse_id, quantity, quantity_allocated FROM stock "
                "ORDER BY id")]
            + [tuple(r) for r in api.db.rows("SELECT id, status, type FROM orders ORDER BY id")]
            + [tuple(r) for r in api.db.rows("SELECT id, quantity FROM order_line ORDER BY id")]
            + [tuple(r) for r in api.db.rows(
                "SELECT order_type, enabled FROM order_type_allocation ORDER BY order_type")]
            + [tuple(r) for r in api.db.rows(
                "SELECT id, track_inventory FROM product_variant ORDER BY id")])


def denied(payload: dict[str, Any], results: list[str]) -> None:
    for result in results:
        assert payload[result] is None
    assert [e["code"] for e in payload["errors"]] == ["PERMISSION_DENIED"]


def assert_no_leak(text: str) -> None:
    for leak in LEAKS:
        assert leak not in text, text[:2000]


def payload_without_leak(response: httpx.Response, name: str) -> dict[str, Any]:
    """The `name` payload of a 200 answer with no top-level errors and nothing internal."""
    assert response.status_code == 200, response.text
    assert_no_leak(response.text)
    body = response.json()
    assert "errors" not in body, body
    return body["data"][name]  # type: ignore[no-any-return]


@pytest.mark.parametrize("name", list(MUTATIONS))
async def test_mutation_without_token_is_permission_denied_and_changes_nothing(
        api: Api, name: str) -> None:
    s, draft, regular = await shop_with_orders(api)
    query, results = MUTATIONS[name]
    before = snapshot(api)

    data = await api.gql(query, variables_for(name, s, draft, regular), token=None)

    denied(data[name], results)
    assert snapshot(api) == before


@pytest.mark.parametrize("name", ["sellerCreate", "orderCreate", "orderCancel"])
async def test_mutation_with_unknown_token_is_unauthenticated(api: Api, name: str) -> None:
    s, draft, regular = await shop_with_orders(api)
    query, _ = MUTATIONS[name]
    before = snapshot(api)

    response = await api.post(query, variables_for(name, s, draft, regular),
                              token="not-a-real-token")

    assert response.status_code == 401
    assert response.json() == {"errors": [{"message": "The token is unknown or has been "
                                                      "revoked.",
                                           "extensions": {"code": "UNAUTHENTICATED"}}]}
    assert snapshot(api) == before


@pytest.mark.parametrize("name", ["sellerCreate", "shippingZoneCreate", "warehouseCreate",
                                  "productCreate", "productVariantStocksUpdate",
                                  "marketplaceConfigurationUpdate"])
async def test_storefront_token_cannot_manage_the_catalog(api: Api, name: str) -> None:
    s, draft, regular = await shop_with_orders(api)
    query, results = MUTATIONS[name]
    before = snapshot(api)

    data = await api.gql(query, variables_for(name, s, draft, regular),
                         token=api.token(Role.STOREFRONT))

    denied(data[name], results)
    assert snapshot(api) == before


async def test_storefront_token_places_orders(api: Api) -> None:
    s = shop(api.db, stock1=10, stock2=0)

    data = await api.gql(ORDER_CREATE, {"input": {
        "type": "REGULAR", "shippingCountry": "DE",
        "lines": [{"variantId": gid("ProductVariant", s.variant), "quantity": 2}]}},
        token=api.token(Role.STOREFRONT))

    assert data["orderCreate"]["errors"] == []
    assert s.world.stock(s.variant, s.w1) == (10, 2)


async def test_storefront_reads_availability_but_not_raw_stock(api: Api) -> None:
    s = shop(api.db, stock1=10, stock2=3)
    token = api.token(Role.STOREFRONT)
    variant = gid("ProductVariant", s.variant)

    available = await api.gql(VARIANT_FIGURES, {"id": variant}, token=token)
    raw = await api.post(VARIANT_STOCKS, {"id": variant}, token=token)

    assert available["node"]["quantityAvailable"] == 13
    assert raw.status_code in (200, 400, 403)
    body = raw.json()
    node = (body.get("data") or {}).get("node")
    assert "errors" in body or node is None or node["stocks"] == []
    for error in body.get("errors", []):
        # a refusal is expected, not an unexpected failure hidden behind a masked message
        assert error["message"] != "Unexpected error."
        assert_no_leak(error["message"])


async def test_seller_token_manages_its_own_catalog(api: Api) -> None:
    s = shop(api.db, stock1=1, stock2=0)
    token = api.token(Role.SELLER, s.seller)

    product = await api.gql(PRODUCT_CREATE, {"input": {
        "sellerId": gid("Seller", s.seller), "name": "Own"}}, token=token)
    stocked = await api.gql(STOCKS_UPDATE, {
        "variantId": gid("ProductVariant", s.variant),
        "stocks": [{"warehouseId": gid("Warehouse", s.w1), "quantity": 8}]}, token=token)

    assert product["productCreate"]["errors"] == []
    assert stocked["productVariantStocksUpdate"]["errors"] == []
    assert s.world.stock(s.variant, s.w1) == (8, 0)


async def test_seller_token_cannot_tell_another_sellers_catalog_from_nothing(
        api: Api) -> None:
    mine = shop(api.db, stock1=1, stock2=0)
    theirs = shop(api.db, stock1=5, stock2=0)
    token = api.token(Role.SELLER, mine.seller)
    before = snapshot(api)

    async def attempts(seller: int, product: int, variant: int) -> list[Any]:
        created = await api.gql(PRODUCT_CREATE, {"input": {
            "sellerId": gid("Seller", seller), "name": "Theirs"}}, token=token)
        added = await api.gql(VARIANT_CREATE, {"input": {
            "productId": gid("Product", product), "sku": "THEIRS-2"}}, token=token)
        stocked = await api.gql(STOCKS_UPDATE, {
            "variantId": gid("ProductVariant", variant),
            "stocks": [{"warehouseId": gid("Warehouse", theirs.w1), "quantity": 0}]},
            token=token)
        return [created["productCreate"], added["productVariantCreate"],
                stocked["productVariantStocksUpdate"]]

    foreign = await attempts(theirs.seller, theirs.product, theirs.variant)
    unknown = await attempts(UNKNOWN, UNKNOWN, UNKNOWN)

    assert [p["errors"] for p in foreign] == [p["errors"] for p in unknown]
    assert [[e["code"] for e in p["errors"]] for p in foreign] == [["NOT_FOUND"]] * 3
    assert snapshot(api) == before


@pytest.mark.parametrize("name", ["sellerCreate", "marketplaceConfigurationUpdate"])
async def test_seller_token_cannot_do_marketplace_operations(api: Api, name: str) -> None:
    s, draft, regular = await shop_with_orders(api)
    query, results = MUTATIONS[name]
    before = snapshot(api)

    data = await api.gql(query, variables_for(name, s, draft, regular),
                         token=api.token(Role.SELLER, s.seller))

    denied(data[name], results)
    assert snapshot(api) == before


async def test_error_carries_a_human_readable_message(api: Api) -> None:
    data = await api.gql(SELLER_CREATE, {"input": {"name": ""}})

    [error] = data["sellerCreate"]["errors"]
    assert error["code"] == "INVALID"
    assert isinstance(error["message"], str) and error["message"].strip()
    assert_no_leak(error["message"])


async def query_rejected(api: Api, query: str, variables: dict[str, Any]) -> None:
    """The request fails GraphQL validation: 200 or 400 with top-level errors, no data."""
    response = await api.post(query, variables)

    assert response.status_code in (200, 400), response.text
    body = response.json()
    assert body["errors"], body
    assert body.get("data") is None
    for error in body["errors"]:
        assert_no_leak(str(error))


@pytest.mark.parametrize("quantity", [2**31, -(2**31) - 1, 10**20])
async def test_int_out_of_32_bit_range_in_a_variable_is_a_validation_error(
        api: Api, quantity: int) -> None:
    s = shop(api.db, stock1=10, stock2=0)

    await query_rejected(api, ORDER_CREATE, {"input": {
        "type": "REGULAR", "shippingCountry": "DE",
        "lines": [{"variantId": gid("ProductVariant", s.variant), "quantity": quantity}]}})

    assert api.db.scalar("SELECT count(*) FROM orders") == 0
    assert s.world.stock(s.variant, s.w1) == (10, 0)


async def test_int_out_of_32_bit_range_in_a_literal_is_a_validation_error(api: Api) -> None:
    s = shop(api.db, stock1=10, stock2=0)
    query = """mutation($v: ID!) { orderCreate(input: {type: REGULAR, shippingCountry: "DE",
        lines: [{variantId: $v, quantity: 2147483648}]}) { order { id } errors { code } } }"""

    await query_rejected(api, query, {"v": gid("ProductVariant", s.variant)})

    assert api.db.scalar("SELECT count(*) FROM orders") == 0


async def test_stock_quantity_out_of_32_bit_range_is_a_validation_error(api: Api) -> None:
    s = shop(api.db, stock1=10, stock2=0)

    await query_rejected(api, STOCKS_UPDATE, {
        "variantId": gid("ProductVariant", s.variant),
        "stocks": [{"warehouseId": gid("Warehouse", s.w1), "quantity": 2**31}]})

    assert s.world.stock(s.variant, s.w1) == (10, 0)


async def test_first_out_of_32_bit_range_is_a_graphql_error(api: Api) -> None:
    await query_rejected(api, "query($f: Int) { sellers(first: $f) { edges { cursor } } }",
                         {"f": 2**31})


@pytest.mark.parametrize("variables", [
    {"input": {"type": "REGULAR", "shippingCountry": "DE",
               "lines": [{"variantId": "x", "quantity": "five"}]}},
    {"input": {"type": "SUBSCRIPTION", "shippingCountry": "DE", "lines": []}},
    {"input": {"type": "REGULAR", "lines": []}},
    {"input": {"type": "REGULAR", "shippingCountry": "DE", "lines": [{"quantity": 1}]}},
    {"input": None},
    {"input": {"type": "REGULAR", "shippingCountry": 49, "lines": [],
               "unexpected": True}},
])
async def test_input_that_does_not_fit_the_schema_is_a_validation_error(
        api: Api, variables: dict[str, Any]) -> None:
    await query_rejected(api, ORDER_CREATE, variables)

    assert api.db.scalar("SELECT count(*) FROM orders") == 0


async def test_unknown_field_in_query_is_a_validation_error(api: Api) -> None:
    await query_rejected(api, "{ sellers { edges { node { id password } } } }", {})


@pytest.mark.parametrize("name", ["x" * 100_000, "nul\x00byte", "\ud7ff" * 300, "' OR 1=1 --"])
async def test_odd_names_never_fail_unexpectedly(api: Api, name: str) -> None:
    response = await api.post(SELLER_CREATE, {"input": {"name": name}})

    payload = payload_without_leak(response, "sellerCreate")
    assert payload["seller"] is not None or payload["errors"][0]["code"] == "INVALID"


@pytest.mark.parametrize("sku", ["S" * 10_000, "nul\x00sku", "sku with spaces ünïcödé"])
async def test_odd_skus_never_fail_unexpectedly(api: Api, sku: str) -> None:
    s = shop(api.db)

    response = await api.post(VARIANT_CREATE, {"input": {
        "productId": gid("Product", s.product), "sku": sku}})

    payload = payload_without_leak(response, "productVariantCreate")
    assert payload["productVariant"] is not None or payload["errors"][0]["code"] == "INVALID"


@pytest.mark.parametrize("key", ["k" * 10_000, "nul\x00key"])
async def test_odd_idempotency_keys_never_fail_unexpectedly(api: Api, key: str) -> None:
    s = shop(api.db, stock1=10, stock2=0)

    response = await api.post(ORDER_CREATE, {"input": {
        "type": "REGULAR", "shippingCountry": "DE", "idempotencyKey": key,
        "lines": [{"variantId": gid("ProductVariant", s.variant), "quantity": 1}]}})

    payload = payload_without_leak(response, "orderCreate")
    if payload["order"] is None:
        assert payload["errors"][0]["code"] == "INVALID"
        assert s.world.stock(s.variant, s.w1) == (10, 0)
    else:
        assert s.world.stock(s.variant, s.w1) == (10, 1)


@pytest.mark.parametrize("body", [b"{not json", b"[]", b'{"variables": {}}', b'{"query": 5}',
                                  b""])
async def test_malformed_request_body_is_a_client_error(api: Api, body: bytes) -> None:
    response = await api.client.post(
        "/graphql", content=body,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {api.admin}"})

    assert 400 <= response.status_code < 500, response.text
    assert_no_leak(response.text)


async def test_healthz_answers_200_when_the_database_is_reachable(api: Api) -> None:
    response = await api.client.get("/healthz")

    assert response.status_code == 200


async def test_get_graphql_serves_graphiql(api: Api) -> None:
    response = await api.client.get("/graphql", headers={"Accept": "text/html"})

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "graphiql" in response.text.lower()
