"""The permission matrix: every Query field, Mutation field and `node` type of the served
schema, for every caller, with the outcome the API gives (README "Security", API.md
"Transport" and "Access and operations"; the rules live in domain/permissions.py).

The tables below are the matrix. A field or Node type the schema serves without a row
fails `test_every_served_name_has_a_row`, so a new field cannot ship without a rule; a row
the schema no longer serves fails `test_every_row_is_served`. Each cell is then executed
over HTTP through the real app, with minimal valid arguments naming objects of "seller
own" (or the order "storefront own" created).

Callers:
- admin: an admin token;
- seller_own: a seller token whose seller owns the objects named;
- seller_foreign: a token of another seller (which has a shop of its own);
- storefront_own: the storefront token that created the order named (where that matters);
- storefront_foreign: another storefront token (it created an order of its own);
- anonymous: no Authorization header.

Outcomes:
- ALLOW: data, no errors (a list: every object of its kind; a mutation: it took effect);
- DENY: PERMISSION_DENIED (a query: a top-level error and no data; a mutation: the
  payload's only error, its result null, nothing changed);
- HIDDEN: exactly the answer an id naming nothing gets (`node` null; a mutation NOT_FOUND
  with the same field and message, nothing changed): the caller cannot tell the object
  from a missing one;
- SCOPED: a list of exactly the caller's own objects (for a seller, orders show its own
  lines only); narrowing it to seller own's objects answers as narrowing to an unknown id;
- AUTH: what a request without a token gets: HTTP 200 (not 401), PERMISSION_DENIED, no
  data, nothing changed; the same request with a token that is not live gets HTTP 401
  UNAUTHENTICATED.

The shared world is built once per module and backend; mutations work on objects of
their own, so the cells do not depend on their order.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from graphql import GraphQLInterfaceType, GraphQLObjectType, build_schema
from sqlalchemy import text

from api import ids
from api.schema import schema, schema_for
from domain.models import Role, WebhookEvent
from domain.services import batches, channels, feeds, webhooks
from domain.services import stock as stock_service
from domain.services import tokens as token_service
from tests.api.order_calls import placed, set_allocation
from tests.conftest import Api, Database, serve
from tests.factories import ADMIN, Shop, World, gid, id_mutation, input_mutation, shop, unique


class Outcome(enum.Enum):
    ALLOW = "data, no errors"
    DENY = "PERMISSION_DENIED"
    HIDDEN = "the answer an unknown id gets"
    SCOPED = "the caller's own objects only"
    AUTH = "no token: HTTP 200, PERMISSION_DENIED"


ALLOW, DENY, HIDDEN, SCOPED, AUTH = (Outcome.ALLOW, Outcome.DENY, Outcome.HIDDEN,
                                     Outcome.SCOPED, Outcome.AUTH)

CALLERS = ("admin", "seller_own", "seller_foreign", "storefront_own", "storefront_foreign",
           "anonymous")
OWNERS = ("seller_own", "storefront_own")  # the callers the objects named belong to
Row = tuple[Outcome, Outcome, Outcome, Outcome, Outcome, Outcome]

# ---------------------------------------------------------------------------- the matrix
# columns: admin, seller own, seller foreign, storefront own, storefront foreign, anonymous

QUERIES: dict[str, Row] = {
    "node": (ALLOW, ALLOW, HIDDEN, ALLOW, ALLOW, AUTH),  # seller own's Product; see NODES
    "nodes": (ALLOW, ALLOW, HIDDEN, ALLOW, ALLOW, AUTH),  # its Seller, Warehouse, Product...
    "marketplaceConfiguration": (ALLOW, ALLOW, ALLOW, ALLOW, ALLOW, AUTH),
    "tokens": (ALLOW, DENY, DENY, DENY, DENY, AUTH),
    "sellers": (ALLOW, SCOPED, SCOPED, ALLOW, ALLOW, AUTH),
    "warehouses": (ALLOW, SCOPED, SCOPED, ALLOW, ALLOW, AUTH),
    "products": (ALLOW, SCOPED, SCOPED, ALLOW, ALLOW, AUTH),
    "productVariants": (ALLOW, SCOPED, SCOPED, ALLOW, ALLOW, AUTH),
    "stocks": (ALLOW, SCOPED, SCOPED, DENY, DENY, AUTH),
    "stockMovements": (ALLOW, SCOPED, SCOPED, DENY, DENY, AUTH),
    "orders": (ALLOW, SCOPED, SCOPED, SCOPED, SCOPED, AUTH),
    "salesChannels": (ALLOW, SCOPED, SCOPED, DENY, DENY, AUTH),
    "pickBatches": (ALLOW, SCOPED, SCOPED, DENY, DENY, AUTH),
    "webhookSubscriptions": (ALLOW, SCOPED, SCOPED, DENY, DENY, AUTH),
}

MUTATIONS: dict[str, Row] = {
    # marketplace operations: admin only
    "sellerCreate": (ALLOW, DENY, DENY, DENY, DENY, AUTH),
    "shippingZoneCreate": (ALLOW, DENY, DENY, DENY, DENY, AUTH),
    "marketplaceConfigurationUpdate": (ALLOW, DENY, DENY, DENY, DENY, AUTH),
    "tokenCreate": (ALLOW, DENY, DENY, DENY, DENY, AUTH),
    "tokenRevoke": (ALLOW, DENY, DENY, DENY, DENY, AUTH),  # a token of seller own
    # catalog and stock: admin, and the seller for its own
    "warehouseCreate": (ALLOW, ALLOW, HIDDEN, DENY, DENY, AUTH),
    "productCreate": (ALLOW, ALLOW, HIDDEN, DENY, DENY, AUTH),
    "productVariantCreate": (ALLOW, ALLOW, HIDDEN, DENY, DENY, AUTH),
    "productVariantUpdate": (ALLOW, ALLOW, HIDDEN, DENY, DENY, AUTH),
    "productVariantStocksUpdate": (ALLOW, ALLOW, HIDDEN, DENY, DENY, AUTH),
    "stockAdjust": (ALLOW, ALLOW, HIDDEN, DENY, DENY, AUTH),
    "stockTransfer": (ALLOW, ALLOW, HIDDEN, DENY, DENY, AUTH),
    "stockUpdate": (ALLOW, ALLOW, HIDDEN, DENY, DENY, AUTH),
    "purchaseOrderCreate": (ALLOW, ALLOW, HIDDEN, DENY, DENY, AUTH),
    "purchaseOrderReceive": (ALLOW, ALLOW, HIDDEN, DENY, DENY, AUTH),
    "stockBulkUpdate": (ALLOW, ALLOW, HIDDEN, DENY, DENY, AUTH),
    # orders (a REGULAR order for the storefronts, the only type they place)
    "orderCreate": (ALLOW, ALLOW, HIDDEN, ALLOW, ALLOW, AUTH),
    "orderLinesCreate": (ALLOW, ALLOW, HIDDEN, DENY, DENY, AUTH),
    "orderLineUpdate": (ALLOW, ALLOW, HIDDEN, DENY, DENY, AUTH),
    "orderLineDelete": (ALLOW, ALLOW, HIDDEN, DENY, DENY, AUTH),
    "orderConfirm": (ALLOW, ALLOW, HIDDEN, DENY, DENY, AUTH),
    "orderCancel": (ALLOW, ALLOW, HIDDEN, ALLOW, HIDDEN, AUTH),
    "orderFulfill": (ALLOW, ALLOW, HIDDEN, DENY, DENY, AUTH),
    # sales channels: admin, and the seller for its own
    "salesChannelCreate": (ALLOW, ALLOW, HIDDEN, DENY, DENY, AUTH),
    "salesChannelUpdate": (ALLOW, ALLOW, HIDDEN, DENY, DENY, AUTH),
    "salesChannelSync": (ALLOW, ALLOW, HIDDEN, DENY, DENY, AUTH),
    "listingsUpsert": (ALLOW, ALLOW, HIDDEN, DENY, DENY, AUTH),
    "listingsDelete": (ALLOW, ALLOW, HIDDEN, DENY, DENY, AUTH),
    "productUpdate": (ALLOW, ALLOW, HIDDEN, DENY, DENY, AUTH),
    # pick batches: admin, and the seller in its own warehouses
    "pickBatchCreate": (ALLOW, ALLOW, HIDDEN, DENY, DENY, AUTH),
    "pickBatchComplete": (ALLOW, ALLOW, HIDDEN, DENY, DENY, AUTH),
    "pickBatchCancel": (ALLOW, ALLOW, HIDDEN, DENY, DENY, AUTH),
    # webhook subscriptions: admin, and the seller for its own stocks
    "webhookSubscriptionCreate": (ALLOW, ALLOW, HIDDEN, DENY, DENY, AUTH),
    "webhookSubscriptionUpdate": (ALLOW, ALLOW, HIDDEN, DENY, DENY, AUTH),
    "webhookSubscriptionDelete": (ALLOW, ALLOW, HIDDEN, DENY, DENY, AUTH),
    # supplier feeds (external, into seller own's warehouse): admin, and the seller
    "supplierFeedCreate": (ALLOW, ALLOW, HIDDEN, DENY, DENY, AUTH),
    "supplierFeedUpdate": (ALLOW, ALLOW, HIDDEN, DENY, DENY, AUTH),
    "supplierFeedItemsUpsert": (ALLOW, ALLOW, HIDDEN, DENY, DENY, AUTH),
    "supplierFeedDelete": (ALLOW, ALLOW, HIDDEN, DENY, DENY, AUTH),
}

# `node(id:)` of seller own's object of each type (Order, OrderLine, Fulfillment: an order
# storefront own created, holding seller own's variant only)
NODES: dict[str, Row] = {
    "Seller": (ALLOW, ALLOW, HIDDEN, ALLOW, ALLOW, AUTH),
    "ShippingZone": (ALLOW, ALLOW, ALLOW, ALLOW, ALLOW, AUTH),  # zones belong to nobody
    "Warehouse": (ALLOW, ALLOW, HIDDEN, ALLOW, ALLOW, AUTH),
    "Product": (ALLOW, ALLOW, HIDDEN, ALLOW, ALLOW, AUTH),
    "ProductVariant": (ALLOW, ALLOW, HIDDEN, ALLOW, ALLOW, AUTH),
    # raw stock: `node` answers a storefront null, as API.md says of an id it may not read
    "Stock": (ALLOW, ALLOW, HIDDEN, HIDDEN, HIDDEN, AUTH),
    "StockMovement": (ALLOW, ALLOW, HIDDEN, HIDDEN, HIDDEN, AUTH),
    "PurchaseOrder": (ALLOW, ALLOW, HIDDEN, HIDDEN, HIDDEN, AUTH),
    "Order": (ALLOW, ALLOW, HIDDEN, ALLOW, HIDDEN, AUTH),
    "OrderLine": (ALLOW, ALLOW, HIDDEN, ALLOW, HIDDEN, AUTH),
    "Fulfillment": (ALLOW, ALLOW, HIDDEN, ALLOW, HIDDEN, AUTH),
    # seller own's token: admins only, null for every other token (README's table has no
    # cell for it; API.md: `node` answers null for a foreign id)
    "ApiToken": (ALLOW, HIDDEN, HIDDEN, HIDDEN, HIDDEN, AUTH),
    # a channel holds its seller's endpoint: the seller's and admins' only
    "SalesChannel": (ALLOW, ALLOW, HIDDEN, HIDDEN, HIDDEN, AUTH),
    # a batch of seller own's warehouse (of an order storefront own placed)
    "PickBatch": (ALLOW, ALLOW, HIDDEN, HIDDEN, HIDDEN, AUTH),
    # a subscription holds its seller's endpoint: the seller's and admins' only
    "WebhookSubscription": (ALLOW, ALLOW, HIDDEN, HIDDEN, HIDDEN, AUTH),
    # a feed into seller own's warehouse holds its secret's use: the seller's and admins'
    "SupplierFeed": (ALLOW, ALLOW, HIDDEN, HIDDEN, HIDDEN, AUTH),
}

TABLES: dict[str, dict[str, Row]] = {"Query": QUERIES, "Mutation": MUTATIONS, "Node": NODES}

UNKNOWN = 999_999
ERRORS = "errors { code field message }"
NODE = "query($id: ID!) { node(id: $id) { __typename id } }"
NODES_QUERY = "query($ids: [ID!]!) { nodes(ids: $ids) { __typename id } }"
CONFIGURATION = "{ marketplaceConfiguration { allocation { orderType enabled } } }"
FULFILL = f"""mutation($orderId: ID!, $lines: [OrderFulfillLineInput!]!) {{
  orderFulfill(orderId: $orderId, lines: $lines) {{ order {{ id }} fulfillment {{ id }} {ERRORS} }}
}}"""


# ---------------------------------------------------------------------------- the schema

def served() -> dict[str, set[str]]:
    """Query and Mutation fields and Node types of the schema the app serves."""
    assert schema_for(fast_paths=True) is schema  # what api.app.build_app serves
    sdl = build_schema(schema.as_str())
    query, mutation, node = sdl.query_type, sdl.mutation_type, sdl.get_type("Node")
    assert isinstance(query, GraphQLObjectType) and isinstance(mutation, GraphQLObjectType)
    assert isinstance(node, GraphQLInterfaceType)
    return {"Query": set(query.fields), "Mutation": set(mutation.fields),
            "Node": {t.name for t in sdl.get_possible_types(node)}}


@pytest.mark.parametrize("kind", list(TABLES))
def test_every_served_name_has_a_row(kind: str) -> None:
    missing = served()[kind] - set(TABLES[kind])
    assert not missing, f"{kind} names without a row in the access matrix: {sorted(missing)}"


@pytest.mark.parametrize("kind", list(TABLES))
def test_every_row_is_served(kind: str) -> None:
    stale = set(TABLES[kind]) - served()[kind]
    assert not stale, f"the access matrix names {kind} names the schema lacks: {sorted(stale)}"


def test_every_row_has_a_cell_per_caller_and_a_way_to_run_it() -> None:
    for table in TABLES.values():
        for name, row in table.items():
            assert len(row) == len(CALLERS), name
            assert all(isinstance(cell, Outcome) for cell in row), name
    assert set(QUERIES) == set(QUERY_CHECKS)
    assert set(MUTATIONS) == set(BUILDERS)
    assert set(NODES) <= set(NODE_TARGETS)


# ---------------------------------------------------------------------------- the world

@dataclass
class Matrix:
    """The shared world: two shops, a token per caller, one object of each Node type that
    belongs to seller own (its orders placed by storefront own)."""

    api: Api
    own: Shop
    foreign: Shop
    tokens: dict[str, str | None]  # caller -> secret
    token_pks: dict[str, int]
    targets: dict[str, str] = field(default_factory=dict)  # Node type -> global ID

    @property
    def db(self) -> Database:
        return self.api.db

    def seller_of(self, caller: str) -> int | None:
        return {"seller_own": self.own.seller, "seller_foreign": self.foreign.seller}.get(caller)

    def variant(self, stocks: dict[int, int] | None = None) -> int:
        """A new variant of seller own (SKUs distinct per seller), stocked as given, in a
        product of its own (a product holds at most 100 variants; the cells need more)."""
        world = World(self.db)
        return world.variant(world.product(self.own.seller), sku=unique("OWN-MATRIX"),
                             stocks=stocks)

    def channel(self) -> int:
        """A new sales channel of seller own (its endpoint answers nothing)."""
        return channels.create_channel(self.db.uow(), ADMIN, seller_id=self.own.seller,
                                       data=channels.ChannelInput(
                                           name=unique("matrix channel"),
                                           endpoint_url="http://127.0.0.1:9/push"))[0].id

    def subscription(self) -> int:
        """A new webhook subscription of seller own's stocks (its url answers nothing)."""
        return webhooks.create(self.db.uow(), ADMIN, seller_id=self.own.seller,
                               data=webhooks.SubscriptionInput(
                                   url="http://127.0.0.1:9/hook",
                                   events=[WebhookEvent.OUT_OF_STOCK]))[0].id

    def feed(self) -> int:
        """A new external supplier feed into seller own's w1."""
        return feeds.create(self.db.uow(), ADMIN, warehouse_id=self.own.w1,
                            name=unique("matrix feed"))[0].id

    async def batch(self) -> int:
        """A new open pick batch of seller own's w1, of an order storefront own placed."""
        order = await placed(self.api, "REGULAR", [(self.variant({self.own.w1: 5}), 2)],
                             token=self.tokens["storefront_own"])
        return batches.create(self.db.uow(), ADMIN, warehouse_id=self.own.w1,
                              order_ids=[ids.parse(order["id"])[1]]).id


