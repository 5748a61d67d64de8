"""Pick batches (API.md, "Pick batches (order reserve and batch reserve)"): a batch of one
warehouse holds the units its orders have allocated there (the batch reserve) until it is
completed (one BATCH_PICK movement per stock, one fulfilment per order) or canceled (the
units go back to the order reserve). Black-box, over GraphQL only."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from domain.models import Role
from tests.api.order_calls import ERRORS, ORDER_PAYLOAD, cancel, placed, reread
from tests.conftest import Api
from tests.factories import Shop, gid, id_mutation, input_mutation, shop

pytestmark = pytest.mark.anyio

UNKNOWN = 999_999

BATCH = """id status warehouse { id } createdAt completedAt canceledAt
           orders { id status } lines { orderLine { id } quantity }"""
FULFILLMENTS = "fulfillments { id lines { orderLine { id } warehouse { id } quantity } }"
BATCH_CREATE = input_mutation("pickBatchCreate", f"pickBatch {{ {BATCH} }} {ERRORS}")
BATCH_COMPLETE = id_mutation("pickBatchComplete",
                             f"pickBatch {{ {BATCH} }} {FULFILLMENTS} {ERRORS}")
BATCH_CANCEL = id_mutation("pickBatchCancel", f"pickBatch {{ {BATCH} }} {ERRORS}")
BATCHES = """query($warehouseId: ID, $status: PickBatchStatus, $first: Int, $after: String) {
  pickBatches(warehouseId: $warehouseId, status: $status, first: $first, after: $after) {
    edges { cursor node { id status warehouse { id } } }
    pageInfo { hasNextPage endCursor } } }"""
BATCH_NODE = f"query($id: ID!) {{ node(id: $id) {{ __typename ... on PickBatch {{ {BATCH} }} }} }}"
FIGURES = """query($id: ID!) { node(id: $id) { ... on ProductVariant {
  quantityAvailable
  stocks { warehouse { id } quantity quantityAllocated quantityAvailable
           quantityReservedForOrders quantityReservedForBatches } } } }"""
MOVEMENTS = """query($variant: ID) { stockMovements(variantId: $variant, first: 100) {
  edges { node { id type quantityChange allocatedChange quantityAfter allocatedAfter
                 reason actor order { id } warehouse { id } } } } }"""
ORDERS = """query { orders(first: 100) { edges { node {
  id status lines { id quantityFulfilled allocations { warehouse { id } quantity } } } } } }"""
ORDER_FULFILL = f"""
mutation($orderId: ID!, $lines: [OrderFulfillLineInput!]!) {{
  orderFulfill(orderId: $orderId, lines: $lines) {{
    {ORDER_PAYLOAD}
    fulfillment {{ id lines {{ orderLine {{ id }} warehouse {{ id }} quantity }} }}
  }}
}}"""

Figures = tuple[int, int, int, int, int]  # quantity, allocated, available, for orders, batches


def wh(pk: int) -> str:
    return gid("Warehouse", pk)


# ------------------------------------------------------------------------------ helpers

async def create(api: Api, warehouse: int | str, orders: Sequence[dict[str, Any] | str],
                 token: str | None = "admin") -> dict[str, Any]:
    """The pickBatchCreate payload (orders: Order payloads or ids)."""
    warehouse_id = wh(warehouse) if isinstance(warehouse, int) else warehouse
    order_ids = [o if isinstance(o, str) else o["id"] for o in orders]
    data = await api.gql(BATCH_CREATE, {"input": {"warehouseId": warehouse_id,
                                                  "orderIds": order_ids}}, token=token)
    return data["pickBatchCreate"]  # type: ignore[no-any-return]


async def batched(api: Api, warehouse: int, orders: list[dict[str, Any]],
                  token: str | None = "admin") -> dict[str, Any]:
    """A new batch that must succeed."""
    payload = await create(api, warehouse, orders, token)
    assert payload["errors"] == [], payload
    assert payload["pickBatch"] is not None
    return payload["pickBatch"]  # type: ignore[no-any-return]


async def complete(api: Api, batch_id: str, token: str | None = "admin") -> dict[str, Any]:
    data = await api.gql(BATCH_COMPLETE, {"id": batch_id}, token=token)
    return data["pickBatchComplete"]  # type: ignore[no-any-return]


async def cancel_batch(api: Api, batch_id: str, token: str | None = "admin") -> dict[str, Any]:
    data = await api.gql(BATCH_CANCEL, {"id": batch_id}, token=token)
    return data["pickBatchCancel"]  # type: ignore[no-any-return]


async def read_batch(api: Api, batch_id: str, token: str | None = "admin") -> Any:
    return (await api.gql(BATCH_NODE, {"id": batch_id}, token=token))["node"]


async def listed(api: Api, token: str | None = "admin", **variables: Any) -> list[str]:
    data = await api.gql(BATCHES, variables, token=token)
    return [e["node"]["id"] for e in data["pickBatches"]["edges"]]


async def fulfil(api: Api, order: dict[str, Any], lines: list[tuple[int, int, int | None]]
                 ) -> dict[str, Any]:
    """orderFulfill with (line index, quantity, warehouse pk or None) triples."""
    data = await api.gql(ORDER_FULFILL, {"orderId": order["id"], "lines": [
        {"orderLineId": order["lines"][i]["id"], "quantity": q,
         "warehouseId": wh(w) if w is not None else None}
        for i, q, w in lines]})
    return data["orderFulfill"]  # type: ignore[no-any-return]


async def figures(api: Api, s: Shop, variant: int | None = None
                  ) -> tuple[Figures | None, Figures | None]:
    """(quantity, allocated, available, reserved for orders, reserved for batches) of the
    variant in w1 and in w2 (None: no stock record there); checks on the way that the two
    reserves add up to allocated and that the variant's quantityAvailable is the sum of its
    stocks' available."""
    v = s.variant if variant is None else variant
    node = (await api.gql(FIGURES, {"id": gid("ProductVariant", v)}))["node"]
    by_warehouse: dict[str, Figures] = {}
    for x in node["stocks"]:
        assert x["quantityReservedForOrders"] + x["quantityReservedForBatches"] == \
            x["quantityAllocated"], x
        by_warehouse[x["warehouse"]["id"]] = (
            x["quantity"], x["quantityAllocated"], x["quantityAvailable"],
            x["quantityReservedForOrders"], x["quantityReservedForBatches"])
    assert node["quantityAvailable"] == sum(f[2] for f in by_warehouse.values())
    return by_warehouse.get(wh(s.w1)), by_warehouse.get(wh(s.w2))


