"""stockAdjust (compare-and-set, forced shortfall) and stockTransfer: exact figures and ledger."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from api.app import build_app
from domain.errors import Conflict, DomainError
from domain.models import OrderType, Role
from domain.services import orders, tokens
from domain.services import stock as stock_service
from tests.api.test_ledger import brief, movements
from tests.conftest import Api, Database
from tests.factories import ADMIN, OUTSIDERS, REFUSAL, Shop, gid, outsider_token, shop

pytestmark = pytest.mark.anyio

STOCK_FIELDS = ("id quantity quantityAllocated quantityAvailable quantityShort quantityIncoming "
                "warehouse { id } variant { id }")
ERROR_FIELDS = "code field message variantId warehouseId requested available orderIds"

ADJUST = f"""mutation($input: StockAdjustInput!) {{
  stockAdjust(input: $input) {{ stock {{ {STOCK_FIELDS} }} errors {{ {ERROR_FIELDS} }} }} }}"""

TRANSFER = f"""mutation($input: StockTransferInput!) {{
  stockTransfer(input: $input) {{ errors {{ {ERROR_FIELDS} }} }} }}"""

VARIANT_STOCKS = f"""query($id: ID!) {{
  node(id: $id) {{ ... on ProductVariant {{ stocks {{ {STOCK_FIELDS} }} }} }} }}"""

UNKNOWN = 999_999

Snapshot = tuple[list[tuple[int, ...]], int]


def snapshot(api: Api) -> Snapshot:
    """Every stock's (variant, warehouse, quantity, allocated) and the ledger's length."""
    stocks = [tuple(int(c) for c in row) for row in api.db.rows(
        "SELECT variant_id, warehouse_id, quantity, quantity_allocated FROM stock "
        "ORDER BY variant_id, warehouse_id")]
    return stocks, int(api.db.scalar("SELECT COUNT(*) FROM stock_movement"))


def actor(api: Api, token: str = "admin") -> str:
    """The ledger's name for a token used through `api`, e.g. "admin:3"."""
    raw = api.admin if token == "admin" else token
    row = api.db.rows("SELECT id, role FROM api_token WHERE token_hash = :h",
                      h=tokens.hash_token(raw))[0]
    return f"{row[1]}:{row[0]}"


def stock_gid(api: Api, variant: int, warehouse: int) -> str:
    pk = api.db.scalar("SELECT id FROM stock WHERE variant_id = :v AND warehouse_id = :w",
                       v=variant, w=warehouse)
    return gid("Stock", pk)


async def variant_stocks(api: Api, variant: int) -> dict[str, dict[str, Any]]:
    """The variant's stocks as the API shows them, by warehouse ID."""
    data = await api.gql(VARIANT_STOCKS, {"id": gid("ProductVariant", variant)})
    return {st["warehouse"]["id"]: st for st in data["node"]["stocks"]}


