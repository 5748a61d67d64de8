"""Sales channels and listings over GraphQL (API.md "Sales channels (inventory sync)"), with
the app's own sync pushing to a real receiver on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import text

from api import ids
from domain import signing, sync
from domain.errors import InvalidInput
from domain.models import Role
from domain.services import channels
from tests.conftest import Api, Database, serve
from tests.factories import ADMIN, Shop, gid, shop
from tests.receiver import Receiver, receiving
from workers.delivery import HttpPost

pytestmark = pytest.mark.anyio

ERRORS = "errors { code field message }"
CHANNEL = ("id name endpointUrl syncMode status lastError lastSyncedAt untrackedQuantity "
           "maxRequestsPerSecond pendingUpdates seller { id } warehouses { id }")
CREATE = f"""mutation($input: SalesChannelCreateInput!) {{ salesChannelCreate(input: $input) {{
  salesChannel {{ {CHANNEL} }} secret {ERRORS} }} }}"""
UPDATE = f"""mutation($id: ID!, $input: SalesChannelUpdateInput!) {{
  salesChannelUpdate(id: $id, input: $input) {{ salesChannel {{ {CHANNEL} }} {ERRORS} }} }}"""
UPSERT = f"""mutation($c: ID!, $l: [ListingInput!]!) {{ listingsUpsert(channelId: $c, listings: $l)
  {{ salesChannel {{ id pendingUpdates }} {ERRORS} }} }}"""
DELETE = f"""mutation($c: ID!, $e: [String!]!) {{ listingsDelete(channelId: $c, externalIds: $e)
  {{ salesChannel {{ id }} {ERRORS} }} }}"""
SYNC = f"""mutation($id: ID!) {{ salesChannelSync(id: $id) {{ salesChannel {{ id }}
  {ERRORS} }} }}"""
LISTINGS = """query($id: ID!, $unmatched: Boolean, $pending: Boolean) { node(id: $id) {
  ... on SalesChannel { pendingUpdates listings(first: 100, unmatched: $unmatched,
  pending: $pending) { edges { node { externalId sku available pending lastPushedQuantity
  lastPushedVersion lastPushedAt variant { id } } } } } } }"""
PRODUCT_UPDATE = f"""mutation($id: ID!, $input: ProductUpdateInput!) {{
  productUpdate(id: $id, input: $input) {{ product {{ id name inventorySync }} {ERRORS} }} }}"""


@dataclass
class Live:
    api: Api
    shop: Shop
    receiver: Receiver

    async def create(self, **fields: Any) -> dict[str, Any]:
        payload = (await self.api.gql(CREATE, {"input": {
            "sellerId": gid("Seller", self.shop.seller), "name": "Etsy",
            "endpointUrl": self.receiver.url, "secret": self.receiver.secret,
            **fields}}))["salesChannelCreate"]
        assert payload["errors"] == [], payload
        return payload  # type: ignore[no-any-return]

    async def listings(self, channel: str, **filters: Any) -> list[dict[str, Any]]:
        data = await self.api.gql(LISTINGS, {"id": channel, **filters})
        return [e["node"] for e in data["node"]["listings"]["edges"]]

    async def settled(self, channel: str) -> list[dict[str, Any]]:
        """The listings once no matched one is pending: the receiver sees a push before
        the pusher has recorded the channel's answer."""
        deadline = time.monotonic() + 10
        while True:
            listings = await self.listings(channel)
            if time.monotonic() > deadline or not any(
                    n["pending"] for n in listings if n["variant"] is not None):
                return listings
            await asyncio.sleep(0.02)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving() as r:
        yield r


@pytest.fixture
async def live(db: Database, receiver: Receiver) -> AsyncIterator[Live]:
    post = HttpPost()
    kick = sync.ThreadKick(sync.Pusher(db.engine, post))
    background = sync.Sync(db.engine, kick)
    background.SWEEP_EVERY = 0.2
    background.start()
    try:
        async with serve(db, publish=background) as api:
            yield Live(api, shop(db, stock1=10, stock2=5), receiver)
    finally:
        background.close()
        kick.close()
        post.close()


def sku(s: Shop) -> str:
    return str(s.world.db.scalar("SELECT sku FROM product_variant WHERE id = :v", v=s.variant))