async def movements(api: Api, variant: int) -> list[dict[str, Any]]:
    """The variant's ledger, newest first."""
    data = await api.gql(MOVEMENTS, {"variant": gid("ProductVariant", variant)})
    return [e["node"] for e in data["stockMovements"]["edges"]]


async def world_state(api: Api, variants: list[int]) -> list[Any]:
    """Everything a pick batch mutation could change, as the admin reads it."""
    state: list[Any] = []
    for v in variants:
        state.append((await api.gql(FIGURES, {"id": gid("ProductVariant", v)}))["node"])
        state.append(await movements(api, v))
    state.append(await api.gql(ORDERS))
    batches = await listed(api, first=100)
    state.append([await read_batch(api, b) for b in batches])
    return state


def lines_of(batch: dict[str, Any]) -> list[tuple[str, int]]:
    return sorted((ln["orderLine"]["id"], ln["quantity"]) for ln in batch["lines"])


def orders_of(batch: dict[str, Any]) -> set[str]:
    return {o["id"] for o in batch["orders"]}


def refused(payload: dict[str, Any]) -> list[tuple[str, Any]]:
    """(code, field) of each error of a failed mutation, whose result fields are empty."""
    assert payload["pickBatch"] is None, payload
    if "fulfillments" in payload:
        assert payload["fulfillments"] is None, payload
    assert payload["errors"], payload
    return sorted((e["code"], e["field"]) for e in payload["errors"])


# ---------------------------------------------------------------------- creating a batch

async def test_create_moves_the_orders_units_from_order_reserve_to_batch_reserve(
        api: Api) -> None:
    s = shop(api.db, stock1=10, stock2=0)
    first = await placed(api, "REGULAR", [(s.variant, 2)])
    second = await placed(api, "REGULAR", [(s.variant, 3)])
    assert await figures(api, s) == ((10, 5, 5, 5, 0), (0, 0, 0, 0, 0))
    ledger = await movements(api, s.variant)

    batch = await batched(api, s.w1, [first, second])

    assert batch["status"] == "OPEN"
    assert batch["warehouse"] == {"id": wh(s.w1)}
    assert batch["createdAt"].endswith("+00:00")  # UTC, on SQLite too
    assert batch["completedAt"] is None and batch["canceledAt"] is None
    assert orders_of(batch) == {first["id"], second["id"]}
    assert lines_of(batch) == sorted([(first["lines"][0]["id"], 2),
                                      (second["lines"][0]["id"], 3)])
    # on hand, allocated and available stay; the 5 units are now held by the batch
    assert await figures(api, s) == ((10, 5, 5, 0, 5), (0, 0, 0, 0, 0))
    assert await movements(api, s.variant) == ledger  # no counter changed, no movement
    for order in (first, second):
        after = await reread(api, order["id"])
        assert after["status"] == "UNFULFILLED"
        assert after["lines"][0]["allocations"] == [{"warehouse": {"id": wh(s.w1)},
                                                     "quantity": order["lines"][0]["quantity"]}]
    read = await read_batch(api, batch["id"])
    assert (read["__typename"], read["id"], read["status"], read["warehouse"]) == (
        "PickBatch", batch["id"], "OPEN", {"id": wh(s.w1)})
    assert (orders_of(read), lines_of(read)) == (orders_of(batch), lines_of(batch))


