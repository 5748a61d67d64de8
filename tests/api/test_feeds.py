"""Supplier feeds over HTTP (API.md "Supplier feeds"): create (internal: admin only;
external: a seller's own warehouse), items filled at once, supplierQuantity and shortfall,
pause, delete, and typed errors that change nothing. Following a supplier's changes:
tests/sync/test_feeds.py."""

from __future__ import annotations

from typing import Any

import pytest

from domain.models import OrderType, Role
from domain.services import orders
from tests.conftest import Api, Database
from tests.factories import ADMIN, World, gid, shop

pytestmark = pytest.mark.anyio

FEED = ("id name status lastError lastSyncedAt warehouse { id } supplier { id } "
        "items { edges { node { supplierSku supplierQuantity shortfall variant { id } } } }")
CREATE = f"""mutation($input: SupplierFeedCreateInput!) {{ supplierFeedCreate(input: $input) {{
  supplierFeed {{ {FEED} }} secret errors {{ code field message }} }} }}"""
UPDATE = f"""mutation($id: ID!, $input: SupplierFeedUpdateInput!) {{
  supplierFeedUpdate(id: $id, input: $input) {{ supplierFeed {{ {FEED} }}
  errors {{ code field message }} }} }}"""
ITEMS = f"""mutation($feedId: ID!, $items: [SupplierFeedItemInput!]!) {{
  supplierFeedItemsUpsert(feedId: $feedId, items: $items) {{ supplierFeed {{ {FEED} }}
  errors {{ code field message }} }} }}"""
DELETE = """mutation($id: ID!) { supplierFeedDelete(id: $id) { errors { code field } } }"""
NODE = f"query($id: ID!) {{ node(id: $id) {{ ... on SupplierFeed {{ {FEED} }} }} }}"


def _sku(db: Database, variant: int) -> str:
    return str(db.scalar("SELECT sku FROM product_variant WHERE id = :v", v=variant))


async def _create(api: Api, token: str | None = "admin", **fields: Any) -> dict[str, Any]:
    return (await api.gql(CREATE, {"input": fields}, token))["supplierFeedCreate"]  # type: ignore[no-any-return]


async def test_an_internal_feed_fills_a_new_item_at_once(api: Api, db: Database) -> None:
    supplier, merchant = shop(db, stock1=6, stock2=2), shop(db)
    tent = World(db).variant(merchant.product, sku="M-TENT")
    created = await _create(api, warehouseId=gid("Warehouse", merchant.w2), name="Acme",
                            supplierSellerId=gid("Seller", supplier.seller))
    assert created["errors"] == [] and created["secret"].startswith("whsec_")
    feed = created["supplierFeed"]
    assert (feed["status"], feed["supplier"], feed["warehouse"], feed["items"]["edges"]) == (
        "OK", {"id": gid("Seller", supplier.seller)}, {"id": gid("Warehouse", merchant.w2)},
        [])
    filled = (await api.gql(ITEMS, {"feedId": feed["id"], "items": [
        {"variantId": gid("ProductVariant", tent),
         "supplierSku": _sku(db, supplier.variant)}]}))["supplierFeedItemsUpsert"]
    assert filled["errors"] == []
    [item] = [e["node"] for e in filled["supplierFeed"]["items"]["edges"]]
    assert item == {"supplierSku": _sku(db, supplier.variant), "supplierQuantity": 8,
                    "shortfall": 0, "variant": {"id": gid("ProductVariant", tent)}}
    assert filled["supplierFeed"]["lastSyncedAt"] is not None
    assert db.scalar("SELECT quantity FROM stock WHERE variant_id = :v AND warehouse_id = :w",
                     v=tent, w=merchant.w2) == 8

    # merchant orders hold 5 there; the supplier's figure then drops to 1: shortfall 4
    orders.create(db.uow(), ADMIN, type=OrderType.REGULAR, shipping_country="DE",
                  lines=[orders.LineRequest(tent, 5)])
    orders.create(db.uow(), ADMIN, type=OrderType.REGULAR, shipping_country="DE",
                  lines=[orders.LineRequest(supplier.variant, 7)])
    await api.gql(UPDATE, {"id": feed["id"], "input": {"paused": True}})
    resumed = (await api.gql(UPDATE, {"id": feed["id"], "input": {"paused": False}})
               )["supplierFeedUpdate"]["supplierFeed"]  # resuming fills again
    [item] = [e["node"] for e in resumed["items"]["edges"]]
    assert (item["supplierQuantity"], item["shortfall"]) == (1, 4)
    assert resumed["status"] == "OK"


async def test_a_seller_makes_external_feeds_into_its_own_warehouses_only(
        api: Api, db: Database) -> None:
    mine, other = shop(db), shop(db)
    token = api.token(Role.SELLER, mine.seller)
    own = await _create(api, token, warehouseId=gid("Warehouse", mine.w1), name="Dropship",
                        secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    assert own["errors"] == [] and own["supplierFeed"]["supplier"] is None
    before = db.scalar("SELECT count(*) FROM supplier_feed")
    foreign = await _create(api, token, warehouseId=gid("Warehouse", other.w1), name="x")
    assert [(e["code"], e["field"]) for e in foreign["errors"]] == [
        ("NOT_FOUND", "input.warehouseId")]
    internal = await _create(api, token, warehouseId=gid("Warehouse", mine.w1), name="x",
                             supplierSellerId=gid("Seller", other.seller))
    assert [e["code"] for e in internal["errors"]] == ["PERMISSION_DENIED"]
    for fields, field in [({"name": ""}, "input.name"), ({"secret": "nope"}, "input.secret")]:
        bad = await _create(api, token, **{"warehouseId": gid("Warehouse", mine.w1),
                                           "name": "ok", **fields})
        assert [(e["code"], e["field"]) for e in bad["errors"]] == [("INVALID", field)]
    loop = await _create(api, warehouseId=gid("Warehouse", mine.w1), name="loop",
                         supplierSellerId=gid("Seller", mine.seller))
    assert [(e["code"], e["field"]) for e in loop["errors"]] == [
        ("INVALID", "input.supplierSellerId")]
    assert db.scalar("SELECT count(*) FROM supplier_feed") == before
    # another seller sees nothing of it
    feed_id = own["supplierFeed"]["id"]
    theirs = api.token(Role.SELLER, other.seller)
    assert (await api.gql(NODE, {"id": feed_id}, theirs))["node"] is None
    hidden = (await api.gql(DELETE, {"id": feed_id}, theirs))["supplierFeedDelete"]
    assert [e["code"] for e in hidden["errors"]] == ["NOT_FOUND"]
    # items must be the merchant's variants
    wrong = (await api.gql(ITEMS, {"feedId": feed_id, "items": [
        {"variantId": gid("ProductVariant", other.variant), "supplierSku": "S"}]}, token)
             )["supplierFeedItemsUpsert"]
    assert [(e["code"], e["field"]) for e in wrong["errors"]] == [
        ("NOT_FOUND", "items.0.variantId")]
    gone = (await api.gql(DELETE, {"id": feed_id}, token))["supplierFeedDelete"]
    assert gone == {"errors": []}
    assert (await api.gql(NODE, {"id": feed_id}))["node"] is None
