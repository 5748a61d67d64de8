"""Concurrent requests through the real ASGI app never oversell, deadlock or fail with a 500."""

from __future__ import annotations

import asyncio
import random
import threading
from typing import Any

import pytest

from domain.errors import InsufficientStock
from domain.models import OrderType
from domain.services import audit, orders
from tests.conftest import Api, Database
from tests.factories import ADMIN, World, gid, shop

pytestmark = pytest.mark.anyio

CREATE = """mutation($input: OrderCreateInput!) { orderCreate(input: $input) {
  order { id lines { id } } errors { code } } }"""


def assert_books_balance(db: Database) -> None:
    """For every stock: allocated == sum of live allocations, 0 <= allocated <= quantity,
    and both counters equal the sums of its ledger movements."""
    off = db.rows("""
        SELECT s.id, s.quantity, s.quantity_allocated, COALESCE(SUM(a.quantity), 0)
        FROM stock s LEFT JOIN allocation a ON a.stock_id = s.id
        GROUP BY s.id, s.quantity, s.quantity_allocated
        HAVING s.quantity_allocated != COALESCE(SUM(a.quantity), 0)
            OR s.quantity_allocated < 0 OR s.quantity_allocated > s.quantity
            OR s.quantity < 0""")
    assert off == []
    # and what `stockyard check` audits: counters == ledger sums == live allocations
    with db.reader() as session:
        assert audit.audit(session) == []


async def test_64_concurrent_orders_for_20_units_sell_exactly_20(api: Api) -> None:
    s = shop(api.db, stock1=12, stock2=8)
    variables = {"input": {"type": "REGULAR", "shippingCountry": "DE",
                           "lines": [{"variantId": gid("ProductVariant", s.variant),
                                      "quantity": 1}]}}

    responses = await asyncio.gather(*(api.post(CREATE, variables) for _ in range(64)))

    assert {r.status_code for r in responses} == {200}
    payloads = [r.json()["data"]["orderCreate"] for r in responses]
    assert sum(p["order"] is not None for p in payloads) == 20
    assert {e["code"] for p in payloads for e in p["errors"]} == {"INSUFFICIENT_STOCK"}
    assert api.db.scalar("SELECT SUM(quantity_allocated) FROM stock") == 20
    assert api.db.scalar("SELECT COUNT(*) FROM orders") == 20
    assert_books_balance(api.db)


async def test_mixed_storm_keeps_every_stock_balanced(api: Api) -> None:
    world = World(api.db)
    seller = world.seller()
    zone = world.zone(["DE"])
    warehouses = [world.warehouse(seller, [zone], priority=i) for i in range(3)]
    product = world.product(seller)
    variants = [world.variant(product, stocks={w: 8 for w in warehouses}) for _ in range(4)]
    variant_ids = [gid("ProductVariant", v) for v in variants]
    rng = random.Random(7)
    regular: list[dict[str, Any]] = []
    drafts: list[dict[str, Any]] = []
    statuses: set[int] = set()
    codes: set[str] = set()
    succeeded: dict[str, int] = {}

    async def call(query: str, variables: dict[str, Any]) -> dict[str, Any]:
        response = await api.post(query, variables)
        statuses.add(response.status_code)
        body = response.json()
        assert "errors" not in body, body
        name, payload = next(iter(body["data"].items()))
        codes.update(e["code"] for e in payload["errors"])
        if not payload["errors"]:
            succeeded[name] = succeeded.get(name, 0) + 1
        return payload  # type: ignore[no-any-return]

    async def client(seed: int) -> None:
        r = random.Random(seed)
        for _ in range(25):
            op = r.choice(["create", "create", "draft", "cancel", "fulfil", "edit", "confirm"])
            if op in ("create", "draft"):
                lines = [{"variantId": r.choice(variant_ids), "quantity": r.randint(1, 3)}
                         for _ in range(r.randint(1, 3))]
                kind = "REGULAR" if op == "create" else "DRAFT"
                p = await call(CREATE, {"input": {"type": kind, "shippingCountry": "DE",
                                                  "lines": lines}})
                if p["order"]:
                    (regular if kind == "REGULAR" else drafts).append(p["order"])
            elif op == "cancel" and (regular or drafts):
                order = r.choice(regular + drafts)
                await call("""mutation($id: ID!) { orderCancel(id: $id) { order { id }
                           errors { code } } }""", {"id": order["id"]})
            elif op == "fulfil" and regular:
                order = r.choice(regular)
                await call("""mutation($id: ID!, $lines: [OrderFulfillLineInput!]!) {
                    orderFulfill(orderId: $id, lines: $lines) { order { id } errors { code } } }""",
                           {"id": order["id"], "lines": [
                               {"orderLineId": order["lines"][0]["id"], "quantity": 1}]})
            elif op == "edit" and drafts:
                order = r.choice(drafts)
                await call("""mutation($id: ID!, $q: Int!) { orderLineUpdate(id: $id,
                    input: {quantity: $q}) { order { id } errors { code } } }""",
                           {"id": order["lines"][0]["id"], "q": r.randint(1, 5)})
            elif op == "confirm" and drafts:
                order = r.choice(drafts)
                p = await call("""mutation($id: ID!) { orderConfirm(id: $id) {
                    order { id lines { id } } errors { code } } }""", {"id": order["id"]})
                if p["order"]:
                    regular.append(p["order"])

    await asyncio.gather(*(client(rng.randrange(1 << 30)) for _ in range(16)))

    assert statuses == {200}
    assert codes <= {"INSUFFICIENT_STOCK", "INVALID_STATE", "INVALID"}
    assert set(succeeded) == {"orderCreate", "orderCancel", "orderFulfill", "orderLineUpdate",
                              "orderConfirm"}, succeeded
    assert_books_balance(api.db)


def test_threads_racing_for_the_last_units_on_postgresql(pg_db: Database) -> None:
    s = shop(pg_db, stock1=3, stock2=2)
    barrier = threading.Barrier(16)
    results: list[str] = []

    def try_to_allocate() -> None:
        barrier.wait()
        try:
            orders.create(pg_db.uow(), ADMIN, type=OrderType.REGULAR, shipping_country="DE",
                          lines=[orders.LineRequest(s.variant, 1)])
            results.append("ok")
        except InsufficientStock:
            results.append("short")

    threads = [threading.Thread(target=try_to_allocate) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert sorted(results) == ["ok"] * 5 + ["short"] * 11
    assert pg_db.scalar("SELECT SUM(quantity_allocated) FROM stock") == 5
    assert_books_balance(pg_db)