async def test_available_units_can_still_be_ordered_while_a_batch_is_open(api: Api) -> None:
    s = shop(api.db, stock1=6, stock2=0)
    order = await placed(api, "REGULAR", [(s.variant, 4)])
    await batched(api, s.w1, [order])

    more = await placed(api, "REGULAR", [(s.variant, 2)])

    assert more["lines"][0]["allocations"] == [{"warehouse": {"id": wh(s.w1)}, "quantity": 2}]
    assert await figures(api, s) == ((6, 6, 0, 2, 4), (0, 0, 0, 0, 0))


async def test_a_batch_has_one_line_per_order_line_with_its_allocation_there(
        api: Api) -> None:
    s = shop(api.db, stock1=10, stock2=0)
    other = s.world.variant(s.product, stocks={s.w1: 5})
    order = await placed(api, "REGULAR", [(s.variant, 2), (other, 4)])

    batch = await batched(api, s.w1, [order])

    assert lines_of(batch) == sorted([(order["lines"][0]["id"], 2),
                                      (order["lines"][1]["id"], 4)])
    assert await figures(api, s) == ((10, 2, 8, 0, 2), (0, 0, 0, 0, 0))
    assert (await figures(api, s, other))[0] == (5, 4, 1, 0, 4)


async def test_a_split_order_is_held_per_warehouse_and_may_be_in_a_batch_of_each(
        api: Api) -> None:
    s = shop(api.db, stock1=3, stock2=5)
    order = await placed(api, "REGULAR", [(s.variant, 6)])  # 3 in w1, 3 in w2
    line = order["lines"][0]["id"]

    in_w1 = await batched(api, s.w1, [order])

    assert lines_of(in_w1) == [(line, 3)]
    assert await figures(api, s) == ((3, 3, 0, 0, 3), (5, 3, 2, 3, 0))

    in_w2 = await batched(api, s.w2, [order])

    assert lines_of(in_w2) == [(line, 3)]
    assert in_w2["warehouse"] == {"id": wh(s.w2)}
    assert await figures(api, s) == ((3, 3, 0, 0, 3), (5, 3, 2, 0, 3))


async def test_a_batch_holds_only_what_is_left_of_a_partly_fulfilled_order(api: Api) -> None:
    s = shop(api.db, stock1=10, stock2=0)
    order = await placed(api, "REGULAR", [(s.variant, 5)])
    assert (await fulfil(api, order, [(0, 2, s.w1)]))["errors"] == []

    batch = await batched(api, s.w1, [order])

    assert lines_of(batch) == [(order["lines"][0]["id"], 3)]
    assert await figures(api, s) == ((8, 3, 5, 0, 3), (0, 0, 0, 0, 0))

    done = await complete(api, batch["id"])

    assert done["errors"] == []
    assert (await reread(api, order["id"]))["status"] == "FULFILLED"
    assert await figures(api, s) == ((5, 0, 5, 0, 0), (0, 0, 0, 0, 0))


# ---------------------------------------------------------------- refused batch creation

@pytest.mark.parametrize("who", ["storefront", "anonymous"])
async def test_a_storefront_or_anonymous_caller_may_not_create_complete_or_cancel(
        api: Api, who: str) -> None:
    s = shop(api.db, stock1=10, stock2=0)
    order = await placed(api, "REGULAR", [(s.variant, 2)])
    open_batch = await batched(api, s.w1, [order])
    token = api.token(Role.STOREFRONT) if who == "storefront" else None
    other = await placed(api, "REGULAR", [(s.variant, 1)])
    before = await world_state(api, [s.variant])

    created = await create(api, s.w1, [other], token=token)
    completed = await complete(api, open_batch["id"], token=token)
    canceled = await cancel_batch(api, open_batch["id"], token=token)

    for payload in (created, completed, canceled):
        assert [code for code, _ in refused(payload)] == ["PERMISSION_DENIED"]
    assert await world_state(api, [s.variant]) == before