NODE_TARGETS = ("Seller", "ShippingZone", "Warehouse", "Product", "ProductVariant", "Stock",
                "StockMovement", "PurchaseOrder", "Order", "OrderLine", "Fulfillment",
                "ApiToken", "SalesChannel", "PickBatch", "WebhookSubscription",
                "SupplierFeed")


def token_pk(db: Database, secret: str) -> int:
    return int(db.scalar("SELECT id FROM api_token WHERE token_hash = :h",
                         h=token_service.hash_token(secret)))


async def build_world(api: Api) -> Matrix:
    own, foreign = shop(api.db, stock1=10), shop(api.db, stock1=10)
    tokens: dict[str, str | None] = {
        "admin": api.admin,
        "seller_own": api.token(Role.SELLER, own.seller),
        "seller_foreign": api.token(Role.SELLER, foreign.seller),
        "storefront_own": api.token(Role.STOREFRONT),
        "storefront_foreign": api.token(Role.STOREFRONT),
        "anonymous": None,
    }
    w = Matrix(api, own, foreign, tokens,
               {c: token_pk(api.db, t) for c, t in tokens.items() if t is not None})

    order = await placed(api, "REGULAR", [(own.variant, 2)], token=tokens["storefront_own"])
    line = order["lines"][0]["id"]
    shipped = (await api.gql(FULFILL, {"orderId": order["id"], "lines": [
        {"orderLineId": line, "quantity": 1}]}))["orderFulfill"]
    assert shipped["errors"] == []
    # an order both sellers share, and one of the foreign storefront
    await placed(api, "REGULAR", [(own.variant, 1), (foreign.variant, 1)])
    await placed(api, "REGULAR", [(foreign.variant, 1)], token=tokens["storefront_foreign"])
    purchase = stock_service.create_purchase_order(
        api.db.uow(), ADMIN, warehouse_id=own.w1,
        lines=[stock_service.PurchaseLine(own.variant, 5)])
    stock = int(api.db.scalar("SELECT id FROM stock WHERE variant_id = :v AND warehouse_id = :w",
                              v=own.variant, w=own.w1))
    movement = int(api.db.scalar("SELECT min(id) FROM stock_movement WHERE stock_id = :s",
                                 s=stock))
    w.targets = {
        "Seller": gid("Seller", own.seller), "ShippingZone": gid("ShippingZone", own.zone),
        "Warehouse": gid("Warehouse", own.w1), "Product": gid("Product", own.product),
        "ProductVariant": gid("ProductVariant", own.variant), "Stock": gid("Stock", stock),
        "StockMovement": gid("StockMovement", movement),
        "PurchaseOrder": gid("PurchaseOrder", purchase.id),
        "Order": order["id"], "OrderLine": line,
        "Fulfillment": shipped["fulfillment"]["id"],
        "ApiToken": gid("ApiToken", w.token_pks["seller_own"]),
        "SalesChannel": gid("SalesChannel", w.channel()),
        "PickBatch": gid("PickBatch", await w.batch()),
        "WebhookSubscription": gid("WebhookSubscription", w.subscription()),
        "SupplierFeed": gid("SupplierFeed", w.feed()),
    }
    assert set(w.targets) == set(NODE_TARGETS)
    return w


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def matrix_db(request: pytest.FixtureRequest) -> Iterator[Database]:
    """The session's database of one backend, emptied once for this module."""
    database: Database = request.getfixturevalue(f"_{request.param}_db")
    database.reset()
    yield database