def failure(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """The errors of a payload that holds no stock."""
    assert payload["stock"] is None
    return payload["errors"]  # type: ignore[no-any-return]


def codes(errors: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    return [(e["code"], e["field"]) for e in errors]


def allocate(s: Shop, quantity: int) -> int:
    """A REGULAR order for DE allocating `quantity` units of the shop's variant; its id."""
    return orders.create(s.world.db.uow(), ADMIN, type=OrderType.REGULAR, shipping_country="DE",
                         lines=[orders.LineRequest(s.variant, quantity)]).id


def adjust_input(s: Shop, delta: int, reason: str = "recount", *, warehouse: int | None = None,
                 **extra: Any) -> dict[str, Any]:
    return {"variantId": gid("ProductVariant", s.variant),
            "warehouseId": gid("Warehouse", s.w1 if warehouse is None else warehouse),
            "delta": delta, "reason": reason, **extra}


async def adjust(api: Api, input: dict[str, Any], token: str | None = "admin") -> dict[str, Any]:
    return (await api.gql(ADJUST, {"input": input}, token=token))["stockAdjust"]  # type: ignore[no-any-return]


def transfer_input(s: Shop, quantity: int, source: int | None = None,
                   destination: int | None = None) -> dict[str, Any]:
    return {"variantId": gid("ProductVariant", s.variant),
            "fromWarehouseId": gid("Warehouse", s.w1 if source is None else source),
            "toWarehouseId": gid("Warehouse", s.w2 if destination is None else destination),
            "quantity": quantity}


async def transfer(api: Api, input: dict[str, Any],
                   token: str | None = "admin") -> list[dict[str, Any]]:
    return (await api.gql(TRANSFER, {"input": input}, token=token))["stockTransfer"]["errors"]  # type: ignore[no-any-return]


StockOperation = Callable[..., Awaitable[list[dict[str, Any]]]]  # adjust_one, transfer_one


async def adjust_one(api: Api, s: Shop, token: str | None = "admin",
                     **changes: str) -> list[dict[str, Any]]:
    """stockAdjust by +1 in the shop's first warehouse, its input fields replaced by
    `changes`: the errors of a payload without stock."""
    return failure(await adjust(api, {**adjust_input(s, 1), **changes}, token=token))


async def transfer_one(api: Api, s: Shop, token: str | None = "admin",
                       **changes: str) -> list[dict[str, Any]]:
    """stockTransfer of one unit from the shop's first warehouse to its second, its input
    fields replaced by `changes`: the errors."""
    return await transfer(api, {**transfer_input(s, 1), **changes}, token=token)


# --- stockAdjust ------------------------------------------------------------------------------

async def test_adjusting_changes_on_hand_by_delta_and_records_one_adjustment(api: Api) -> None:
    s = shop(api.db, stock1=10, stock2=3)

    payload = await adjust(api, adjust_input(s, -3, "damaged in storage"))
    nodes = await movements(api, warehouse=gid("Warehouse", s.w1))

    assert payload["errors"] == []
    assert payload["stock"] == {
        "id": stock_gid(api, s.variant, s.w1), "quantity": 7, "quantityAllocated": 0,
        "quantityAvailable": 7, "quantityShort": 0, "quantityIncoming": 0,
        "warehouse": {"id": gid("Warehouse", s.w1)},
        "variant": {"id": gid("ProductVariant", s.variant)}}
    assert s.world.stock(s.variant, s.w1) == (7, 0)
    assert s.world.stock(s.variant, s.w2) == (3, 0)
    assert brief(nodes) == [("ADJUSTMENT", -3, 0, 7, 0), ("STOCK_UPDATE", 10, 0, 10, 0)]
    assert nodes[0]["reason"] == "damaged in storage"
    assert nodes[0]["actor"] == actor(api)
    assert nodes[0]["order"] is None


async def test_adjusting_keeps_allocations_and_records_them_in_the_levels(api: Api) -> None:
    s = shop(api.db, stock1=10)
    allocate(s, 4)

    payload = await adjust(api, adjust_input(s, 5, "found a box"))
    nodes = await movements(api, warehouse=gid("Warehouse", s.w1), types=["ADJUSTMENT"])

    assert payload["errors"] == []
    assert (payload["stock"]["quantity"], payload["stock"]["quantityAllocated"],
            payload["stock"]["quantityAvailable"]) == (15, 4, 11)
    assert s.world.stock(s.variant, s.w1) == (15, 4)
    assert brief(nodes) == [("ADJUSTMENT", 5, 0, 15, 4)]


async def test_adjustment_with_the_current_quantity_as_expected_applies(api: Api) -> None:
    s = shop(api.db, stock1=10)

    payload = await adjust(api, adjust_input(s, -2, expectedQuantity=10))
    nodes = await movements(api, types=["ADJUSTMENT"])

    assert payload["errors"] == []
    assert payload["stock"]["quantity"] == 8
    assert s.world.stock(s.variant, s.w1) == (8, 0)
    assert brief(nodes) == [("ADJUSTMENT", -2, 0, 8, 0)]


async def test_adjustment_expecting_a_stale_quantity_conflicts_and_changes_nothing(
    api: Api,
) -> None:
    s = shop(api.db, stock1=10)
    before = snapshot(api)

    payload = await adjust(api, adjust_input(s, -2, expectedQuantity=9))

    assert [e["code"] for e in failure(payload)] == ["CONFLICT"]
    assert snapshot(api) == before


@pytest.mark.parametrize(("delta", "reason", "field"), [
    (0, "recount", "input.delta"),
    (3, "", "input.reason"),
    (3, "   ", "input.reason"),
], ids=["zero-delta", "empty-reason", "blank-reason"])
async def test_adjustment_with_bad_input_is_invalid_and_changes_nothing(
    api: Api, delta: int, reason: str, field: str,
) -> None:
    s = shop(api.db, stock1=10)
    before = snapshot(api)

    payload = await adjust(api, adjust_input(s, delta, reason))

    assert codes(failure(payload)) == [("INVALID", field)]
    assert snapshot(api) == before


def below_zero(s: Shop) -> dict[str, Any]:
    """-11 of the 10 on hand."""
    return adjust_input(s, -11)


def forced_below_zero(s: Shop) -> dict[str, Any]:
    """-11 of the 10 on hand (7 allocated), forced: force allows a shortfall, not this."""
    allocate(s, 7)
    return adjust_input(s, -11, force=True)


def negative_on_a_missing_stock(s: Shop) -> dict[str, Any]:
    """-1 in a warehouse of the seller that holds no stock record of the variant."""
    return adjust_input(s, -1, warehouse=s.world.warehouse(s.seller, [s.zone], priority=2))


def in_another_sellers_warehouse(s: Shop) -> dict[str, Any]:
    """+1 in a warehouse of another seller."""
    return adjust_input(s, 1, warehouse=s.world.warehouse(s.world.seller(), [s.zone]))


@pytest.mark.parametrize("given", [
    below_zero, forced_below_zero, negative_on_a_missing_stock, in_another_sellers_warehouse])
async def test_impossible_adjustment_is_invalid_and_changes_nothing(
    api: Api, given: Callable[[Shop], dict[str, Any]],
) -> None:
    s = shop(api.db, stock1=10)
    input = given(s)
    before = snapshot(api)

    payload = await adjust(api, input)

    assert [e["code"] for e in failure(payload)] == ["INVALID"]
    assert snapshot(api) == before


async def test_adjustment_below_allocated_names_the_orders_at_risk_and_changes_nothing(
    api: Api,
) -> None:
    s = shop(api.db, stock1=10)
    first, second = allocate(s, 4), allocate(s, 3)
    before = snapshot(api)

    payload = await adjust(api, adjust_input(s, -5, "recount found less"))

    [error] = failure(payload)
    assert error["code"] == "INVALID"
    assert sorted(error["orderIds"]) == sorted([gid("Order", first), gid("Order", second)])
    assert (error["variantId"], error["warehouseId"]) == (
        gid("ProductVariant", s.variant), gid("Warehouse", s.w1))
    assert snapshot(api) == before


async def test_forced_adjustment_below_allocated_records_the_shortfall(api: Api) -> None:
    s = shop(api.db, stock1=10)
    allocate(s, 7)

    payload = await adjust(api, adjust_input(s, -5, "recount found less", force=True))
    shown = (await variant_stocks(api, s.variant))[gid("Warehouse", s.w1)]
    nodes = await movements(api, types=["ADJUSTMENT"])

    assert payload["errors"] == []
    for stock in (payload["stock"], shown):
        assert (stock["quantity"], stock["quantityAllocated"], stock["quantityAvailable"],
                stock["quantityShort"]) == (5, 7, 0, 2)
    assert s.world.stock(s.variant, s.w1) == (5, 7)
    assert brief(nodes) == [("ADJUSTMENT", -5, 0, 5, 7)]
    assert nodes[0]["reason"] == "recount found less"


async def test_positive_adjustment_creates_a_missing_stock_record(api: Api) -> None:
    s = shop(api.db, stock1=10)
    w3 = s.world.warehouse(s.seller, [s.zone], priority=2)

    payload = await adjust(api, adjust_input(s, 4, "first delivery", warehouse=w3))
    nodes = await movements(api, warehouse=gid("Warehouse", w3))

    assert payload["errors"] == []
    assert (payload["stock"]["quantity"], payload["stock"]["quantityAllocated"]) == (4, 0)
    assert payload["stock"]["warehouse"] == {"id": gid("Warehouse", w3)}
    assert s.world.stock(s.variant, w3) == (4, 0)
    assert brief(nodes) == [("ADJUSTMENT", 4, 0, 4, 0)]
    assert nodes[0]["reason"] == "first delivery"


async def test_the_sellers_own_adjustment_is_recorded_under_its_token(api: Api) -> None:
    s = shop(api.db, stock1=10)
    token = api.token(Role.SELLER, s.seller)

    payload = await adjust(api, adjust_input(s, 2, "returned"), token=token)
    nodes = await movements(api, types=["ADJUSTMENT"])

    assert payload["errors"] == []
    assert s.world.stock(s.variant, s.w1) == (12, 0)
    assert brief(nodes) == [("ADJUSTMENT", 2, 0, 12, 0)]
    assert nodes[0]["actor"] == actor(api, token)
    assert nodes[0]["actor"].startswith("seller:")


async def test_stock_is_a_node(api: Api) -> None:
    s = shop(api.db, stock1=10)
    stock_id = stock_gid(api, s.variant, s.w1)

    data = await api.gql("query($id: ID!) { node(id: $id) { ... on Stock { id quantity "
                         "variant { id } } } }", {"id": stock_id})

    assert data["node"] == {"id": stock_id, "quantity": 10,
                            "variant": {"id": gid("ProductVariant", s.variant)}}


# --- stockTransfer ----------------------------------------------------------------------------

async def test_transfer_moves_units_with_one_movement_out_and_one_in(api: Api) -> None:
    s = shop(api.db, stock1=10, stock2=2)

    errors = await transfer(api, transfer_input(s, 4))
    out = await movements(api, warehouse=gid("Warehouse", s.w1))
    into = await movements(api, warehouse=gid("Warehouse", s.w2))

    assert errors == []
    assert s.world.stock(s.variant, s.w1) == (6, 0)
    assert s.world.stock(s.variant, s.w2) == (6, 0)
    assert brief(out) == [("TRANSFER_OUT", -4, 0, 6, 0), ("STOCK_UPDATE", 10, 0, 10, 0)]
    assert brief(into) == [("TRANSFER_IN", 4, 0, 6, 0), ("STOCK_UPDATE", 2, 0, 2, 0)]
    assert out[0]["actor"] == into[0]["actor"] == actor(api)


async def test_transfer_moves_only_unallocated_units(api: Api) -> None:
    s = shop(api.db, stock1=10, stock2=0)
    allocate(s, 7)
    before = snapshot(api)

    refused = await transfer(api, transfer_input(s, 4))
    after_refusal = snapshot(api)
    accepted = await transfer(api, transfer_input(s, 3))
    nodes = await movements(api, types=["TRANSFER_OUT", "TRANSFER_IN"])

    [error] = refused
    assert error["code"] == "INSUFFICIENT_STOCK"
    assert (error["requested"], error["available"]) == (4, 3)
    assert (error["variantId"], error["warehouseId"]) == (
        gid("ProductVariant", s.variant), gid("Warehouse", s.w1))
    assert after_refusal == before
    assert accepted == []
    assert s.world.stock(s.variant, s.w1) == (7, 7)
    assert s.world.stock(s.variant, s.w2) == (3, 0)
    assert sorted(brief(nodes)) == [("TRANSFER_IN", 3, 0, 3, 0), ("TRANSFER_OUT", -3, 0, 7, 7)]


async def test_transfer_creates_the_destination_stock_when_missing(api: Api) -> None:
    s = shop(api.db, stock1=10)
    w3 = s.world.warehouse(s.seller, [s.zone], priority=2)

    errors = await transfer(api, transfer_input(s, 5, destination=w3))
    nodes = await movements(api, warehouse=gid("Warehouse", w3))

    assert errors == []
    assert s.world.stock(s.variant, s.w1) == (5, 0)
    assert s.world.stock(s.variant, w3) == (5, 0)
    assert brief(nodes) == [("TRANSFER_IN", 5, 0, 5, 0)]


async def test_transfer_from_a_warehouse_without_stock_is_insufficient_and_creates_nothing(
    api: Api,
) -> None:
    s = shop(api.db, stock1=10)
    w3 = s.world.warehouse(s.seller, [s.zone], priority=2)
    before = snapshot(api)

    [error] = await transfer(api, transfer_input(s, 1, source=w3, destination=s.w1))

    assert error["code"] == "INSUFFICIENT_STOCK"
    assert (error["requested"], error["available"]) == (1, 0)
    assert snapshot(api) == before


async def test_refused_transfer_to_a_warehouse_without_stock_creates_no_record(api: Api) -> None:
    s = shop(api.db, stock1=10)
    w3 = s.world.warehouse(s.seller, [s.zone], priority=2)
    before = snapshot(api)

    [error] = await transfer(api, transfer_input(s, 11, destination=w3))

    assert error["code"] == "INSUFFICIENT_STOCK"
    assert (error["requested"], error["available"]) == (11, 10)
    assert snapshot(api) == before


@pytest.mark.parametrize("quantity", [0, -1, 1_000_001])
async def test_transfer_quantity_outside_one_to_a_million_is_invalid(
    api: Api, quantity: int,
) -> None:
    s = shop(api.db, stock1=10)
    before = snapshot(api)

    errors = await transfer(api, transfer_input(s, quantity))

    assert codes(errors) == [("INVALID", "input.quantity")]
    assert snapshot(api) == before


async def test_transfer_of_a_million_units_is_allowed(api: Api) -> None:
    s = shop(api.db, stock1=1_000_000)

    errors = await transfer(api, transfer_input(s, 1_000_000))

    assert errors == []
    assert s.world.stock(s.variant, s.w1) == (0, 0)
    assert s.world.stock(s.variant, s.w2) == (1_000_000, 0)


async def test_transfer_into_the_same_warehouse_is_invalid(api: Api) -> None:
    s = shop(api.db, stock1=10)
    before = snapshot(api)

    errors = await transfer(api, transfer_input(s, 1, destination=s.w1))

    assert [e["code"] for e in errors] == ["INVALID"]
    assert snapshot(api) == before


@pytest.mark.parametrize("end", ["source", "destination"])
async def test_transfer_with_another_sellers_warehouse_is_invalid(api: Api, end: str) -> None:
    s = shop(api.db, stock1=10)
    other = shop(api.db, stock1=10)
    before = snapshot(api)

    errors = await transfer(api, transfer_input(s, 1, **{end: other.w1}))

    assert [e["code"] for e in errors] == ["INVALID"]
    assert snapshot(api) == before


@pytest.mark.parametrize(("operation", "key", "value", "code"), [
    pytest.param(adjust_one, "variantId", gid("ProductVariant", UNKNOWN), "NOT_FOUND",
                 id="adjust-unknown-variant"),
    pytest.param(adjust_one, "warehouseId", gid("Warehouse", UNKNOWN), "NOT_FOUND",
                 id="adjust-unknown-warehouse"),
    pytest.param(adjust_one, "variantId", "not-an-id", "INVALID", id="adjust-malformed-variant"),
    pytest.param(adjust_one, "warehouseId", gid("Seller", 1), "NOT_FOUND",
                 id="adjust-wrong-type-warehouse"),
    pytest.param(transfer_one, "variantId", gid("ProductVariant", UNKNOWN), "NOT_FOUND",
                 id="transfer-unknown-variant"),
    pytest.param(transfer_one, "fromWarehouseId", gid("Warehouse", UNKNOWN), "NOT_FOUND",
                 id="transfer-unknown-source"),
    pytest.param(transfer_one, "toWarehouseId", gid("Warehouse", UNKNOWN), "NOT_FOUND",
                 id="transfer-unknown-destination"),
    pytest.param(transfer_one, "toWarehouseId", "garbage", "INVALID",
                 id="transfer-malformed-destination"),
])
async def test_adjustment_or_transfer_naming_a_bad_id_fails_and_changes_nothing(
    api: Api, operation: StockOperation, key: str, value: str, code: str,
) -> None:
    s = shop(api.db, stock1=10)
    before = snapshot(api)

    errors = await operation(api, s, **{key: value})

    assert codes(errors) == [(code, f"input.{key}")]
    assert snapshot(api) == before


@pytest.mark.parametrize("operation", [adjust_one, transfer_one], ids=["adjust", "transfer"])
@pytest.mark.parametrize("who", OUTSIDERS)
async def test_adjustment_or_transfer_without_the_right_token_is_refused(
        api: Api, who: str, operation: StockOperation) -> None:
    s = shop(api.db, stock1=10)
    token = outsider_token(api, s, who)
    before = snapshot(api)

    errors = await operation(api, s, token)

    assert [e["code"] for e in errors] == [REFUSAL[who]]
    assert snapshot(api) == before


async def test_transfer_that_fails_at_the_destination_leaves_the_source_untouched(
    api: Api,
) -> None:
    s = shop(api.db, stock1=10, stock2=2**31 - 3)
    before = snapshot(api)

    errors = await transfer(api, transfer_input(s, 5))

    assert errors != []
    assert snapshot(api) == before


# --- races (PostgreSQL) -----------------------------------------------------------------------

async def test_concurrent_adjustments_expecting_the_same_quantity_let_exactly_one_win(
    pg_db: Database,
) -> None:
    s = shop(pg_db, stock1=10)
    app = build_app(pg_db.engine, lambda _event: None)
    rounds = 5
    outcomes: list[list[str]] = []

    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://testserver", timeout=120) as client:
            api = Api(client, pg_db)
            for expected in range(10, 10 - rounds, -1):
                payloads = await asyncio.gather(*(
                    adjust(api, adjust_input(s, -1, f"client {name}", expectedQuantity=expected))
                    for name in "AB"))
                outcomes.append(sorted(e["code"] for p in payloads for e in p["errors"]))
            nodes = await movements(api, types=["ADJUSTMENT"], first=100)
    finally:
        app.state.threads.close()

    assert outcomes == [["CONFLICT"]] * rounds
    assert s.world.stock(s.variant, s.w1) == (10 - rounds, 0)
    assert brief(nodes) == [("ADJUSTMENT", -1, 0, q, 0) for q in range(10 - rounds, 10)]


def test_threads_adjusting_with_the_same_expected_quantity_commit_exactly_once(
    pg_db: Database,
) -> None:
    s = shop(pg_db, stock1=10)
    threads = 8
    barrier = threading.Barrier(threads)
    results: list[str] = []
    lock = threading.Lock()

    def attempt(n: int) -> Callable[[], None]:
        def run() -> None:
            barrier.wait()
            try:
                stock_service.adjust(pg_db.uow(), ADMIN, variant_id=s.variant,
                                     warehouse_id=s.w1, delta=-1, reason=f"thread {n}",
                                     expected_quantity=10)
                outcome = "ok"
            except Conflict:
                outcome = "conflict"
            except DomainError as exc:  # pragma: no cover - reported by the assertion below
                outcome = f"unexpected {exc!r}"
            with lock:
                results.append(outcome)
        return run

    workers = [threading.Thread(target=attempt(n)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)

    assert sorted(results) == ["conflict"] * (threads - 1) + ["ok"]
    assert s.world.stock(s.variant, s.w1) == (9, 0)
    assert [tuple(r) for r in pg_db.rows(
        "SELECT type, quantity_change, quantity_after FROM stock_movement "
        "WHERE variant_id = :v ORDER BY id", v=s.variant)] == [
        ("STOCK_UPDATE", 10, 10), ("ADJUSTMENT", -1, 9)]