@pytest.mark.parametrize("who", ["admin", "other seller"])
async def test_an_unknown_warehouse_is_not_found(api: Api, who: str) -> None:
    s = shop(api.db, stock1=10, stock2=0)
    order = await placed(api, "REGULAR", [(s.variant, 2)])
    before = await world_state(api, [s.variant])
    token = "admin" if who == "admin" else api.token(Role.SELLER, s.world.seller())

    payload = await create(api, gid("Warehouse", UNKNOWN), [order], token=token)

    assert refused(payload) == [("NOT_FOUND", "input.warehouseId")]
    assert await world_state(api, [s.variant]) == before


async def test_another_sellers_warehouse_looks_like_an_unknown_one(api: Api) -> None:
    s = shop(api.db, stock1=10, stock2=0)
    order = await placed(api, "REGULAR", [(s.variant, 2)])
    before = await world_state(api, [s.variant])
    intruder = api.token(Role.SELLER, s.world.seller())

    foreign = await create(api, s.w1, [order], token=intruder)
    unknown = await create(api, gid("Warehouse", UNKNOWN), [order], token=intruder)

    assert refused(foreign) == [("NOT_FOUND", "input.warehouseId")]
    assert [(e["code"], e["field"], e["message"]) for e in foreign["errors"]] == [
        (e["code"], e["field"], e["message"]) for e in unknown["errors"]]
    assert await world_state(api, [s.variant]) == before


async def test_an_empty_order_list_is_invalid(api: Api) -> None:
    s = shop(api.db, stock1=10, stock2=0)
    await placed(api, "REGULAR", [(s.variant, 2)])
    before = await world_state(api, [s.variant])

    payload = await create(api, s.w1, [])

    assert refused(payload) == [("INVALID", "input.orderIds")]
    assert await world_state(api, [s.variant]) == before


async def test_an_order_named_twice_is_invalid(api: Api) -> None:
    s = shop(api.db, stock1=10, stock2=0)
    order = await placed(api, "REGULAR", [(s.variant, 2)])
    other = await placed(api, "REGULAR", [(s.variant, 1)])
    before = await world_state(api, [s.variant])

    payload = await create(api, s.w1, [order, other, order])

    assert refused(payload) == [("INVALID", "input.orderIds.2")]
    assert await world_state(api, [s.variant]) == before


async def test_an_unknown_order_is_not_found(api: Api) -> None:
    s = shop(api.db, stock1=10, stock2=0)
    order = await placed(api, "REGULAR", [(s.variant, 2)])
    before = await world_state(api, [s.variant])

    payload = await create(api, s.w1, [order, gid("Order", UNKNOWN)])

    assert refused(payload) == [("NOT_FOUND", "input.orderIds.1")]
    assert await world_state(api, [s.variant]) == before


async def test_an_unknown_order_and_an_order_in_the_wrong_state_are_both_reported(
        api: Api) -> None:
    s = shop(api.db, stock1=10, stock2=0)
    order = await placed(api, "REGULAR", [(s.variant, 2)])
    draft = await placed(api, "DRAFT", [(s.variant, 1)])
    before = await world_state(api, [s.variant])

    payload = await create(api, s.w1, [gid("Order", UNKNOWN), order, draft])

    assert refused(payload) == [("INVALID_STATE", "input.orderIds.2"),
                                ("NOT_FOUND", "input.orderIds.0")]
    assert await world_state(api, [s.variant]) == before


async def test_a_seller_cannot_batch_an_order_it_may_not_see(api: Api) -> None:
    s = shop(api.db, stock1=10, stock2=0)
    theirs = shop(api.db, stock1=10, stock2=0)
    seller = api.token(Role.SELLER, s.seller)
    mine = await placed(api, "REGULAR", [(s.variant, 2)])
    foreign = await placed(api, "REGULAR", [(theirs.variant, 2)])
    before = await world_state(api, [s.variant, theirs.variant])

    payload = await create(api, s.w1, [mine, foreign], token=seller)
    unknown = await create(api, s.w1, [mine, gid("Order", UNKNOWN)], token=seller)

    assert refused(payload) == [("NOT_FOUND", "input.orderIds.1")]
    assert [(e["code"], e["field"], e["message"]) for e in payload["errors"]] == [
        (e["code"], e["field"], e["message"]) for e in unknown["errors"]]
    assert await world_state(api, [s.variant, theirs.variant]) == before


