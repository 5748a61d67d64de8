"""Purchase orders: ordered units show as incoming, received units join on-hand via the ledger."""

from __future__ import annotations

from typing import Any

import pytest

from domain.models import Role
from tests.api.test_ledger import brief, movements
from tests.api.test_stock_operations import (
    ERROR_FIELDS,
    UNKNOWN,
    actor,
    allocate,
    codes,
    snapshot,
    variant_stocks,
)
from tests.conftest import Api
from tests.factories import OUTSIDERS, REFUSAL, Shop, gid, outsider_token, shop

pytestmark = pytest.mark.anyio

PO_FIELDS = "id warehouse { id } lines { variant { id } quantity quantityReceived }"

PO_CREATE = f"""mutation($input: PurchaseOrderCreateInput!) {{
  purchaseOrderCreate(input: $input) {{
    purchaseOrder {{ {PO_FIELDS} }} errors {{ {ERROR_FIELDS} }} }} }}"""

PO_RECEIVE = f"""mutation($id: ID!, $lines: [PurchaseOrderLineInput!]!) {{
  purchaseOrderReceive(id: $id, lines: $lines) {{
    purchaseOrder {{ {PO_FIELDS} }} errors {{ {ERROR_FIELDS} }} }} }}"""


def failure(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """The errors of a payload that holds no purchase order."""
    assert payload["purchaseOrder"] is None
    return payload["errors"]  # type: ignore[no-any-return]


def state(api: Api) -> tuple[Any, ...]:
    """Stocks, ledger length and every purchase order line's figures."""
    lines = [tuple(int(c) for c in r) for r in api.db.rows(
        "SELECT purchase_order_id, variant_id, quantity, quantity_received "
        "FROM purchase_order_line ORDER BY id")]
    return snapshot(api), lines, api.db.scalar("SELECT COUNT(*) FROM purchase_order")


def line(variant: int, quantity: int) -> dict[str, Any]:
    return {"variantId": gid("ProductVariant", variant), "quantity": quantity}


async def create(api: Api, warehouse: int, lines: list[dict[str, Any]],
                 token: str | None = "admin") -> dict[str, Any]:
    data = await api.gql(PO_CREATE, {"input": {"warehouseId": gid("Warehouse", warehouse),
                                               "lines": lines}}, token=token)
    return data["purchaseOrderCreate"]  # type: ignore[no-any-return]


async def create_ok(api: Api, warehouse: int, lines: list[dict[str, Any]]) -> str:
    payload = await create(api, warehouse, lines)
    assert payload["errors"] == []
    return payload["purchaseOrder"]["id"]  # type: ignore[no-any-return]


async def receive(api: Api, po: str, lines: list[dict[str, Any]],
                  token: str | None = "admin") -> dict[str, Any]:
    data = await api.gql(PO_RECEIVE, {"id": po, "lines": lines}, token=token)
    return data["purchaseOrderReceive"]  # type: ignore[no-any-return]


async def incoming(api: Api, s: Shop, variant: int | None = None) -> dict[int, int]:
    stocks = await variant_stocks(api, s.variant if variant is None else variant)
    return {w: stocks[gid("Warehouse", w)]["quantityIncoming"]
            for w in (s.w1, s.w2) if gid("Warehouse", w) in stocks}


# --- purchaseOrderCreate ----------------------------------------------------------------------

async def test_ordered_units_show_as_incoming_without_touching_on_hand(api: Api) -> None:
    s = shop(api.db, stock1=10, stock2=1)
    before = snapshot(api)

    payload = await create(api, s.w1, [line(s.variant, 5)])

    assert payload["errors"] == []
    assert payload["purchaseOrder"]["warehouse"] == {"id": gid("Warehouse", s.w1)}
    assert payload["purchaseOrder"]["lines"] == [{
        "variant": {"id": gid("ProductVariant", s.variant)}, "quantity": 5,
        "quantityReceived": 0}]
    assert await incoming(api, s) == {s.w1: 5, s.w2: 0}
    assert snapshot(api) == before


async def test_nothing_is_incoming_without_purchase_orders(api: Api) -> None:
    s = shop(api.db, stock1=10, stock2=1)

    shown = await incoming(api, s)

    assert shown == {s.w1: 0, s.w2: 0}


async def test_two_lines_of_one_variant_become_one_purchase_order_line(api: Api) -> None:
    s = shop(api.db, stock1=10)

    payload = await create(api, s.w1, [line(s.variant, 3), line(s.variant, 4)])

    assert payload["errors"] == []
    assert payload["purchaseOrder"]["lines"] == [{
        "variant": {"id": gid("ProductVariant", s.variant)}, "quantity": 7,
        "quantityReceived": 0}]
    assert await incoming(api, s) == {s.w1: 7, s.w2: 0}


async def test_incoming_sums_the_open_purchase_orders_of_each_warehouse(api: Api) -> None:
    s = shop(api.db, stock1=10, stock2=0)

    await create_ok(api, s.w1, [line(s.variant, 5)])
    await create_ok(api, s.w1, [line(s.variant, 2)])
    await create_ok(api, s.w2, [line(s.variant, 9)])

    assert await incoming(api, s) == {s.w1: 7, s.w2: 9}


async def test_a_million_units_may_be_ordered_on_one_line(api: Api) -> None:
    s = shop(api.db, stock1=10)

    payload = await create(api, s.w1, [line(s.variant, 1_000_000)])

    assert payload["errors"] == []
    assert await incoming(api, s) == {s.w1: 1_000_000, s.w2: 0}


@pytest.mark.parametrize("quantity", [0, -1, 1_000_001])
async def test_ordering_a_quantity_outside_one_to_a_million_is_invalid(
    api: Api, quantity: int,
) -> None:
    s = shop(api.db, stock1=10)
    before = state(api)

    payload = await create(api, s.w1, [line(s.variant, 1), line(s.variant, quantity)])

    assert codes(failure(payload)) == [("INVALID", "lines.1.quantity")]
    assert state(api) == before


async def test_a_purchase_order_without_lines_is_invalid(api: Api) -> None:
    s = shop(api.db, stock1=10)
    before = state(api)

    payload = await create(api, s.w1, [])

    assert [e["code"] for e in failure(payload)] == ["INVALID"]
    assert state(api) == before


async def test_ordering_another_sellers_variant_is_invalid(api: Api) -> None:
    s = shop(api.db, stock1=10)
    other = shop(api.db, stock1=10)
    before = state(api)

    payload = await create(api, s.w1, [line(s.variant, 1), line(other.variant, 2)])

    assert codes(failure(payload)) == [("INVALID", "lines.1.variantId")]
    assert state(api) == before


@pytest.mark.parametrize("what", ["warehouse", "variant", "malformed variant"])
async def test_a_purchase_order_naming_a_bad_id_fails_and_creates_nothing(
    api: Api, what: str,
) -> None:
    s = shop(api.db, stock1=10)
    before = state(api)
    warehouse_id, variant_id, expected = {
        "warehouse": (gid("Warehouse", UNKNOWN), gid("ProductVariant", s.variant),
                      ("NOT_FOUND", "input.warehouseId")),
        "variant": (gid("Warehouse", s.w1), gid("ProductVariant", UNKNOWN),
                    ("NOT_FOUND", "lines.0.variantId")),
        "malformed variant": (gid("Warehouse", s.w1), "%%%", ("INVALID", "lines.0.variantId")),
    }[what]

    data = await api.gql(PO_CREATE, {"input": {
        "warehouseId": warehouse_id, "lines": [{"variantId": variant_id, "quantity": 1}]}})
    payload = data["purchaseOrderCreate"]

    assert codes(failure(payload)) == [expected]
    assert state(api) == before


@pytest.mark.parametrize("who", OUTSIDERS)
async def test_creating_a_purchase_order_without_the_right_token_is_refused(
    api: Api, who: str,
) -> None:
    s = shop(api.db, stock1=10)
    token = outsider_token(api, s, who)
    before = state(api)

    payload = await create(api, s.w1, [line(s.variant, 1)], token=token)

    assert [e["code"] for e in failure(payload)] == [REFUSAL[who]]
    assert state(api) == before


async def test_purchase_order_is_a_node(api: Api) -> None:
    s = shop(api.db, stock1=10)
    po = await create_ok(api, s.w2, [line(s.variant, 3)])

    data = await api.gql("query($id: ID!) { node(id: $id) { ... on PurchaseOrder { "
                         f"{PO_FIELDS} }} }} }}", {"id": po})

    assert data["node"] == {"id": po, "warehouse": {"id": gid("Warehouse", s.w2)}, "lines": [
        {"variant": {"id": gid("ProductVariant", s.variant)}, "quantity": 3,
         "quantityReceived": 0}]}


# --- purchaseOrderReceive ---------------------------------------------------------------------

async def test_partial_receipts_add_to_on_hand_and_shrink_incoming(api: Api) -> None:
    s = shop(api.db, stock1=10)
    po = await create_ok(api, s.w1, [line(s.variant, 10)])

    first = await receive(api, po, [line(s.variant, 4)])
    after_first = (s.world.stock(s.variant, s.w1), await incoming(api, s))
    second = await receive(api, po, [line(s.variant, 6)])
    nodes = await movements(api, warehouse=gid("Warehouse", s.w1))

    assert first["errors"] == []
    assert first["purchaseOrder"]["lines"] == [{
        "variant": {"id": gid("ProductVariant", s.variant)}, "quantity": 10,
        "quantityReceived": 4}]
    assert after_first == ((14, 0), {s.w1: 6, s.w2: 0})
    assert second["errors"] == []
    assert second["purchaseOrder"]["lines"][0]["quantityReceived"] == 10
    assert s.world.stock(s.variant, s.w1) == (20, 0)
    assert await incoming(api, s) == {s.w1: 0, s.w2: 0}
    assert brief(nodes) == [("PURCHASE_RECEIVING", 6, 0, 20, 0),
                            ("PURCHASE_RECEIVING", 4, 0, 14, 0),
                            ("STOCK_UPDATE", 10, 0, 10, 0)]
    assert {n["actor"] for n in nodes[:2]} == {actor(api)}


async def test_receiving_keeps_allocations_in_the_recorded_levels(api: Api) -> None:
    s = shop(api.db, stock1=10)
    allocate(s, 6)
    po = await create_ok(api, s.w1, [line(s.variant, 5)])

    payload = await receive(api, po, [line(s.variant, 5)])
    nodes = await movements(api, types=["PURCHASE_RECEIVING"])

    assert payload["errors"] == []
    assert s.world.stock(s.variant, s.w1) == (15, 6)
    assert brief(nodes) == [("PURCHASE_RECEIVING", 5, 0, 15, 6)]


async def test_one_receipt_records_one_movement_per_stock(api: Api) -> None:
    s = shop(api.db, stock1=10)
    second = s.world.variant(s.product, stocks={s.w1: 1})
    po = await create_ok(api, s.w1, [line(s.variant, 8), line(second, 8)])

    payload = await receive(api, po, [line(s.variant, 2), line(second, 4), line(s.variant, 3)])
    nodes = await movements(api, types=["PURCHASE_RECEIVING"])

    assert payload["errors"] == []
    assert sorted(brief(nodes)) == [("PURCHASE_RECEIVING", 4, 0, 5, 0),
                                    ("PURCHASE_RECEIVING", 5, 0, 15, 0)]
    assert s.world.stock(s.variant, s.w1) == (15, 0)
    assert s.world.stock(second, s.w1) == (5, 0)
    assert sorted((ln["quantity"], ln["quantityReceived"])
                  for ln in payload["purchaseOrder"]["lines"]) == [(8, 4), (8, 5)]


async def test_receiving_creates_a_missing_stock_record(api: Api) -> None:
    s = shop(api.db, stock1=10)
    fresh = s.world.variant(s.product)
    po = await create_ok(api, s.w2, [line(fresh, 3)])

    payload = await receive(api, po, [line(fresh, 3)])
    nodes = await movements(api, variant=gid("ProductVariant", fresh))

    assert payload["errors"] == []
    assert s.world.stock(fresh, s.w2) == (3, 0)
    assert brief(nodes) == [("PURCHASE_RECEIVING", 3, 0, 3, 0)]
    assert await incoming(api, s, fresh) == {s.w2: 0}


async def test_receiving_more_than_is_still_open_is_invalid_and_changes_nothing(
    api: Api,
) -> None:
    s = shop(api.db, stock1=10)
    po = await create_ok(api, s.w1, [line(s.variant, 5)])
    assert (await receive(api, po, [line(s.variant, 4)]))["errors"] == []
    before = state(api)

    payload = await receive(api, po, [line(s.variant, 2)])

    assert codes(failure(payload)) == [("INVALID", "lines.0.quantity")]
    assert state(api) == before
    assert await incoming(api, s) == {s.w1: 1, s.w2: 0}


async def test_receipt_lines_of_one_variant_count_together_against_the_open_quantity(
    api: Api,
) -> None:
    s = shop(api.db, stock1=10)
    po = await create_ok(api, s.w1, [line(s.variant, 5)])
    before = state(api)

    payload = await receive(api, po, [line(s.variant, 3), line(s.variant, 3)])

    assert codes(failure(payload)) == [("INVALID", "lines.1.quantity")]
    assert state(api) == before


async def test_receiving_a_variant_not_on_the_purchase_order_applies_no_line(api: Api) -> None:
    s = shop(api.db, stock1=10)
    stranger = s.world.variant(s.product, stocks={s.w1: 1})
    po = await create_ok(api, s.w1, [line(s.variant, 5)])
    before = state(api)

    payload = await receive(api, po, [line(s.variant, 2), line(stranger, 1)])

    assert codes(failure(payload)) == [("INVALID", "lines.1.variantId")]
    assert state(api) == before


@pytest.mark.parametrize("quantity", [0, -3])
async def test_receiving_a_non_positive_quantity_is_invalid(api: Api, quantity: int) -> None:
    s = shop(api.db, stock1=10)
    po = await create_ok(api, s.w1, [line(s.variant, 5)])
    before = state(api)

    payload = await receive(api, po, [line(s.variant, quantity)])

    assert codes(failure(payload)) == [("INVALID", "lines.0.quantity")]
    assert state(api) == before


async def test_receiving_an_unknown_purchase_order_is_not_found(api: Api) -> None:
    s = shop(api.db, stock1=10)
    before = state(api)

    payload = await receive(api, gid("PurchaseOrder", UNKNOWN), [line(s.variant, 1)])

    assert [e["code"] for e in failure(payload)] == ["NOT_FOUND"]
    assert state(api) == before


@pytest.mark.parametrize("who", OUTSIDERS)
async def test_receiving_without_the_right_token_is_refused(api: Api, who: str) -> None:
    s = shop(api.db, stock1=10)
    po = await create_ok(api, s.w1, [line(s.variant, 5)])
    token = outsider_token(api, s, who)
    before = state(api)

    payload = await receive(api, po, [line(s.variant, 1)], token=token)

    assert [e["code"] for e in failure(payload)] == [REFUSAL[who]]
    assert state(api) == before


async def test_the_sellers_own_receipt_is_recorded_under_its_token(api: Api) -> None:
    s = shop(api.db, stock1=10)
    token = api.token(Role.SELLER, s.seller)
    po = (await create(api, s.w1, [line(s.variant, 5)], token=token))["purchaseOrder"]["id"]

    payload = await receive(api, po, [line(s.variant, 5)], token=token)
    nodes = await movements(api, types=["PURCHASE_RECEIVING"])

    assert payload["errors"] == []
    assert s.world.stock(s.variant, s.w1) == (15, 0)
    assert brief(nodes) == [("PURCHASE_RECEIVING", 5, 0, 15, 0)]
    assert nodes[0]["actor"] == actor(api, token)