@pytest.fixture(scope="module")
async def w(matrix_db: Database) -> AsyncIterator[Matrix]:
    async with serve(matrix_db) as api:
        yield await build_world(api)


def cells(table: dict[str, Row]) -> list[Any]:
    return [pytest.param(name, caller, outcome, id=f"{name}-{caller}")
            for name, row in table.items() for caller, outcome in zip(CALLERS, row, strict=True)]


# ---------------------------------------------------------------------------- reading

async def ask(w: Matrix, caller: str, query: str,
              variables: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    response = await w.api.post(query, variables, token=w.tokens[caller])
    return response.status_code, response.json()


def answered(status: int, body: dict[str, Any]) -> dict[str, Any]:
    assert status == 200, body
    assert "errors" not in body, body["errors"]
    return body["data"]  # type: ignore[no-any-return]


async def refused(w: Matrix, caller: str, expected: Outcome, name: str,
                  answer: tuple[int, dict[str, Any]], query: str,
                  variables: dict[str, Any] | None = None) -> None:
    """DENY and AUTH of a query: HTTP 200, a top-level PERMISSION_DENIED, no data."""
    status, body = answer
    assert (w.tokens[caller] is None) == (expected is AUTH), f"{caller}: {expected}"
    assert status == 200, body
    assert [e["extensions"]["code"] for e in body.get("errors", [])] == ["PERMISSION_DENIED"], body
    assert body.get("data") is None or body["data"].get(name) is None, body
    if expected is AUTH:
        await not_live(w, caller, query, variables)


NOT_LIVE = {"errors": [{"message": "The token is unknown or has been revoked.",
                        "extensions": {"code": "UNAUTHENTICATED"}}]}


async def not_live(w: Matrix, caller: str, query: str,
                   variables: dict[str, Any] | None) -> None:
    """AUTH: the answer to a request without a token; the same request with a token that is
    not live is refused as a whole (HTTP 401), not answered as anonymous."""
    assert w.tokens[caller] is None, f"AUTH answers requests without a token, not {caller}"
    response = await w.api.post(query, variables, token="sy_not-a-live-token")
    assert (response.status_code, response.json()) == (401, NOT_LIVE)


async def check_node(w: Matrix, caller: str, expected: Outcome, type_name: str) -> None:
    target = w.targets[type_name]
    status, body = await ask(w, caller, NODE, {"id": target})
    if expected in (DENY, AUTH):
        await refused(w, caller, expected, "node", (status, body), NODE, {"id": target})
    elif expected is ALLOW:
        assert answered(status, body) == {"node": {"__typename": type_name, "id": target}}
    elif expected is HIDDEN:
        unknown = await ask(w, caller, NODE, {"id": gid(type_name, UNKNOWN)})
        assert (status, body) == unknown == (200, {"data": {"node": None}})
    else:
        raise AssertionError(f"`node` has no check for {expected}")


async def check_nodes(w: Matrix, caller: str, expected: Outcome) -> None:
    types = ["Seller", "Warehouse", "Product", "ProductVariant"]
    variables = {"ids": [w.targets[t] for t in types]}
    status, body = await ask(w, caller, NODES_QUERY, variables)
    if expected in (DENY, AUTH):
        await refused(w, caller, expected, "nodes", (status, body), NODES_QUERY, variables)
    elif expected is ALLOW:
        assert answered(status, body) == {"nodes": [
            {"__typename": t, "id": w.targets[t]} for t in types]}
    elif expected is HIDDEN:
        unknown = await ask(w, caller, NODES_QUERY,
                            {"ids": [gid(t, UNKNOWN) for t in types]})
        assert (status, body) == unknown == (200, {"data": {"nodes": [None] * len(types)}})
    else:
        raise AssertionError(f"`nodes` has no check for {expected}")


async def check_configuration(w: Matrix, caller: str, expected: Outcome) -> None:
    status, body = await ask(w, caller, CONFIGURATION)
    if expected in (DENY, AUTH):
        await refused(w, caller, expected, "marketplaceConfiguration", (status, body),
                      CONFIGURATION)
    elif expected is ALLOW:
        allocation = answered(status, body)["marketplaceConfiguration"]["allocation"]
        assert sorted(a["orderType"] for a in allocation) == ["DRAFT", "OFFER", "QUOTE",
                                                               "REGULAR"]
    else:
        raise AssertionError(f"`marketplaceConfiguration` has no check for {expected}")


@dataclass(frozen=True)
class Listing:
    """A list query: the Node type it lists, SQL for the IDs of every object of it and of a
    seller's or a storefront's own (`:s` the seller, `:t` the caller's token), an argument
    narrowing it to one of seller own's objects (argument, Node type of that object), and
    more of each node to select."""

    type_name: str
    every: str
    of_seller: str | None = None
    of_storefront: str | None = None
    narrow: tuple[str, str] | None = None
    selection: str = ""


SELLER_ORDERS = """SELECT id FROM orders WHERE created_by_token_id = :t OR id IN (
  SELECT l.order_id FROM order_line l JOIN product_variant v ON v.id = l.variant_id
  JOIN product p ON p.id = v.product_id WHERE p.seller_id = :s)"""

LISTINGS: dict[str, Listing] = {
    "tokens": Listing("ApiToken", "SELECT id FROM api_token"),
    "sellers": Listing("Seller", "SELECT id FROM seller",
                       "SELECT id FROM seller WHERE id = :s"),
    "warehouses": Listing("Warehouse", "SELECT id FROM warehouse",
                          "SELECT id FROM warehouse WHERE seller_id = :s",
                          narrow=("sellerId", "Seller")),
    "products": Listing("Product", "SELECT id FROM product",
                        "SELECT id FROM product WHERE seller_id = :s",
                        narrow=("sellerId", "Seller")),
    "productVariants": Listing(
        "ProductVariant", "SELECT id FROM product_variant",
        "SELECT v.id FROM product_variant v JOIN product p ON p.id = v.product_id "
        "WHERE p.seller_id = :s", narrow=("sellerId", "Seller")),
    "stocks": Listing(
        "Stock", "SELECT id FROM stock",
        "SELECT st.id FROM stock st JOIN warehouse w ON w.id = st.warehouse_id "
        "WHERE w.seller_id = :s", narrow=("sellerId", "Seller")),
    "stockMovements": Listing(
        "StockMovement", "SELECT id FROM stock_movement",
        "SELECT m.id FROM stock_movement m JOIN warehouse w ON w.id = m.warehouse_id "
        "WHERE w.seller_id = :s", narrow=("variantId", "ProductVariant")),
    "salesChannels": Listing("SalesChannel", "SELECT id FROM sales_channel",
                             "SELECT id FROM sales_channel WHERE seller_id = :s",
                             narrow=("sellerId", "Seller")),
    "pickBatches": Listing(
        "PickBatch", "SELECT id FROM pick_batch",
        "SELECT b.id FROM pick_batch b JOIN warehouse w ON w.id = b.warehouse_id "
        "WHERE w.seller_id = :s", narrow=("warehouseId", "Warehouse")),
    "webhookSubscriptions": Listing(
        "WebhookSubscription", "SELECT id FROM webhook_subscription",
        "SELECT id FROM webhook_subscription WHERE seller_id = :s",
        narrow=("sellerId", "Seller")),
    "orders": Listing("Order", "SELECT id FROM orders", SELLER_ORDERS,
                      "SELECT id FROM orders WHERE created_by_token_id = :t",
                      selection="lines { variant { product { seller { id } } } }"),
}


def list_query(name: str, spec: Listing, narrowed: bool = False) -> str:
    narrow = f", {spec.narrow[0]}: $narrow" if narrowed and spec.narrow else ""
    return (f"query($after: String{', $narrow: ID' if narrow else ''}) {{ "
            f"{name}(first: 100, after: $after{narrow}) {{ edges {{ node {{ id "
            f"{spec.selection} }} }} pageInfo {{ hasNextPage endCursor }} }} }}")


async def listed(w: Matrix, caller: str, name: str, spec: Listing,
                 narrow_to: str | None = None) -> tuple[int, dict[str, Any], list[Any]]:
    """Every node the caller gets from the list (all pages); on an error, the first answer."""
    query = list_query(name, spec, narrowed=narrow_to is not None)
    nodes: list[Any] = []
    after = None
    for _ in range(50):
        status, body = await ask(w, caller, query, {"after": after, "narrow": narrow_to})
        if status != 200 or "errors" in body:
            return status, body, nodes
        page = body["data"][name]
        nodes += [e["node"] for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            return status, body, nodes
        after = page["pageInfo"]["endCursor"]
    raise AssertionError(f"{name} did not end")


def gids(w: Matrix, type_name: str, sql: str, **params: Any) -> set[str]:
    return {gid(type_name, int(r[0])) for r in w.db.rows(sql, **params)}


async def check_list(w: Matrix, caller: str, expected: Outcome, name: str) -> None:
    spec = LISTINGS[name]
    status, body, nodes = await listed(w, caller, name, spec)
    if expected in (DENY, AUTH):
        await refused(w, caller, expected, name, (status, body), list_query(name, spec),
                      {"after": None})
        return
    answered(status, body)
    got = [n["id"] for n in nodes]
    assert len(got) == len(set(got)), name
    target = w.targets[spec.type_name]
    if expected is ALLOW:
        assert set(got) == gids(w, spec.type_name, spec.every)
        assert target in got
        return
    if expected is not SCOPED:
        raise AssertionError(f"`{name}` has no check for {expected}")
    seller = w.seller_of(caller)
    sql = spec.of_seller if seller is not None else spec.of_storefront
    assert sql is not None, f"`{name}` cannot be scoped to a {caller}"
    assert set(got) == gids(w, spec.type_name, sql, s=seller, t=w.token_pks[caller])
    assert (target in got) == (caller in OWNERS)
    if name == "orders" and seller is not None:  # a seller sees its own lines only
        assert {ln["variant"]["product"]["seller"]["id"]
                for n in nodes for ln in n["lines"]} == {gid("Seller", seller)}
    if spec.narrow is not None and caller not in OWNERS:
        # narrowed to seller own's object: as narrowed to an id naming nothing
        arg_type = spec.narrow[1]
        mine = await listed(w, caller, name, spec, narrow_to=w.targets[arg_type])
        unknown = await listed(w, caller, name, spec, narrow_to=gid(arg_type, UNKNOWN))
        assert mine[2] == unknown[2] == []


QueryCheck = Callable[[Matrix, str, Outcome], Awaitable[None]]


def _list_check(name: str) -> QueryCheck:
    async def check(w: Matrix, caller: str, expected: Outcome) -> None:
        await check_list(w, caller, expected, name)
    return check


async def _node_field(w: Matrix, caller: str, expected: Outcome) -> None:
    await check_node(w, caller, expected, "Product")


QUERY_CHECKS: dict[str, QueryCheck] = {
    "node": _node_field,
    "nodes": check_nodes,
    "marketplaceConfiguration": check_configuration,
    **{name: _list_check(name) for name in LISTINGS},
}


@pytest.mark.anyio
@pytest.mark.parametrize(("name", "caller", "expected"), cells(QUERIES))
async def test_query(w: Matrix, name: str, caller: str, expected: Outcome) -> None:
    await QUERY_CHECKS[name](w, caller, expected)


@pytest.mark.anyio
@pytest.mark.parametrize(("type_name", "caller", "expected"), cells(NODES))
async def test_node(w: Matrix, type_name: str, caller: str, expected: Outcome) -> None:
    await check_node(w, caller, expected, type_name)


@pytest.mark.anyio
@pytest.mark.parametrize("caller", [c for c in CALLERS if c != "anonymous"])
async def test_nodes_answers_each_id_as_node_does(w: Matrix, caller: str) -> None:
    """`nodes` of one object of every Node type (their rows read ahead together, and each
    answered from them, or its owner read after) hides and shows what `node` of each does."""
    ids = [w.targets[t] for t in NODES]
    status, body = await ask(w, caller, NODES_QUERY, {"ids": [*ids, *ids]})
    singles = []
    for each in ids:
        one_status, one = await ask(w, caller, NODE, {"id": each})
        assert one_status == 200 and "errors" not in one, one
        singles.append(one["data"]["node"])
    assert (status, body) == (200, {"data": {"nodes": [*singles, *singles]}})
    assert any(n is None for n in singles) or caller == "admin"
    assert any(n is not None for n in singles)


# ---------------------------------------------------------------------------- changing

@dataclass
class Call:
    """One mutation: its variables naming seller own's objects, the same call naming
    nothing (for HIDDEN), the payload's result fields, and what undoes a success."""

    query: str
    variables: dict[str, Any]
    unknown: dict[str, Any] | None
    results: tuple[str, ...]
    undo: Callable[[], Awaitable[None]] | None = None


Builder = Callable[[Matrix, str], Awaitable[Call]]
BUILDERS: dict[str, Builder] = {}


def builds(name: str) -> Callable[[Builder], Builder]:
    def register(builder: Builder) -> Builder:
        BUILDERS[name] = builder
        return builder
    return register


def payload_mutation(name: str, args: str, selection: str) -> str:
    """`mutation(<args>) { name(<the same args>) { selection errors } }`."""
    params = ", ".join(f"{a.split(':')[0].strip()}: ${a.split(':')[0].strip()}"
                       for a in args.split(","))
    declared = ", ".join(f"${a.strip()}" for a in args.split(","))
    return f"mutation({declared}) {{ {name}({params}) {{ {selection} {ERRORS} }} }}"


def replaced(variables: Any, path: tuple[Any, ...], value: Any) -> Any:
    """A deep copy of `variables` with the value at `path` replaced."""
    if not path:
        return value
    copy: Any = list(variables) if isinstance(variables, list) else dict(variables)
    copy[path[0]] = replaced(variables[path[0]], path[1:], value)
    return copy


def with_input(name: str, selection: str, results: tuple[str, ...], fields: dict[str, Any],
               unknown: tuple[str, str] | None = None) -> Call:
    """A mutation `name(input: ...)`; `unknown`: the input field to point at nothing and
    its Node type."""
    variables = {"input": fields}
    return Call(input_mutation(name, f"{selection} {ERRORS}"), variables,
                replaced(variables, ("input", unknown[0]), gid(unknown[1], UNKNOWN))
                if unknown else None, results)


@builds("sellerCreate")
async def _seller_create(w: Matrix, caller: str) -> Call:
    return with_input("sellerCreate", "seller { id }", ("seller",),
                      {"name": unique("matrix seller")})


@builds("shippingZoneCreate")
async def _zone_create(w: Matrix, caller: str) -> Call:
    return with_input("shippingZoneCreate", "shippingZone { id }", ("shippingZone",),
                      {"name": unique("matrix zone"), "countries": ["PL"]})


@builds("marketplaceConfigurationUpdate")
async def _configuration_update(w: Matrix, caller: str) -> Call:
    call = with_input("marketplaceConfigurationUpdate",
                      "marketplaceConfiguration { allocation { orderType enabled } }",
                      ("marketplaceConfiguration",),
                      {"allocation": [{"orderType": "OFFER", "enabled": False}]})
    call.undo = lambda: set_allocation(w.api, "OFFER", True)
    return call


@builds("tokenCreate")
async def _token_create(w: Matrix, caller: str) -> Call:
    return with_input("tokenCreate", "token { id } secret", ("token", "secret"),
                      {"role": "SELLER", "sellerId": gid("Seller", w.own.seller),
                       "name": "matrix"}, unknown=("sellerId", "Seller"))


@builds("tokenRevoke")
async def _token_revoke(w: Matrix, caller: str) -> Call:
    pk = token_pk(w.db, w.api.token(Role.SELLER, w.own.seller))
    return Call(id_mutation("tokenRevoke", f"token {{ id revokedAt }} {ERRORS}"),
                {"id": gid("ApiToken", pk)}, {"id": gid("ApiToken", UNKNOWN)}, ("token",))


@builds("warehouseCreate")
async def _warehouse_create(w: Matrix, caller: str) -> Call:
    return with_input("warehouseCreate", "warehouse { id }", ("warehouse",), {
        "sellerId": gid("Seller", w.own.seller), "name": unique("matrix wh"),
        "shippingZoneIds": [gid("ShippingZone", w.own.zone)]}, unknown=("sellerId", "Seller"))


@builds("productCreate")
async def _product_create(w: Matrix, caller: str) -> Call:
    return with_input("productCreate", "product { id }", ("product",), {
        "sellerId": gid("Seller", w.own.seller), "name": unique("matrix product")},
        unknown=("sellerId", "Seller"))


@builds("productVariantCreate")
async def _variant_create(w: Matrix, caller: str) -> Call:
    return with_input("productVariantCreate", "productVariant { id }", ("productVariant",), {
        "productId": gid("Product", w.own.product), "sku": unique("OWN-MATRIX")},
        unknown=("productId", "Product"))


@builds("productVariantUpdate")
async def _variant_update(w: Matrix, caller: str) -> Call:
    variables = {"id": gid("ProductVariant", w.variant()), "input": {"trackInventory": False}}
    return Call(payload_mutation("productVariantUpdate",
                                 "id: ID!, input: ProductVariantUpdateInput!",
                                 "productVariant { id trackInventory }"),
                variables, replaced(variables, ("id",), gid("ProductVariant", UNKNOWN)),
                ("productVariant",))


@builds("productVariantStocksUpdate")
async def _stocks_update(w: Matrix, caller: str) -> Call:
    variables = {"variantId": gid("ProductVariant", w.variant()),
                 "stocks": [{"warehouseId": gid("Warehouse", w.own.w1), "quantity": 5}]}
    return Call(payload_mutation("productVariantStocksUpdate",
                                 "variantId: ID!, stocks: [StockInput!]!",
                                 "productVariant { id }"),
                variables, replaced(variables, ("variantId",), gid("ProductVariant", UNKNOWN)),
                ("productVariant",))


def stock_input(w: Matrix, variant: int, **fields: Any) -> dict[str, Any]:
    return {"variantId": gid("ProductVariant", variant),
            "warehouseId": gid("Warehouse", w.own.w1), **fields}


@builds("stockAdjust")
async def _stock_adjust(w: Matrix, caller: str) -> Call:
    variant = w.variant({w.own.w1: 5})
    return with_input("stockAdjust", "stock { id quantity }", ("stock",),
                      stock_input(w, variant, delta=1, reason="recount"),
                      unknown=("variantId", "ProductVariant"))


@builds("stockUpdate")
async def _stock_update(w: Matrix, caller: str) -> Call:
    variant = w.variant({w.own.w1: 5})
    return with_input("stockUpdate", "stock { id lowStockThreshold }", ("stock",),
                      stock_input(w, variant, lowStockThreshold=3),
                      unknown=("variantId", "ProductVariant"))


@builds("stockTransfer")
async def _stock_transfer(w: Matrix, caller: str) -> Call:
    variant = w.variant({w.own.w1: 5, w.own.w2: 0})
    return with_input("stockTransfer", "", (), {
        "variantId": gid("ProductVariant", variant),
        "fromWarehouseId": gid("Warehouse", w.own.w1),
        "toWarehouseId": gid("Warehouse", w.own.w2), "quantity": 1},
        unknown=("variantId", "ProductVariant"))


@builds("purchaseOrderCreate")
async def _purchase_order_create(w: Matrix, caller: str) -> Call:
    return with_input("purchaseOrderCreate", "purchaseOrder { id }", ("purchaseOrder",), {
        "warehouseId": gid("Warehouse", w.own.w1),
        "lines": [{"variantId": gid("ProductVariant", w.variant()), "quantity": 5}]},
        unknown=("warehouseId", "Warehouse"))


@builds("purchaseOrderReceive")
async def _purchase_order_receive(w: Matrix, caller: str) -> Call:
    variant = w.variant({w.own.w1: 0})
    purchase = stock_service.create_purchase_order(
        w.db.uow(), ADMIN, warehouse_id=w.own.w1,
        lines=[stock_service.PurchaseLine(variant, 5)])
    variables = {"id": gid("PurchaseOrder", purchase.id),
                 "lines": [{"variantId": gid("ProductVariant", variant), "quantity": 1}]}
    return Call(payload_mutation("purchaseOrderReceive",
                                 "id: ID!, lines: [PurchaseOrderLineInput!]!",
                                 "purchaseOrder { id }"),
                variables, replaced(variables, ("id",), gid("PurchaseOrder", UNKNOWN)),
                ("purchaseOrder",))


@builds("stockBulkUpdate")
async def _stock_bulk_update(w: Matrix, caller: str) -> Call:
    # by variant ID: a SKU names a variant only within its seller
    variables = {"stocks": [stock_input(w, w.variant({w.own.w1: 0}), quantity=7)]}
    return Call(payload_mutation("stockBulkUpdate", "stocks: [StockBulkUpdateInput!]!",
                                 "count"),
                variables, replaced(variables, ("stocks", 0, "variantId"),
                                    gid("ProductVariant", UNKNOWN)), ("count",))


def lines_of(variant: int, quantity: int = 1) -> list[dict[str, Any]]:
    return [{"variantId": gid("ProductVariant", variant), "quantity": quantity}]


@builds("orderCreate")
async def _order_create(w: Matrix, caller: str) -> Call:
    variables = {"input": {"type": "REGULAR", "shippingCountry": "DE",
                           "lines": lines_of(w.variant({w.own.w1: 5}))}}
    return Call(input_mutation("orderCreate", f"order {{ id }} {ERRORS}"), variables,
                replaced(variables, ("input", "lines", 0, "variantId"),
                         gid("ProductVariant", UNKNOWN)), ("order",))


async def editable_order(w: Matrix, caller: str) -> dict[str, Any]:
    """An order of seller own's variant for the edit mutations: a DRAFT an admin placed, or
    for a storefront one storefront own placed (storefronts place REGULAR orders only)."""
    variant = w.variant({w.own.w1: 5})
    if caller.startswith("storefront"):
        return await placed(w.api, "REGULAR", [(variant, 1)], token=w.tokens["storefront_own"])
    return await placed(w.api, "DRAFT", [(variant, 1)])


@builds("orderLinesCreate")
async def _lines_create(w: Matrix, caller: str) -> Call:
    order = await editable_order(w, caller)
    variables = {"orderId": order["id"], "lines": [
        {"variantId": order["lines"][0]["variant"]["id"], "quantity": 1}]}
    return Call(payload_mutation("orderLinesCreate",
                                 "orderId: ID!, lines: [OrderLineInput!]!", "order { id }"),
                variables, replaced(variables, ("orderId",), gid("Order", UNKNOWN)),
                ("order",))


@builds("orderLineUpdate")
async def _line_update(w: Matrix, caller: str) -> Call:
    order = await editable_order(w, caller)
    variables = {"id": order["lines"][0]["id"], "input": {"quantity": 2}}
    return Call(payload_mutation("orderLineUpdate", "id: ID!, input: OrderLineUpdateInput!",
                                 "order { id }"),
                variables, replaced(variables, ("id",), gid("OrderLine", UNKNOWN)), ("order",))


@builds("orderLineDelete")
async def _line_delete(w: Matrix, caller: str) -> Call:
    order = await editable_order(w, caller)
    return Call(id_mutation("orderLineDelete", f"order {{ id }} {ERRORS}"),
                {"id": order["lines"][0]["id"]}, {"id": gid("OrderLine", UNKNOWN)}, ("order",))


@builds("orderConfirm")
async def _order_confirm(w: Matrix, caller: str) -> Call:
    order = await editable_order(w, caller)
    return Call(id_mutation("orderConfirm", f"order {{ id status }} {ERRORS}"),
                {"id": order["id"]}, {"id": gid("Order", UNKNOWN)}, ("order",))


async def storefront_order(w: Matrix) -> dict[str, Any]:
    """A REGULAR order of a new variant of seller own, placed by storefront own."""
    return await placed(w.api, "REGULAR", [(w.variant({w.own.w1: 5}), 2)],
                        token=w.tokens["storefront_own"])


@builds("orderCancel")
async def _order_cancel(w: Matrix, caller: str) -> Call:
    order = await storefront_order(w)
    return Call(id_mutation("orderCancel", f"order {{ id status }} {ERRORS}"),
                {"id": order["id"]}, {"id": gid("Order", UNKNOWN)}, ("order",))


@builds("orderFulfill")
async def _order_fulfill(w: Matrix, caller: str) -> Call:
    order = await storefront_order(w)
    variables = {"orderId": order["id"],
                 "lines": [{"orderLineId": order["lines"][0]["id"], "quantity": 1}]}
    return Call(FULFILL, variables, replaced(variables, ("orderId",), gid("Order", UNKNOWN)),
                ("order", "fulfillment"))


@builds("salesChannelCreate")
async def _channel_create(w: Matrix, caller: str) -> Call:
    return with_input("salesChannelCreate", "salesChannel { id } secret",
                      ("salesChannel", "secret"), {
                          "sellerId": gid("Seller", w.own.seller), "name": unique("channel"),
                          "endpointUrl": "https://shop.example/stock"},
                      unknown=("sellerId", "Seller"))


def channel_call(name: str, args: str, fields: dict[str, Any], id_name: str = "id") -> Call:
    variables = {id_name: fields.pop(id_name), **fields}
    return Call(payload_mutation(name, args, "salesChannel { id }"), variables,
                replaced(variables, (id_name,), gid("SalesChannel", UNKNOWN)),
                ("salesChannel",))


@builds("salesChannelUpdate")
async def _channel_update(w: Matrix, caller: str) -> Call:
    return channel_call("salesChannelUpdate", "id: ID!, input: SalesChannelUpdateInput!",
                        {"id": gid("SalesChannel", w.channel()),
                         "input": {"untrackedQuantity": 5}})


@builds("salesChannelSync")
async def _channel_sync(w: Matrix, caller: str) -> Call:
    channel = w.channel()  # with a listing the channel acknowledged: a sync pushes it again
    channels.upsert_listings(w.db.uow(), ADMIN, channel, [channels.ListingInput("E1", "S")])
    with w.db.engine.begin() as conn:
        conn.execute(text("UPDATE listing SET acked_version = version WHERE channel_id = :c"),
                     {"c": channel})
    return channel_call("salesChannelSync", "id: ID!", {"id": gid("SalesChannel", channel)})


@builds("listingsUpsert")
async def _listings_upsert(w: Matrix, caller: str) -> Call:
    return channel_call("listingsUpsert", "channelId: ID!, listings: [ListingInput!]!",
                        {"channelId": gid("SalesChannel", w.channel()),
                         "listings": [{"externalId": "E1", "sku": "OWN-SKU"}]}, "channelId")


@builds("listingsDelete")
async def _listings_delete(w: Matrix, caller: str) -> Call:
    channel = w.channel()
    channels.upsert_listings(w.db.uow(), ADMIN, channel, [channels.ListingInput("E1", "S")])
    return channel_call("listingsDelete", "channelId: ID!, externalIds: [String!]!",
                        {"channelId": gid("SalesChannel", channel), "externalIds": ["E1"]},
                        "channelId")


@builds("productUpdate")
async def _product_update(w: Matrix, caller: str) -> Call:
    variables = {"id": gid("Product", World(w.db).product(w.own.seller)),
                 "input": {"inventorySync": False}}
    return Call(payload_mutation("productUpdate", "id: ID!, input: ProductUpdateInput!",
                                 "product { id inventorySync }"),
                variables, replaced(variables, ("id",), gid("Product", UNKNOWN)),
                ("product",))


@builds("pickBatchCreate")
async def _batch_create(w: Matrix, caller: str) -> Call:
    order = await storefront_order(w)
    return with_input("pickBatchCreate", "pickBatch { id }", ("pickBatch",), {
        "warehouseId": gid("Warehouse", w.own.w1), "orderIds": [order["id"]]},
        unknown=("warehouseId", "Warehouse"))


def batch_call(name: str, batch: int) -> Call:
    selection = "pickBatch { id status }" + (" fulfillments { id }"
                                              if name == "pickBatchComplete" else "")
    return Call(id_mutation(name, f"{selection} {ERRORS}"), {"id": gid("PickBatch", batch)},
                {"id": gid("PickBatch", UNKNOWN)},
                ("pickBatch", "fulfillments") if name == "pickBatchComplete" else ("pickBatch",))


@builds("pickBatchComplete")
async def _batch_complete(w: Matrix, caller: str) -> Call:
    return batch_call("pickBatchComplete", await w.batch())


@builds("pickBatchCancel")
async def _batch_cancel(w: Matrix, caller: str) -> Call:
    return batch_call("pickBatchCancel", await w.batch())


@builds("webhookSubscriptionCreate")
async def _subscription_create(w: Matrix, caller: str) -> Call:
    return with_input("webhookSubscriptionCreate", "webhookSubscription { id } secret",
                      ("webhookSubscription", "secret"), {
                          "sellerId": gid("Seller", w.own.seller),
                          "url": "https://mailer.example/hook", "events": ["OUT_OF_STOCK"]},
                      unknown=("sellerId", "Seller"))


@builds("webhookSubscriptionUpdate")
async def _subscription_update(w: Matrix, caller: str) -> Call:
    variables = {"id": gid("WebhookSubscription", w.subscription()),
                 "input": {"paused": True}}
    return Call(payload_mutation("webhookSubscriptionUpdate",
                                 "id: ID!, input: WebhookSubscriptionUpdateInput!",
                                 "webhookSubscription { id status }"),
                variables, replaced(variables, ("id",), gid("WebhookSubscription", UNKNOWN)),
                ("webhookSubscription",))


@builds("webhookSubscriptionDelete")
async def _subscription_delete(w: Matrix, caller: str) -> Call:
    return Call(id_mutation("webhookSubscriptionDelete", ERRORS),
                {"id": gid("WebhookSubscription", w.subscription())},
                {"id": gid("WebhookSubscription", UNKNOWN)}, ())


@builds("supplierFeedCreate")
async def _feed_create(w: Matrix, caller: str) -> Call:
    return with_input("supplierFeedCreate", "supplierFeed { id } secret",
                      ("supplierFeed", "secret"), {
                          "warehouseId": gid("Warehouse", w.own.w1), "name": unique("feed")},
                      unknown=("warehouseId", "Warehouse"))


def feed_call(name: str, args: str, variables: dict[str, Any], id_name: str = "id") -> Call:
    return Call(payload_mutation(name, args, "supplierFeed { id }"), variables,
                replaced(variables, (id_name,), gid("SupplierFeed", UNKNOWN)),
                ("supplierFeed",))


@builds("supplierFeedUpdate")
async def _feed_update(w: Matrix, caller: str) -> Call:
    return feed_call("supplierFeedUpdate", "id: ID!, input: SupplierFeedUpdateInput!",
                     {"id": gid("SupplierFeed", w.feed()), "input": {"paused": True}})


@builds("supplierFeedItemsUpsert")
async def _feed_items(w: Matrix, caller: str) -> Call:
    return feed_call("supplierFeedItemsUpsert",
                     "feedId: ID!, items: [SupplierFeedItemInput!]!",
                     {"feedId": gid("SupplierFeed", w.feed()), "items": [
                         {"variantId": gid("ProductVariant", w.variant()),
                          "supplierSku": "SUP-1"}]}, "feedId")


@builds("supplierFeedDelete")
async def _feed_delete(w: Matrix, caller: str) -> Call:
    return Call(id_mutation("supplierFeedDelete", ERRORS),
                {"id": gid("SupplierFeed", w.feed())}, {"id": gid("SupplierFeed", UNKNOWN)},
                ())


STATE = [
    "SELECT id, name FROM seller",
    "SELECT id, name FROM shipping_zone",
    "SELECT id, seller_id FROM warehouse",
    "SELECT id, seller_id FROM product",
    "SELECT id, sku, track_inventory FROM product_variant",
    "SELECT id, quantity, quantity_allocated, low_stock_threshold, "
    "quantity_reserved_for_batches FROM stock",
    "SELECT id, type, status FROM orders",
    "SELECT id, quantity, quantity_fulfilled FROM order_line",
    "SELECT id, stock_id, quantity FROM allocation",
    "SELECT id FROM fulfillment",
    "SELECT id FROM stock_movement",
    "SELECT id FROM purchase_order",
    "SELECT id, quantity, quantity_received FROM purchase_order_line",
    "SELECT order_type, enabled FROM order_type_allocation",
    "SELECT id, revoked_at IS NULL FROM api_token",
    "SELECT id, name, untracked_quantity, paused, failing FROM sales_channel",
    "SELECT id, external_id, sku, figure, version, acked_version FROM listing",
    "SELECT id, name, inventory_sync FROM product",
    "SELECT id, status FROM pick_batch",
    "SELECT id, batch_id, quantity FROM pick_batch_line",
    "SELECT id, seller_id, url, events, paused FROM webhook_subscription",
    "SELECT id, name, paused FROM supplier_feed",
    "SELECT id, feed_id, variant_id, supplier_sku FROM supplier_feed_item",
]


def state(db: Database) -> list[list[tuple[Any, ...]]]:
    """Everything a mutation could change (not the tokens' lastUsedAt, written later)."""
    with db.engine.connect() as conn:
        return [[tuple(r) for r in conn.execute(text(f"{sql} ORDER BY 1"))] for sql in STATE]


def visible(payload: dict[str, Any], results: tuple[str, ...]) -> list[Any]:
    """The errors as a client compares them, and the result fields."""
    return [[(e["code"], e["field"], e["message"]) for e in payload["errors"]],
            [payload[r] for r in results]]


async def check_mutation(w: Matrix, name: str, caller: str, expected: Outcome) -> None:
    call = await BUILDERS[name](w, caller)
    before = state(w.db)
    try:
        payload = answered(*await ask(w, caller, call.query, call.variables))[name]
        codes = [e["code"] for e in payload["errors"]]
        if expected is ALLOW:
            assert payload["errors"] == [], payload
            assert all(payload[r] for r in call.results), payload
            assert state(w.db) != before
            return
        assert not any(payload[r] for r in call.results), payload
        if expected in (DENY, AUTH):
            assert (w.tokens[caller] is None) == (expected is AUTH), f"{caller}: {expected}"
            assert codes == ["PERMISSION_DENIED"], payload
            if expected is AUTH:
                await not_live(w, caller, call.query, call.variables)
        elif expected is HIDDEN:
            assert codes and set(codes) == {"NOT_FOUND"}, payload
            assert call.unknown is not None, f"{name} has no call naming nothing"
            unknown = answered(*await ask(w, caller, call.query, call.unknown))[name]
            assert visible(payload, call.results) == visible(unknown, call.results)
        else:
            raise AssertionError(f"a mutation has no check for {expected}")
        assert state(w.db) == before
    finally:
        if call.undo is not None:
            await call.undo()


@pytest.mark.anyio
@pytest.mark.parametrize(("name", "caller", "expected"), cells(MUTATIONS))
async def test_mutation(w: Matrix, name: str, caller: str, expected: Outcome) -> None:
    await check_mutation(w, name, caller, expected)