async def test_every_order_that_cannot_be_picked_there_is_reported_and_nothing_changes(
        api: Api) -> None:
    s = shop(api.db, stock1=20, stock2=0)
    only_w2 = s.world.variant(s.product, stocks={s.w2: 5})
    good = await placed(api, "REGULAR", [(s.variant, 1)])
    draft = await placed(api, "DRAFT", [(s.variant, 1)])  # allocated in w1, not REGULAR
    quote = await placed(api, "QUOTE", [(s.variant, 1)])
    canceled = await placed(api, "REGULAR", [(s.variant, 1)])
    assert (await cancel(api, canceled))["errors"] == []
    shipped = await placed(api, "REGULAR", [(s.variant, 2)])
    assert (await fulfil(api, shipped, [(0, 2, s.w1)]))["errors"] == []
    elsewhere = await placed(api, "REGULAR", [(only_w2, 2)])  # nothing allocated in w1
    held = await placed(api, "REGULAR", [(s.variant, 3)])
    holder = await batched(api, s.w1, [held])
    before = await world_state(api, [s.variant, only_w2])

    payload = await create(api, s.w1, [good, draft, quote, canceled, shipped, elsewhere, held])

    assert refused(payload) == [("INVALID_STATE", f"input.orderIds.{i}") for i in range(1, 7)]
    assert await world_state(api, [s.variant, only_w2]) == before
    assert await listed(api) == [holder["id"]]


# --------------------------------------------------------------------- completing a batch

async def test_complete_fulfils_every_unit_with_one_batch_pick_movement_per_stock(
        api: Api) -> None:
    s = shop(api.db, stock1=10, stock2=0)
    other = s.world.variant(s.product, stocks={s.w1: 6})
    first = await placed(api, "REGULAR", [(s.variant, 2), (other, 4)])
    second = await placed(api, "REGULAR", [(s.variant, 3)])
    batch = await batched(api, s.w1, [first, second])
    before = {v: len(await movements(api, v)) for v in (s.variant, other)}

    payload = await complete(api, batch["id"])

    assert payload["errors"] == []
    done = payload["pickBatch"]
    assert done["id"] == batch["id"]
    assert done["status"] == "COMPLETED"
    assert done["completedAt"] and done["canceledAt"] is None
    # one fulfilment per order, each with its own lines from the batch's warehouse
    shipped = sorted(sorted((ln["orderLine"]["id"], ln["warehouse"]["id"], ln["quantity"])
                            for ln in f["lines"]) for f in payload["fulfillments"])
    assert shipped == sorted([
        sorted([(first["lines"][0]["id"], wh(s.w1), 2), (first["lines"][1]["id"], wh(s.w1), 4)]),
        [(second["lines"][0]["id"], wh(s.w1), 3)]])
    for order in (first, second):
        after = await reread(api, order["id"])
        assert after["status"] == "FULFILLED"
        assert [ln["quantityFulfilled"] for ln in after["lines"]] == [
            ln["quantity"] for ln in order["lines"]]
        assert all(ln["allocations"] == [] for ln in after["lines"])
    assert await figures(api, s) == ((5, 0, 5, 0, 0), (0, 0, 0, 0, 0))
    assert (await figures(api, s, other))[0] == (2, 0, 2, 0, 0)
    for variant, shipped_units, left in ((s.variant, 5, 5), (other, 4, 2)):
        nodes = await movements(api, variant)
        assert len(nodes) == before[variant] + 1
        newest = nodes[0]
        assert (newest["type"], newest["quantityChange"], newest["allocatedChange"],
                newest["quantityAfter"], newest["allocatedAfter"]) == (
            "BATCH_PICK", -shipped_units, -shipped_units, left, 0)
        assert newest["warehouse"] == {"id": wh(s.w1)}
        assert newest["order"] is None
        assert "batch" in (newest["reason"] or "").lower()
        assert (newest["actor"] or "").startswith("admin:")


async def test_complete_leaves_an_order_with_units_in_another_warehouse_partly_fulfilled(
        api: Api) -> None:
    s = shop(api.db, stock1=3, stock2=5)
    order = await placed(api, "REGULAR", [(s.variant, 6)])  # 3 in w1, 3 in w2
    batch = await batched(api, s.w1, [order])

    payload = await complete(api, batch["id"])

    assert payload["errors"] == []
    [fulfilment] = payload["fulfillments"]
    assert [(ln["warehouse"]["id"], ln["quantity"]) for ln in fulfilment["lines"]] == [
        (wh(s.w1), 3)]
    after = await reread(api, order["id"])
    assert after["status"] == "PARTIALLY_FULFILLED"
    assert after["lines"][0]["quantityFulfilled"] == 3
    assert after["lines"][0]["allocations"] == [{"warehouse": {"id": wh(s.w2)}, "quantity": 3}]
    assert await figures(api, s) == ((0, 0, 0, 0, 0), (5, 3, 2, 3, 0))

    rest = await fulfil(api, order, [(0, 3, s.w2)])

    assert rest["errors"] == [] and rest["order"]["status"] == "FULFILLED"
    assert await figures(api, s) == ((0, 0, 0, 0, 0), (2, 0, 2, 0, 0))


