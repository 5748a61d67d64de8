"""An external supplier posting its figures (API.md "Supplier feeds"): `POST /feeds/{feedId}`
signed with the feed's secret sets the listed SKUs' items (FEED_IMPORT), reports unknown
SKUs, and 404 / 401 / 422 / 409 answers change nothing."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from domain import signing
from domain.services import feeds
from tests.conftest import Api, Database
from tests.factories import ADMIN, World, gid, shop

pytestmark = pytest.mark.anyio

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


async def _post(api: Api, feed: str, body: Any, *, secret: str = SECRET,
                headers: dict[str, str] | None = None) -> httpx.Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    signed = signing.headers(secret, raw) if headers is None else headers
    return await api.client.post(f"/feeds/{quote(feed, safe='')}", content=raw,
                                 headers={"content-type": "application/json", **signed})


def _state(db: Database) -> tuple[Any, ...]:
    return (db.scalar("SELECT count(*) FROM stock_movement"),
            db.scalar("SELECT sum(quantity) FROM stock"),
            db.scalar("SELECT count(*) FROM supplier_feed_item WHERE supplier_quantity IS NULL"))


async def test_a_signed_post_sets_the_listed_items_and_reports_unknown_skus(
        api: Api, db: Database) -> None:
    s = shop(db, stock1=0)
    world = World(db)
    tent, stove = world.variant(s.product, sku="M-TENT"), world.variant(s.product, sku="M-STOVE")
    feed, _ = feeds.create(db.uow(), ADMIN, warehouse_id=s.w2, name="Outdoor Co",
                           secret=SECRET)
    feeds.upsert_items(db.uow(), ADMIN, feed.id, [feeds.ItemInput(tent, "OC-TENT"),
                                                  feeds.ItemInput(stove, "OC-STOVE")])
    answer = await _post(api, gid("SupplierFeed", feed.id), {"items": [
        {"sku": "OC-TENT", "quantity": 7}, {"sku": "OC-MYSTERY", "quantity": 3}]})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"unmatched": ["OC-MYSTERY"]}
    level = "SELECT quantity FROM stock WHERE variant_id = :v AND warehouse_id = :w"
    assert db.scalar(level, v=tent, w=s.w2) == 7
    assert db.scalar(level, v=stove, w=s.w2) is None  # not listed: untouched
    assert [tuple(r) for r in db.rows(
        "SELECT type, reason, quantity_change FROM stock_movement WHERE variant_id = :v",
        v=tent)] == [("FEED_IMPORT", "Outdoor Co", 7)]

    again = await _post(api, gid("SupplierFeed", feed.id),
                        {"items": [{"sku": "OC-TENT", "quantity": 2}]})
    assert again.status_code == 200 and db.scalar(level, v=tent, w=s.w2) == 2


async def test_refusals_change_nothing(api: Api, db: Database) -> None:
    s = shop(db, stock1=0)
    tent = World(db).variant(s.product, sku="M-TENT")
    feed, _ = feeds.create(db.uow(), ADMIN, warehouse_id=s.w2, name="Outdoor Co",
                           secret=SECRET)
    feeds.upsert_items(db.uow(), ADMIN, feed.id, [feeds.ItemInput(tent, "OC-TENT")])
    internal, _ = feeds.create(db.uow(), ADMIN, warehouse_id=s.w1, name="internal",
                               supplier_seller_id=shop(db).seller)
    good = {"items": [{"sku": "OC-TENT", "quantity": 7}]}
    feed_id = gid("SupplierFeed", feed.id)
    before = _state(db)
    assert (await _post(api, gid("SupplierFeed", 999), good)).status_code == 404
    assert (await _post(api, "not-an-id", good)).status_code == 404
    assert (await _post(api, gid("SupplierFeed", internal.id), good)).status_code == 404
    assert (await _post(api, feed_id, good, secret=signing.new_secret())).status_code == 401
    assert (await _post(api, feed_id, good, headers={})).status_code == 401
    for bad in [b"not json", [], {"items": {}}, {"items": [{"sku": "OC-TENT"}]},
                {"items": [{"sku": "OC-TENT", "quantity": -1}]},
                {"items": [{"sku": "", "quantity": 1}]},
                {"items": [{"sku": "OC-TENT", "quantity": True}]}]:
        answer = await _post(api, feed_id, bad)
        assert answer.status_code == 422, (bad, answer.text)
        assert answer.json()["errors"][0]["code"] == "INVALID"
    feeds.update(db.uow(), ADMIN, feed.id, feeds.FeedInput(paused=True))
    paused = await _post(api, feed_id, good)
    assert paused.status_code == 409 and paused.json()["errors"][0]["code"] == "INVALID_STATE"
    assert _state(db) == before
