"""The stock ledger: one movement per stock per change, append-only, readable newest first."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from domain.models import OrderType, Role
from domain.services import orders
from tests.conftest import Api
from tests.factories import ADMIN, gid, shop

pytestmark = pytest.mark.anyio

MOVEMENTS = """query($variant: ID, $warehouse: ID, $types: [StockMovementType!], $first: Int,
                     $after: String) {
  stockMovements(variantId: $variant, warehouseId: $warehouse, types: $types, first: $first,
                 after: $after) {
    edges { cursor node { id type quantityChange allocatedChange quantityAfter allocatedAfter
                          reason actor createdAt order { id } variant { id } warehouse { id } } }
    pageInfo { hasNextPage endCursor } } }"""


async def movements(api: Api, **variables: Any) -> list[dict[str, Any]]:
    data = await api.gql(MOVEMENTS, variables)
    return [e["node"] for e in data["stockMovements"]["edges"]]


def brief(nodes: list[dict[str, Any]]) -> list[tuple[str, int, int, int, int]]:
    return [(n["type"], n["quantityChange"], n["allocatedChange"], n["quantityAfter"],
             n["allocatedAfter"]) for n in nodes]


async def test_creating_a_stock_records_one_stock_update_of_its_quantity(api: Api) -> None:
    s = shop(api.db, stock1=9, stock2=0)

    nodes = await movements(api, variant=gid("ProductVariant", s.variant))

    assert brief(nodes) == [("STOCK_UPDATE", 9, 0, 9, 0)]
    assert nodes[0]["warehouse"]["id"] == gid("Warehouse", s.w1)
    assert nodes[0]["actor"] == "admin:0"
    assert nodes[0]["createdAt"].endswith("+00:00")


async def test_order_lifecycle_is_written_to_the_ledger_newest_first(api: Api) -> None:
    s = shop(api.db, stock1=3, stock2=5)
    view = orders.create(api.db.uow(), ADMIN, type=OrderType.REGULAR, shipping_country="DE",
                         lines=[orders.LineRequest(s.variant, 4)])
    line = view.lines[0].id

    orders.fulfill(api.db.uow(), ADMIN, view.id, [orders.FulfillRequest(line, 3)])
    orders.cancel(api.db.uow(), ADMIN, view.id)
    nodes = await movements(api, variant=gid("ProductVariant", s.variant))

    assert brief(nodes) == [
        ("DEALLOCATION", 0, -1, 5, 0),   # cancel releases what is left (w2)
        ("FULFILLMENT", -3, -3, 0, 0),   # 3 shipped from w1
        ("ALLOCATION", 0, 1, 5, 1),      # the order took 3 from w1, 1 from w2
        ("ALLOCATION", 0, 3, 3, 3),
        ("STOCK_UPDATE", 5, 0, 5, 0),
        ("STOCK_UPDATE", 3, 0, 3, 0),
    ]
    assert {n["order"]["id"] for n in nodes[:4]} == {gid("Order", view.id)}
    assert [n["reason"] for n in nodes[:4]] == [
        "order canceled", "order fulfilled", "order created", "order created"]


async def test_setting_stock_records_the_delta(api: Api) -> None:
    s = shop(api.db, stock1=10)

    s.world.set_stock(s.variant, {s.w1: 4})
    nodes = await movements(api, warehouse=gid("Warehouse", s.w1))

    assert brief(nodes)[0] == ("STOCK_UPDATE", -6, 0, 4, 0)


async def test_line_edits_record_allocation_and_deallocation(api: Api) -> None:
    s = shop(api.db, stock1=10)
    view = orders.create(api.db.uow(), ADMIN, type=OrderType.DRAFT, shipping_country="DE",
                         lines=[orders.LineRequest(s.variant, 2)])

    orders.update_line(api.db.uow(), ADMIN, view.lines[0].id, 5)
    orders.update_line(api.db.uow(), ADMIN, view.lines[0].id, 1)
    nodes = await movements(api, types=["ALLOCATION", "DEALLOCATION"])

    assert brief(nodes) == [("DEALLOCATION", 0, -4, 10, 1), ("ALLOCATION", 0, 3, 10, 5),
                            ("ALLOCATION", 0, 2, 10, 2)]


async def test_failed_operations_record_nothing(api: Api) -> None:
    s = shop(api.db, stock1=1)
    before = api.db.scalar("SELECT COUNT(*) FROM stock_movement")

    with pytest.raises(Exception, match="available"):
        orders.create(api.db.uow(), ADMIN, type=OrderType.REGULAR, shipping_country="DE",
                      lines=[orders.LineRequest(s.variant, 2)])

    assert api.db.scalar("SELECT COUNT(*) FROM stock_movement") == before


async def test_movements_page_with_cursors(api: Api) -> None:
    s = shop(api.db, stock1=1)
    for q in range(2, 7):
        s.world.set_stock(s.variant, {s.w1: q})

    first = await api.gql(MOVEMENTS, {"first": 2})
    after = first["stockMovements"]["pageInfo"]["endCursor"]
    rest = await api.gql(MOVEMENTS, {"first": 10, "after": after})

    assert first["stockMovements"]["pageInfo"]["hasNextPage"] is True
    quantities = [e["node"]["quantityAfter"] for e in first["stockMovements"]["edges"]] + [
        e["node"]["quantityAfter"] for e in rest["stockMovements"]["edges"]]
    assert quantities == [6, 5, 4, 3, 2, 1]
    assert rest["stockMovements"]["pageInfo"]["hasNextPage"] is False


async def test_movement_is_a_node(api: Api) -> None:
    s = shop(api.db, stock1=2)
    [movement] = await movements(api, variant=gid("ProductVariant", s.variant))

    data = await api.gql("query($id: ID!) { node(id: $id) { ... on StockMovement { type } } }",
                         {"id": movement["id"]})

    assert data["node"] == {"type": "STOCK_UPDATE"}


async def test_the_ledger_needs_an_admin_or_seller_token(api: Api) -> None:
    s = shop(api.db, stock1=2)
    storefront = api.token(Role.STOREFRONT)
    other_seller = api.token(Role.SELLER, s.world.seller())
    own_seller = api.token(Role.SELLER, s.seller)

    anonymous = (await api.post(MOVEMENTS, {}, token=None)).json()
    as_storefront = (await api.post(MOVEMENTS, {}, token=storefront)).json()
    foreign = await api.gql(MOVEMENTS, {}, token=other_seller)
    own = await api.gql(MOVEMENTS, {}, token=own_seller)

    assert anonymous["errors"][0]["extensions"]["code"] == "PERMISSION_DENIED"
    assert as_storefront["errors"][0]["extensions"]["code"] == "PERMISSION_DENIED"
    assert foreign["stockMovements"]["edges"] == []
    assert len(own["stockMovements"]["edges"]) == 1


@pytest.mark.parametrize("statement", ["UPDATE stock_movement SET quantity_change = 0",
                                       "DELETE FROM stock_movement"])
async def test_the_database_refuses_to_change_the_ledger(api: Api, statement: str) -> None:
    shop(api.db, stock1=2)

    with pytest.raises(DBAPIError, match="append-only"), api.db.engine.begin() as conn:
        conn.execute(text(statement))

    assert api.db.scalar("SELECT COUNT(*) FROM stock_movement") == 1