@pytest.mark.parametrize("first_step", ["complete", "cancel"])
@pytest.mark.parametrize("second_step", ["complete", "cancel"])
async def test_a_batch_that_is_not_open_can_be_neither_completed_nor_canceled(
        api: Api, first_step: str, second_step: str) -> None:
    s = shop(api.db, stock1=10, stock2=0)
    order = await placed(api, "REGULAR", [(s.variant, 4)])
    batch = await batched(api, s.w1, [order])
    step = {"complete": complete, "cancel": cancel_batch}
    assert (await step[first_step](api, batch["id"]))["errors"] == []
    before = await world_state(api, [s.variant])

    payload = await step[second_step](api, batch["id"])

    assert refused(payload) == [("INVALID_STATE", "id")]
    assert await world_state(api, [s.variant]) == before
    expected = "COMPLETED" if first_step == "complete" else "CANCELED"
    assert (await read_batch(api, batch["id"]))["status"] == expected


@pytest.mark.parametrize("step", ["complete", "cancel"])
async def test_an_unknown_batch_is_not_found(api: Api, step: str) -> None:
    s = shop(api.db, stock1=10, stock2=0)
    order = await placed(api, "REGULAR", [(s.variant, 4)])
    await batched(api, s.w1, [order])
    before = await world_state(api, [s.variant])

    mutation = complete if step == "complete" else cancel_batch
    payload = await mutation(api, gid("PickBatch", UNKNOWN))

    assert [code for code, _ in refused(payload)] == ["NOT_FOUND"]
    assert await world_state(api, [s.variant]) == before


# ---------------------------------------------------------------------- canceling a batch

async def test_cancel_gives_the_units_back_to_the_orders_without_a_movement(
        api: Api) -> None:
    s = shop(api.db, stock1=10, stock2=0)
    order = await placed(api, "REGULAR", [(s.variant, 4)])
    batch = await batched(api, s.w1, [order])
    ledger = await movements(api, s.variant)

    payload = await cancel_batch(api, batch["id"])

    assert payload["errors"] == []
    assert payload["pickBatch"]["status"] == "CANCELED"
    assert payload["pickBatch"]["canceledAt"] and payload["pickBatch"]["completedAt"] is None
    assert await figures(api, s) == ((10, 4, 6, 4, 0), (0, 0, 0, 0, 0))
    assert await movements(api, s.variant) == ledger
    after = await reread(api, order["id"])
    assert after["status"] == "UNFULFILLED"
    assert after["lines"][0]["allocations"] == [{"warehouse": {"id": wh(s.w1)}, "quantity": 4}]

    again = await batched(api, s.w1, [order])

    assert again["id"] != batch["id"]
    assert lines_of(again) == [(order["lines"][0]["id"], 4)]
    assert await figures(api, s) == ((10, 4, 6, 0, 4), (0, 0, 0, 0, 0))


async def test_after_cancel_the_order_can_be_fulfilled_directly(api: Api) -> None:
    s = shop(api.db, stock1=10, stock2=0)
    order = await placed(api, "REGULAR", [(s.variant, 4)])
    batch = await batched(api, s.w1, [order])
    assert (await cancel_batch(api, batch["id"]))["errors"] == []

    payload = await fulfil(api, order, [(0, 4, s.w1)])

    assert payload["errors"] == [] and payload["order"]["status"] == "FULFILLED"
    assert await figures(api, s) == ((6, 0, 6, 0, 0), (0, 0, 0, 0, 0))


# ------------------------------------------------------ orderFulfill and orderCancel meet a batch

@pytest.mark.parametrize("named", [True, False], ids=["named-warehouse", "no-warehouse"])
async def test_order_fulfil_of_units_held_by_an_open_batch_is_invalid_state(
        api: Api, named: bool) -> None:
    s = shop(api.db, stock1=10, stock2=0)
    order = await placed(api, "REGULAR", [(s.variant, 4)])
    batch = await batched(api, s.w1, [order])
    before = await world_state(api, [s.variant])

    payload = await fulfil(api, order, [(0, 1, s.w1 if named else None)])

    assert payload["order"] is None and payload["fulfillment"] is None
    assert [e["code"] for e in payload["errors"]] == ["INVALID_STATE"]
    assert await world_state(api, [s.variant]) == before
    assert (await read_batch(api, batch["id"]))["status"] == "OPEN"