async def test_a_channel_is_created_with_its_defaults_and_a_secret_shown_once(
        live: Live) -> None:
    payload = (await live.api.gql(CREATE, {"input": {
        "sellerId": gid("Seller", live.shop.seller), "name": "Shop",
        "endpointUrl": "https://shop.example/hook"}}))["salesChannelCreate"]
    channel = payload["salesChannel"]
    assert payload["errors"] == [] and signing.is_secret(payload["secret"])
    assert channel["syncMode"] == "ALL" and channel["status"] == "OK"
    assert channel["untrackedQuantity"] == 100 and channel["maxRequestsPerSecond"] == 10
    assert {w["id"] for w in channel["warehouses"]} == {
        gid("Warehouse", live.shop.w1), gid("Warehouse", live.shop.w2)}
    later = live.shop.world.warehouse(live.shop.seller, [live.shop.zone])
    data = await live.api.gql("query($id: ID!) { node(id: $id) { ... on SalesChannel { "
                              "warehouses { id } } } }", {"id": channel["id"]})
    assert gid("Warehouse", later) in {w["id"] for w in data["node"]["warehouses"]}
    assert "secret" not in str(await live.api.gql(
        "query { salesChannels { edges { node { id name } } } }"))


@pytest.mark.parametrize(("fields", "field"), [
    ({"endpointUrl": "ftp://shop.example/x"}, "input.endpointUrl"),
    ({"endpointUrl": "not a url"}, "input.endpointUrl"),
    ({"endpointUrl": "https://"}, "input.endpointUrl"),
    ({"secret": "whsec_short"}, "input.secret"),
    ({"secret": "plain-secret-of-enough-length-to-pass-nothing"}, "input.secret"),
    ({"untrackedQuantity": -1}, "input.untrackedQuantity"),
    ({"maxRequestsPerSecond": 0}, "input.maxRequestsPerSecond"),
    ({"name": " "}, "input.name"),
])
async def test_bad_channel_input_is_invalid_and_creates_nothing(
        api: Api, fields: dict[str, Any], field: str) -> None:
    s = shop(api.db)
    payload = (await api.gql(CREATE, {"input": {
        "sellerId": gid("Seller", s.seller), "name": "Shop",
        "endpointUrl": "https://shop.example/hook", **fields}}))["salesChannelCreate"]
    assert payload["salesChannel"] is None and payload["secret"] is None
    assert [(e["code"], e["field"]) for e in payload["errors"]] == [("INVALID", field)]
    assert api.db.scalar("SELECT count(*) FROM sales_channel") == 0


async def test_another_sellers_warehouse_is_not_found_for_a_seller(api: Api) -> None:
    mine, theirs = shop(api.db), shop(api.db)
    token = api.token(Role.SELLER, mine.seller)
    payload = (await api.gql(CREATE, {"input": {
        "sellerId": gid("Seller", mine.seller), "name": "Shop",
        "endpointUrl": "https://shop.example/hook",
        "warehouseIds": [gid("Warehouse", theirs.w1)]}}, token=token))["salesChannelCreate"]
    assert [(e["code"], e["field"]) for e in payload["errors"]] == [
        ("NOT_FOUND", "input.warehouseIds.0")]


async def test_listings_match_by_sku_and_are_pushed_signed(live: Live) -> None:
    channel = (await live.create())["salesChannel"]["id"]
    other = shop(live.api.db, stock1=99)  # the same SKU at another seller does not count
    same = sku(live.shop)
    with live.api.db.engine.begin() as conn:
        conn.execute(text("UPDATE product_variant SET sku = :s WHERE id = :v"),
                     {"s": same, "v": other.variant})
    payload = (await live.api.gql(UPSERT, {"c": channel, "l": [
        {"externalId": "A", "sku": sku(live.shop)}, {"externalId": "B", "sku": sku(live.shop)},
        {"externalId": "U", "sku": "UNKNOWN-SKU"}]}))["listingsUpsert"]
    assert payload["errors"] == []
    live.receiver.wait_for({"A": 15, "B": 15})

    listings = {n["externalId"]: n for n in await live.settled(channel)}
    assert listings["U"]["variant"] is None and listings["U"]["available"] is None
    assert listings["A"]["variant"] == {"id": gid("ProductVariant", live.shop.variant)}
    assert listings["A"]["lastPushedQuantity"] == 15 and listings["A"]["pending"] is False
    assert [n["externalId"] for n in await live.listings(channel, unmatched=True)] == ["U"]
    assert await live.listings(channel, pending=True) == []
    assert all(r.signed for r in live.receiver.requests)
    assert live.receiver.requests[0].body["channelId"] == channel

    order = await live.api.gql(
        "mutation($i: OrderCreateInput!) { orderCreate(input: $i) { order { id } errors "
        "{ code } } }", {"i": {"type": "REGULAR", "shippingCountry": "DE", "lines": [
            {"variantId": gid("ProductVariant", live.shop.variant), "quantity": 12}]}})
    assert order["orderCreate"]["errors"] == []
    live.receiver.wait_for({"A": 3, "B": 3})


