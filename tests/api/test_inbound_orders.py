"""Orders sent in by sales channels (API.md "Inbound orders"): signed POSTs that place and
cancel REGULAR orders from the channel's warehouses, idempotent on the external id, and
refused (404, 401, 409, 422) without changing anything."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from domain import signing
from tests.conftest import Api, Database
from tests.factories import Shop, gid, shop, stocks

pytestmark = pytest.mark.anyio

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
CREATE = """mutation($input: SalesChannelCreateInput!) { salesChannelCreate(input: $input) {
  salesChannel { id } errors { code message } } }"""
UPSERT = """mutation($c: ID!, $l: [ListingInput!]!) { listingsUpsert(channelId: $c, listings: $l)
  { errors { code } } }"""
ORDER = """query($id: ID!) { node(id: $id) { ... on Order { id type status shippingCountry
  externalId channel { id name } lines { quantity variant { id }
  allocations { quantity warehouse { id } } } } } }"""


async def _channel(api: Api, s: Shop, warehouses: list[int] | None = None) -> str:
    fields: dict[str, Any] = {"sellerId": gid("Seller", s.seller), "name": "Shopify",
                              "endpointUrl": "http://127.0.0.1:9/push", "secret": SECRET,
                              "syncMode": "NONE"}
    if warehouses is not None:
        fields["warehouseIds"] = [gid("Warehouse", w) for w in warehouses]
    created = (await api.gql(CREATE, {"input": fields}))["salesChannelCreate"]
    assert created["errors"] == [], created
    return str(created["salesChannel"]["id"])


def _sku(s: Shop) -> str:
    return str(s.world.db.scalar("SELECT sku FROM product_variant WHERE id = :v", v=s.variant))


async def _send(api: Api, path: str, body: Any, *, secret: str = SECRET,
                headers: dict[str, str] | None = None) -> httpx.Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    signed = signing.headers(secret, raw) if headers is None \
        else headers
    return await api.client.post(path, content=raw,
                                 headers={"content-type": "application/json", **signed})


def _orders(channel: str) -> str:
    return f"/channels/{quote(channel, safe='')}/orders"


def _order_body(external_id: str, sku: str, quantity: int = 2, **extra: Any
                ) -> dict[str, Any]:
    return {"externalId": external_id, "shippingCountry": "DE",
            "lines": [{"sku": sku, "quantity": quantity}], **extra}


def _counts(db: Database) -> tuple[Any, ...]:
    return (db.scalar("SELECT count(*) FROM orders"), db.scalar("SELECT count(*) FROM order_line"),
            db.scalar("SELECT count(*) FROM allocation"),
            db.scalar("SELECT count(*) FROM stock_movement"),
            db.scalar("SELECT sum(quantity_allocated) FROM stock"))


async def test_a_signed_order_is_placed_once_from_the_channel(api: Api, db: Database) -> None:
    s = shop(db, stock1=10, stock2=5)
    channel = await _channel(api, s)
    answer = await _send(api, _orders(channel), _order_body("#1001", _sku(s), 3))
    assert answer.status_code == 201, answer.text
    order_id = answer.json()["orderId"]
    assert stocks(s) == ((10, 3), (5, 0))
    order = (await api.gql(ORDER, {"id": order_id}))["node"]
    assert order["type"] == "REGULAR" and order["status"] == "UNFULFILLED"
    assert order["externalId"] == "#1001"
    assert order["channel"] == {"id": channel, "name": "Shopify"}
    assert order["lines"][0]["allocations"] == [{"quantity": 3,
                                                 "warehouse": {"id": gid("Warehouse", s.w1)}}]
    actor = db.scalar("SELECT actor FROM stock_movement ORDER BY id DESC LIMIT 1")
    assert actor.startswith("channel:")

    before = _counts(db)
    again = await _send(api, _orders(channel), _order_body("#1001", _sku(s), 3))
    assert again.status_code == 200 and again.json()["orderId"] == order_id
    assert _counts(db) == before and stocks(s) == ((10, 3), (5, 0))


async def test_a_line_may_name_a_listing_of_the_channel(api: Api, db: Database) -> None:
    s = shop(db, stock1=10)
    channel = await _channel(api, s)
    assert (await api.gql(UPSERT, {"c": channel, "l": [
        {"externalId": "etsy-7", "sku": _sku(s)}, {"externalId": "etsy-8", "sku": "NOPE"}]})
            )["listingsUpsert"]["errors"] == []
    answer = await _send(api, _orders(channel), {
        "externalId": "A", "shippingCountry": "de",
        "lines": [{"externalId": "etsy-7", "quantity": 4}]})
    assert answer.status_code == 201, answer.text
    assert stocks(s) == ((10, 4), (0, 0))
    unmatched = await _send(api, _orders(channel), {
        "externalId": "B", "shippingCountry": "DE",
        "lines": [{"externalId": "etsy-8", "quantity": 1}]})
    assert unmatched.status_code == 422
    assert unmatched.json()["errors"][0]["field"] == "lines.0.externalId"


async def test_only_the_channels_warehouses_serve_it(api: Api, db: Database) -> None:
    s = shop(db, stock1=10, stock2=2)
    channel = await _channel(api, s, warehouses=[s.w2])
    short = await _send(api, _orders(channel), _order_body("X", _sku(s), 3))
    assert short.status_code == 409, short.text
    error = short.json()["errors"][0]
    assert error["code"] == "INSUFFICIENT_STOCK" and error["available"] == 2
    assert error["variantId"] == gid("ProductVariant", s.variant)
    assert stocks(s) == ((10, 0), (2, 0))
    fits = await _send(api, _orders(channel), _order_body("X", _sku(s), 2))
    assert fits.status_code == 201  # the refusal left the external id free
    assert stocks(s) == ((10, 0), (2, 2))


async def test_stock_short_or_bad_input_changes_nothing(api: Api, db: Database) -> None:
    s = shop(db, stock1=3)
    other = shop(db, stock1=50)  # another seller's variant is not this channel's
    channel = await _channel(api, s)
    path = _orders(channel)
    before = _counts(db)
    cases: list[tuple[Any, int, str | None]] = [
        (_order_body("1", _sku(s), 4), 409, "INSUFFICIENT_STOCK"),
        (_order_body("1", _sku(other), 1), 422, "NOT_FOUND"),
        (_order_body("1", "NO-SUCH-SKU", 1), 422, "NOT_FOUND"),
        (_order_body("1", _sku(s), 0), 422, "INVALID"),
        (_order_body("1", _sku(s), True), 422, "INVALID"),
        (_order_body("1", _sku(s), 1, shippingCountry="XX"), 422, "INVALID"),
        (_order_body("1", _sku(s), 1, shippingCountry="US"), 409, "NOT_AVAILABLE_IN_COUNTRY"),
        ({"externalId": "1", "shippingCountry": "DE", "lines": []}, 422, "INVALID"),
        ({"externalId": "", "shippingCountry": "DE",
          "lines": [{"sku": _sku(s), "quantity": 1}]}, 422, "INVALID"),
        ({"externalId": "1", "shippingCountry": "DE",
          "lines": [{"sku": _sku(s), "externalId": "L", "quantity": 1}]}, 422, "INVALID"),
        ({"externalId": 5, "shippingCountry": "DE", "lines": []}, 422, "INVALID"),
        ({"externalId": "1", "shippingCountry": "DE", "lines": ["x"]}, 422, "INVALID"),
        ([1, 2], 422, "INVALID"),
        (b"{not json", 422, "INVALID"),
        (b"\xff\xfe", 422, "INVALID"),
        ({"externalId": "1", "shippingCountry": "DE",
          "lines": [{"sku": _sku(s), "quantity": 1}] * 501}, 422, "INVALID"),
    ]
    for body, status, code in cases:
        answer = await _send(api, path, body)
        assert answer.status_code == status, (body, answer.text)
        assert answer.json()["errors"][0]["code"] == code, (body, answer.text)
    assert _counts(db) == before


async def test_unsigned_stale_or_foreign_requests_get_401(api: Api, db: Database) -> None:
    s = shop(db, stock1=10)
    channel = await _channel(api, s)
    path = _orders(channel)
    body = json.dumps(_order_body("1", _sku(s), 1))
    before = _counts(db)
    # whole seconds on the wire: 301 s ahead, truncated, was 300.x s ahead and within the
    # tolerance whenever a second began before the check (1 run in ~50 answered 201)
    stale = signing.headers(SECRET, body, now=time.time() - 310)
    future = signing.headers(SECRET, body, now=time.time() + 310)
    for headers in [{}, stale, future, signing.headers(signing.new_secret(), body),
                    {**signing.headers(SECRET, body), "webhook-signature": "v1,AAAA"}]:
        answer = await _send(api, path, body.encode(), headers=headers)
        assert answer.status_code == 401, answer.text
        assert answer.json()["errors"][0]["code"] == "PERMISSION_DENIED"
    tampered = signing.headers(SECRET, body)
    answer = await api.client.post(path, content=body.replace('"1"', '"2"').encode(),
                                   headers=tampered)
    assert answer.status_code == 401
    assert _counts(db) == before


async def test_unknown_channels_and_paths_get_404(api: Api, db: Database) -> None:
    s = shop(db, stock1=10)
    await _channel(api, s)
    body = _order_body("1", _sku(s), 1)
    for channel in [gid("SalesChannel", 999), gid("Warehouse", s.w1), "nonsense", "x" * 500]:
        answer = await _send(api, _orders(channel), body)
        assert answer.status_code == 404, answer.text
        assert answer.json()["errors"][0]["code"] == "NOT_FOUND"
    assert (await _send(api, "/channels/x/other", body)).status_code == 404
    assert (await api.client.get(_orders(gid("SalesChannel", 1)))).status_code == 405


async def test_cancel_releases_once_and_a_fulfilled_order_stays(api: Api, db: Database) -> None:
    s = shop(db, stock1=10)
    channel = await _channel(api, s)
    placed = await _send(api, _orders(channel), _order_body("C-1", _sku(s), 2))
    assert placed.status_code == 201
    cancel = f"{_orders(channel)}/{quote('C-1', safe='')}/cancel"
    answer = await _send(api, cancel, {})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"orderId": placed.json()["orderId"], "status": "CANCELED"}
    assert stocks(s) == ((10, 0), (0, 0))
    before = _counts(db)
    again = await _send(api, cancel, {})
    assert again.status_code == 200 and _counts(db) == before
    assert (await _send(api, f"{_orders(channel)}/C-2/cancel", {})).status_code == 404
    assert (await _send(api, cancel, {}, secret=signing.new_secret())).status_code == 401

    # a fulfilled order cannot be canceled: 409 INVALID_STATE
    shipped = await _send(api, _orders(channel), _order_body("C/3", _sku(s), 1))
    order = (await api.gql(ORDER, {"id": shipped.json()["orderId"]}))["node"]
    line = db.scalar("SELECT id FROM order_line ORDER BY id DESC LIMIT 1")
    fulfilled = await api.gql("""mutation($o: ID!, $l: ID!) { orderFulfill(orderId: $o,
      lines: [{orderLineId: $l, quantity: 1}]) { errors { code } } }""",
                              {"o": order["id"], "l": gid("OrderLine", line)})
    assert fulfilled["orderFulfill"]["errors"] == []
    refused = await _send(api, f"{_orders(channel)}/{quote('C/3', safe='')}/cancel", {})
    assert refused.status_code == 409, refused.text
    assert refused.json()["errors"][0]["code"] == "INVALID_STATE"


async def test_the_same_order_sent_at_once_is_placed_once(api: Api, db: Database) -> None:
    s = shop(db, stock1=100)
    channel = await _channel(api, s)
    answers = await asyncio.gather(*[
        _send(api, _orders(channel), _order_body("same", _sku(s), 5)) for _ in range(6)])
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] * 5 + [201], [a.text for a in answers]
    assert len({a.json()["orderId"] for a in answers}) == 1
    assert stocks(s) == ((100, 5), (0, 0))
    assert db.scalar("SELECT count(*) FROM orders") == 1