async def test_units_of_a_batched_order_in_another_warehouse_can_be_fulfilled(
        api: Api) -> None:
    s = shop(api.db, stock1=3, stock2=5)
    order = await placed(api, "REGULAR", [(s.variant, 6)])  # 3 in w1, 3 in w2
    batch = await batched(api, s.w1, [order])

    payload = await fulfil(api, order, [(0, 3, s.w2)])

    assert payload["errors"] == []
    assert payload["order"]["status"] == "PARTIALLY_FULFILLED"
    assert payload["fulfillment"]["lines"][0]["warehouse"] == {"id": wh(s.w2)}
    assert await figures(api, s) == ((3, 3, 0, 0, 3), (2, 0, 2, 0, 0))
    assert lines_of(await read_batch(api, batch["id"])) == [(order["lines"][0]["id"], 3)]

    done = await complete(api, batch["id"])

    assert done["errors"] == []
    assert (await reread(api, order["id"]))["status"] == "FULFILLED"
    assert await figures(api, s) == ((0, 0, 0, 0, 0), (2, 0, 2, 0, 0))


async def test_cancel_of_a_batched_order_releases_it_and_takes_it_out_of_the_batch(
        api: Api) -> None:
    s = shop(api.db, stock1=10, stock2=0)
    kept = await placed(api, "REGULAR", [(s.variant, 2)])
    dropped = await placed(api, "REGULAR", [(s.variant, 3)])
    batch = await batched(api, s.w1, [kept, dropped])

    canceled = await cancel(api, dropped)

    assert canceled["errors"] == [] and canceled["order"]["status"] == "CANCELED"
    assert canceled["order"]["lines"][0]["allocations"] == []
    assert await figures(api, s) == ((10, 2, 8, 0, 2), (0, 0, 0, 0, 0))
    newest = (await movements(api, s.variant))[0]
    assert (newest["type"], newest["quantityChange"], newest["allocatedChange"],
            newest["allocatedAfter"], newest["order"]) == (
        "DEALLOCATION", 0, -3, 2, {"id": dropped["id"]})
    still = await read_batch(api, batch["id"])
    assert still["status"] == "OPEN"
    assert orders_of(still) == {kept["id"]}
    assert lines_of(still) == [(kept["lines"][0]["id"], 2)]

    done = await complete(api, batch["id"])

    assert done["errors"] == []
    assert [[ln["orderLine"]["id"] for ln in f["lines"]] for f in done["fulfillments"]] == [
        [kept["lines"][0]["id"]]]
    assert (await movements(api, s.variant))[0]["quantityChange"] == -2
    assert await figures(api, s) == ((8, 0, 8, 0, 0), (0, 0, 0, 0, 0))
    assert (await reread(api, dropped["id"]))["status"] == "CANCELED"


# ------------------------------------------------------------------------------ sellers

async def test_a_seller_creates_lists_and_completes_batches_of_its_own_warehouses(
        api: Api) -> None:
    s = shop(api.db, stock1=10, stock2=4)
    seller = api.token(Role.SELLER, s.seller)
    order = await placed(api, "REGULAR", [(s.variant, 3)])
    other = await placed(api, "REGULAR", [(s.variant, 1)])

    batch = await batched(api, s.w1, [order], token=seller)
    dropped = await batched(api, s.w1, [other], token=seller)
    listed_by_seller = await listed(api, seller)
    canceled = await cancel_batch(api, dropped["id"], token=seller)
    done = await complete(api, batch["id"], token=seller)

    assert listed_by_seller == [dropped["id"], batch["id"]]
    assert canceled["errors"] == [] and canceled["pickBatch"]["status"] == "CANCELED"
    assert done["errors"] == [] and done["pickBatch"]["status"] == "COMPLETED"
    assert len(done["fulfillments"]) == 1
    assert (await movements(api, s.variant))[0]["actor"].startswith("seller:")
    assert await figures(api, s) == ((7, 1, 6, 1, 0), (4, 0, 4, 0, 0))


async def test_another_sellers_batch_looks_like_an_unknown_one(api: Api) -> None:
    s = shop(api.db, stock1=10, stock2=0)
    theirs = shop(api.db, stock1=10, stock2=0)
    intruder = api.token(Role.SELLER, theirs.seller)
    order = await placed(api, "REGULAR", [(s.variant, 3)])
    batch = await batched(api, s.w1, [order])
    their_order = await placed(api, "REGULAR", [(theirs.variant, 1)])
    their_batch = await batched(api, theirs.w1, [their_order], token=intruder)
    before = await world_state(api, [s.variant, theirs.variant])

    for mutation in (complete, cancel_batch):
        foreign = await mutation(api, batch["id"], token=intruder)
        unknown = await mutation(api, gid("PickBatch", UNKNOWN), token=intruder)
        assert [code for code, _ in refused(foreign)] == ["NOT_FOUND"]
        assert [(e["code"], e["field"], e["message"]) for e in foreign["errors"]] == [
            (e["code"], e["field"], e["message"]) for e in unknown["errors"]]
    assert await read_batch(api, batch["id"], token=intruder) is None
    assert await listed(api, intruder) == [their_batch["id"]]
    assert await world_state(api, [s.variant, theirs.variant]) == before