async def test_pending_updates_and_a_paused_channel(live: Live) -> None:
    created = await live.create()
    channel = created["salesChannel"]["id"]
    paused = (await live.api.gql(UPDATE, {"id": channel, "input": {"paused": True}}
                                 ))["salesChannelUpdate"]["salesChannel"]
    assert paused["status"] == "PAUSED"
    await live.api.gql(UPSERT, {"c": channel, "l": [{"externalId": "A",
                                                     "sku": sku(live.shop)}]})
    time.sleep(0.5)
    assert live.receiver.requests == []
    data = await live.api.gql(LISTINGS, {"id": channel})
    assert data["node"]["pendingUpdates"] == 1
    refused = (await live.api.gql(SYNC, {"id": channel}))["salesChannelSync"]
    assert [e["code"] for e in refused["errors"]] == ["INVALID_STATE"]
    await live.api.gql(UPDATE, {"id": channel, "input": {"paused": False}})
    live.receiver.wait_for({"A": 15})
    for _ in range(50):
        if (await live.api.gql(LISTINGS, {"id": channel}))["node"]["pendingUpdates"] == 0:
            break
        time.sleep(0.05)
    assert (await live.api.gql(LISTINGS, {"id": channel}))["node"]["pendingUpdates"] == 0


async def test_sync_mode_none_and_an_opted_out_product_push_nothing(live: Live) -> None:
    channel = (await live.create(syncMode="NONE"))["salesChannel"]["id"]
    await live.api.gql(UPSERT, {"c": channel, "l": [{"externalId": "A",
                                                     "sku": sku(live.shop)}]})
    [listing] = await live.listings(channel)
    assert listing["available"] == 15 and listing["pending"] is False
    product = (await live.api.gql(PRODUCT_UPDATE, {
        "id": gid("Product", live.shop.product), "input": {"inventorySync": False}}
        ))["productUpdate"]["product"]
    assert product["inventorySync"] is False
    await live.api.gql(UPDATE, {"id": channel, "input": {"syncMode": "ALL"}})
    time.sleep(0.5)
    assert live.receiver.requests == []  # the product opted out
    await live.api.gql(PRODUCT_UPDATE, {"id": gid("Product", live.shop.product),
                                         "input": {"inventorySync": True}})
    live.receiver.wait_for({"A": 15})


async def test_more_than_1000_listings_in_one_call_are_refused(api: Api) -> None:
    s = shop(api.db)
    created = (await api.gql(CREATE, {"input": {
        "sellerId": gid("Seller", s.seller), "name": "Shop",
        "endpointUrl": "https://shop.example/hook"}}))["salesChannelCreate"]
    channel = created["salesChannel"]["id"]
    response = await api.post(UPSERT, {"c": channel, "l": [
        {"externalId": f"E{i}", "sku": "S"} for i in range(1_001)]})
    assert [e["extensions"]["code"] for e in response.json()["errors"]] == ["LIST_TOO_LONG"]
    with pytest.raises(InvalidInput, match="at most 1000 listings"):  # the domain's own
        channels.upsert_listings(api.db.uow(), ADMIN, ids.parse(channel)[1], [
            channels.ListingInput(f"E{i}", "S") for i in range(1_001)])
    assert api.db.scalar("SELECT count(*) FROM listing") == 0
    deleted = (await api.gql(DELETE, {"c": created["salesChannel"]["id"], "e": ["nope"]}
                             ))["listingsDelete"]
    assert deleted["errors"] == []


async def test_a_new_secret_recovers_a_failing_channel(live: Live) -> None:
    live.receiver.answer(403)
    channel = (await live.create())["salesChannel"]["id"]
    await live.api.gql(UPSERT, {"c": channel, "l": [{"externalId": "A",
                                                     "sku": sku(live.shop)}]})
    for _ in range(100):
        node = (await live.api.gql("query($id: ID!) { node(id: $id) { ... on SalesChannel { "
                                   "status lastError } } }", {"id": channel}))["node"]
        if node["status"] == "FAILING":
            break
        time.sleep(0.05)
    assert node["status"] == "FAILING" and "403" in node["lastError"]
    failing = (await live.api.gql("query { salesChannels(status: FAILING) { edges { node "
                                  "{ id } } } }"))["salesChannels"]["edges"]
    assert [e["node"]["id"] for e in failing] == [channel]
    secret = signing.new_secret()
    live.receiver.secret = secret
    updated = (await live.api.gql(UPDATE, {"id": channel, "input": {"secret": secret}}
                                  ))["salesChannelUpdate"]["salesChannel"]
    assert updated["status"] == "OK"
    live.receiver.wait_for({"A": 15})
