"""Idempotency keys are the caller's own (issue 16): unique per token, a reuse with other
input is a CONFLICT, and another token's key never reveals its order."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from domain import placement
from domain.errors import Conflict
from domain.models import OrderType, Role
from domain.permissions import Principal
from domain.services import orders
from tests.api.order_calls import ORDER_CREATE, order_input
from tests.api.test_query_counts import CREATE, counting
from tests.conftest import Api, Database
from tests.factories import allocations, gid, shop, stocks

pytestmark = pytest.mark.anyio


def count(db: Database, table: str) -> int:
    return int(db.scalar(f"SELECT count(*) FROM {table}"))


async def create(api: Api, variables: dict[str, Any], token: str) -> dict[str, Any]:
    return (await api.gql(ORDER_CREATE, variables, token=token))["orderCreate"]  # type: ignore[no-any-return]


async def test_the_same_caller_key_and_input_answer_the_first_order_once(api: Api) -> None:
    s = shop(api.db, stock1=10, stock2=0)
    storefront = api.token(Role.STOREFRONT)
    variables = order_input("REGULAR", [(s.variant, 3), (s.variant, 1)], key="checkout-1")
    first = await create(api, variables, storefront)

    second = await create(api, variables, storefront)

    assert first["errors"] == [] and second["errors"] == []
    assert second["order"] == first["order"]
    assert stocks(s) == ((10, 4), (0, 0))  # allocated once
    assert count(api.db, "orders") == 1


@pytest.mark.parametrize("change", ["quantity", "extra line", "country", "type"])
async def test_the_same_key_with_other_input_is_a_conflict_and_changes_nothing(
        api: Api, change: str) -> None:
    s = shop(api.db, stock1=10, stock2=0)
    caller = api.token(Role.SELLER, s.seller)  # a seller may place every type of order
    lines = [(s.variant, 3), (s.variant, 1)]
    first = await create(api, order_input("REGULAR", lines, key="k"), caller)
    other = {
        "quantity": order_input("REGULAR", [(s.variant, 3), (s.variant, 2)], key="k"),
        "extra line": order_input("REGULAR", [*lines, (s.variant, 1)], key="k"),
        "country": order_input("REGULAR", lines, country="AT", key="k"),
        "type": order_input("DRAFT", lines, key="k"),
    }[change]
    before = api.db.rows("SELECT id, quantity, quantity_allocated FROM stock ORDER BY id")

    second = await create(api, other, caller)

    assert second["order"] is None
    assert second["errors"] == [{
        "code": "CONFLICT", "field": "idempotencyKey",
        "message": "this idempotencyKey was already used for a different order",
        "variantId": None, "warehouseId": None, "requested": None, "available": None}]
    assert api.db.rows("SELECT id, quantity, quantity_allocated FROM stock ORDER BY id"
                       ) == before
    assert count(api.db, "orders") == 1 and count(api.db, "order_line") == 2
    assert first["errors"] == []


async def test_the_same_lines_in_another_order_answer_the_first_order(api: Api) -> None:
    """Lines are compared as a set of variant and quantity (API.md)."""
    s = shop(api.db, stock1=10, stock2=0)
    storefront = api.token(Role.STOREFRONT)
    lines = [(s.variant, 3), (s.variant, 1)]
    first = await create(api, order_input("REGULAR", lines, key="k"), storefront)

    second = await create(api, order_input("REGULAR", lines[::-1], key="k"), storefront)

    assert first["errors"] == [] and second["errors"] == []
    assert second["order"] == first["order"]
    assert stocks(s) == ((10, 4), (0, 0))
    assert count(api.db, "orders") == 1


async def test_another_callers_key_places_its_own_order(api: Api) -> None:
    s = shop(api.db, stock1=10, stock2=0)
    victim, other = api.token(Role.STOREFRONT), api.token(Role.STOREFRONT)
    first = await create(api, order_input("REGULAR", [(s.variant, 3)], key="shared"), victim)

    second = await create(api, order_input("REGULAR", [(s.variant, 2)], key="shared"), other)
    again = await create(api, order_input("REGULAR", [(s.variant, 2)], key="shared"), other)
    admin = await create(api, order_input("REGULAR", [(s.variant, 3)], key="shared"), "admin")

    assert second["errors"] == [] and admin["errors"] == []
    assert second["order"]["id"] != first["order"]["id"]
    assert again["order"] == second["order"]  # the other caller's own replay
    assert admin["order"]["id"] not in (first["order"]["id"], second["order"]["id"])
    line_ids = {ln["id"] for ln in first["order"]["lines"]}
    assert not line_ids & {ln["id"] for ln in second["order"]["lines"]}
    assert [[ln["quantity"] for ln in second["order"]["lines"]]] == [[2]]
    assert allocations(second["order"]) == [[(gid("Warehouse", s.w1), 2)]]
    assert stocks(s) == ((10, 8), (0, 0))
    assert count(api.db, "orders") == 3


def test_a_key_taken_by_a_racing_request_with_other_input_is_a_conflict(
        db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """The race path (our insert lost to the same caller's key, committed after our read)
    compares the input too, and another caller's key never reaches it."""
    s = shop(db, stock1=10)
    caller, other = (Principal(token_id=t, role=Role.STOREFRONT) for t in (7, 8))
    request: dict[str, Any] = {"type": OrderType.REGULAR, "shipping_country": "DE",
                               "idempotency_key": "k"}
    first = orders.create(db.uow(), caller, lines=[orders.LineRequest(s.variant, 2)],
                          **request)
    # a key lookup that never finds it, as if the first order were not committed yet
    never = {"postgresql": "SELECT 1 WHERE %(key)s::text IS NULL",
             "sqlite": "SELECT 1 WHERE :key IS NULL"}
    monkeypatch.setattr(placement, "_DRIVER_READS", {
        dialect: (stocks_sql, never[dialect])
        for dialect, (stocks_sql, _) in placement._DRIVER_READS.items()})

    with pytest.raises(Conflict):
        orders.create(db.uow(), caller, lines=[orders.LineRequest(s.variant, 5)], **request)
    same = orders.create(db.uow(), caller, lines=[orders.LineRequest(s.variant, 2)],
                         **request)
    theirs = orders.create(db.uow(), other, lines=[orders.LineRequest(s.variant, 5)],
                           **request)

    assert same == first
    assert theirs.id != first.id and [ln.quantity for ln in theirs.lines] == [5]
    assert stocks(s)[0] == (10, 7)
    assert count(db, "orders") == 2


def test_threads_with_one_callers_key_place_one_order(pg_db: Database) -> None:
    s = shop(pg_db, stock1=100)
    principal = Principal(token_id=11, role=Role.STOREFRONT)
    threads = 8
    barrier = threading.Barrier(threads)
    ids: list[int] = []
    failures: list[BaseException] = []
    lock = threading.Lock()

    def run() -> None:
        barrier.wait()
        try:
            view = orders.create(pg_db.uow(), principal, type=OrderType.REGULAR,
                                 shipping_country="DE",
                                 lines=[orders.LineRequest(s.variant, 3)],
                                 idempotency_key="race")
            with lock:
                ids.append(view.id)
        except BaseException as exc:  # pragma: no cover - reported below
            with lock:
                failures.append(exc)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)

    assert failures == []
    assert len(ids) == threads and len(set(ids)) == 1
    assert count(pg_db, "orders") == 1
    assert stocks(s)[0] == (100, 3)


async def test_a_key_adds_only_its_lookup_to_an_order(api: Api) -> None:
    """The token is one more column of the same insert; the lookup filters by it."""
    s = shop(api.db, stock1=10, stock2=0)
    storefront = api.token(Role.STOREFRONT)
    await api.gql("{ __typename }", token=storefront)

    with counting(api.db) as statements:
        data = await api.gql(CREATE, order_input("REGULAR", [(s.variant, 3)], key="counted"),
                             token=storefront)

    assert data["orderCreate"]["errors"] == []
    sql = "\n".join(s[:100] for s in statements.sql)
    # without a key: 3 on PostgreSQL, 7 on SQLite (test_query_counts); the payload's
    # warehouses are one batched read in both
    assert statements.count == (4 if api.db.engine.dialect.name == "postgresql" else 8), sql
    [token_id] = api.db.rows("SELECT created_by_token_id FROM orders")
    assert token_id[0] is not None and token_id[0] > 0