async def test_node_of_a_pick_batch_answers_admin_and_the_owning_seller_only(
        api: Api) -> None:
    s = shop(api.db, stock1=10, stock2=0)
    order = await placed(api, "REGULAR", [(s.variant, 3)])
    batch = await batched(api, s.w1, [order])
    owner = api.token(Role.SELLER, s.seller)
    stranger = api.token(Role.SELLER, s.world.seller())
    storefront = api.token(Role.STOREFRONT)

    assert (await read_batch(api, batch["id"]))["id"] == batch["id"]
    assert (await read_batch(api, batch["id"], token=owner))["id"] == batch["id"]
    assert await read_batch(api, batch["id"], token=stranger) is None
    assert await read_batch(api, batch["id"], token=storefront) is None
    assert await read_batch(api, gid("PickBatch", UNKNOWN)) is None


@pytest.mark.parametrize("who", ["storefront", "anonymous"])
async def test_pick_batches_is_refused_to_storefronts_and_anonymous_callers(
        api: Api, who: str) -> None:
    s = shop(api.db, stock1=10, stock2=0)
    await batched(api, s.w1, [await placed(api, "REGULAR", [(s.variant, 3)])])
    token = api.token(Role.STOREFRONT) if who == "storefront" else None

    response = await api.post(BATCHES, {}, token=token)

    assert response.status_code == 200
    body = response.json()
    assert [e["extensions"]["code"] for e in body.get("errors", [])] == ["PERMISSION_DENIED"]
    assert body.get("data") is None or body["data"].get("pickBatches") is None


# ------------------------------------------------------------------------------ listing

async def test_pick_batches_filters_by_warehouse_and_status_newest_first(api: Api) -> None:
    s = shop(api.db, stock1=20, stock2=20)
    other = s.world.variant(s.product, stocks={s.w2: 5})

    async def one(warehouse: int, variant: int) -> str:
        order = await placed(api, "REGULAR", [(variant, 1)])
        return str((await batched(api, warehouse, [order]))["id"])

    completed_w1 = await one(s.w1, s.variant)
    open_w2 = await one(s.w2, other)
    canceled_w1 = await one(s.w1, s.variant)
    open_w1 = await one(s.w1, s.variant)
    assert (await complete(api, completed_w1))["errors"] == []
    assert (await cancel_batch(api, canceled_w1))["errors"] == []

    assert await listed(api) == [open_w1, canceled_w1, open_w2, completed_w1]
    assert await listed(api, warehouseId=wh(s.w1)) == [open_w1, canceled_w1, completed_w1]
    assert await listed(api, warehouseId=wh(s.w2)) == [open_w2]
    assert await listed(api, status="OPEN") == [open_w1, open_w2]
    assert await listed(api, status="CANCELED") == [canceled_w1]
    assert await listed(api, warehouseId=wh(s.w1), status="COMPLETED") == [completed_w1]
    assert await listed(api, warehouseId=wh(s.w2), status="COMPLETED") == []


async def test_pick_batches_pages_with_first_and_after(api: Api) -> None:
    s = shop(api.db, stock1=20, stock2=0)
    made = []
    for _ in range(3):
        order = await placed(api, "REGULAR", [(s.variant, 1)])
        made.append((await batched(api, s.w1, [order]))["id"])

    first = (await api.gql(BATCHES, {"first": 2}))["pickBatches"]
    rest = (await api.gql(BATCHES, {"first": 2,
                                    "after": first["pageInfo"]["endCursor"]}))["pickBatches"]

    assert [e["node"]["id"] for e in first["edges"]] == [made[2], made[1]]
    assert first["pageInfo"]["hasNextPage"] is True
    assert [e["node"]["id"] for e in rest["edges"]] == [made[0]]
    assert rest["pageInfo"]["hasNextPage"] is False


async def test_pick_batches_of_a_seller_lists_its_own_batches_only(api: Api) -> None:
    s = shop(api.db, stock1=10, stock2=0)
    theirs = shop(api.db, stock1=10, stock2=0)
    mine = await batched(api, s.w1, [await placed(api, "REGULAR", [(s.variant, 1)])])
    other = await batched(api, theirs.w1, [await placed(api, "REGULAR", [(theirs.variant, 1)])])

    assert await listed(api, api.token(Role.SELLER, s.seller)) == [mine["id"]]
    assert await listed(api, api.token(Role.SELLER, theirs.seller)) == [other["id"]]
    assert await listed(api) == [other["id"], mine["id"]]
