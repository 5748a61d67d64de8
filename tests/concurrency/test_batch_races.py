"""Pick batches racing the orders they hold, on PostgreSQL: whatever commits first, order
reserve + batch reserve = allocated on every stock, and the books balance.

Each round makes fresh orders, then starts a batch operation and order operations on the
same orders together (a barrier, then 0-3.5 ms apart, differently each round), one
connection each, and checks every stock (`_off`, which includes `stockyard check`).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

import pytest

from domain.models import OrderType
from domain.services import batches, orders
from tests.concurrency.test_no_oversell import assert_books_balance
from tests.concurrency.test_stock_races import Contender, Store, _off, _run
from tests.conftest import Database
from tests.factories import ADMIN, World

ROUNDS = 25


@pytest.fixture
def store(pg_db: Database) -> Store:
    world = World(pg_db)
    seller = world.seller()
    zone = world.zone(["DE"])
    return Store(world, world.warehouse(seller, [zone], priority=0),
                 world.warehouse(seller, [zone], priority=1), world.product(seller))


def _orders(db: Database, store: Store, count: int = 3) -> list[orders.OrderView]:
    """`count` REGULAR orders of 2 units of a fresh variant (10 in w1, 10 in w2)."""
    variant = store.variant(w1=10, w2=10)
    return [orders.create(db.uow(), ADMIN, type=OrderType.REGULAR, shipping_country="DE",
                          lines=[orders.LineRequest(variant, 2)]) for _ in range(count)]


def _call(fn: Callable[[], object]) -> Contender:
    def run() -> str:
        fn()
        return "ok"
    return run


def _race(db: Database, make_round: Callable[[], list[Contender]]) -> Counter[str]:
    outcomes: Counter[str] = Counter()
    failed: list[str] = []
    for n in range(ROUNDS):
        contenders = make_round()
        barrier = threading.Barrier(len(contenders))
        results: list[str] = []
        delays = [(n + 3 * i) % 8 * 0.0005 for i in range(len(contenders))]
        threads = [threading.Thread(target=_run, args=(c, barrier, d, results))
                   for c, d in zip(contenders, delays, strict=True)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert not any(t.is_alive() for t in threads), f"round {n}: a contender hangs"
        outcomes.update(results)
        failed += [f"round {n}: {r}" for r in results if r.startswith("unexpected")]
        if off := _off(db):
            failed.append(f"round {n}: {results} left {off}")
            break
    assert not failed, "\n".join(failed)
    assert_books_balance(db)
    return outcomes


def test_a_batch_made_while_its_orders_are_cancelled_or_fulfilled(
        pg_db: Database, store: Store) -> None:
    def round_() -> list[Contender]:
        first, second, third = _orders(pg_db, store)
        return [
            _call(lambda: batches.create(pg_db.uow(), ADMIN, warehouse_id=store.w1,
                                         order_ids=[first.id, second.id, third.id])),
            _call(lambda: orders.cancel(pg_db.uow(), ADMIN, second.id)),
            _call(lambda: orders.fulfill(pg_db.uow(), ADMIN, third.id, [
                orders.FulfillRequest(third.lines[0].id, 2)])),
        ]

    outcomes = _race(pg_db, round_)
    assert outcomes["ok"] >= 2 * ROUNDS, outcomes  # the cancel always goes through
    assert set(outcomes) <= {"ok", "INVALID_STATE"}, outcomes


def test_a_batch_completed_or_cancelled_while_its_orders_are_cancelled(
        pg_db: Database, store: Store) -> None:
    flip = iter(range(10**6))

    def round_() -> list[Contender]:
        first, second, third = _orders(pg_db, store)
        batch = batches.create(pg_db.uow(), ADMIN, warehouse_id=store.w1,
                               order_ids=[first.id, second.id, third.id])
        finish = batches.complete if next(flip) % 2 else batches.cancel
        return [
            _call(lambda: finish(pg_db.uow(), ADMIN, batch.id)),
            _call(lambda: orders.cancel(pg_db.uow(), ADMIN, second.id)),
            _call(lambda: orders.fulfill(pg_db.uow(), ADMIN, third.id, [
                orders.FulfillRequest(third.lines[0].id, 2)])),
            _call(lambda: batches.create(pg_db.uow(), ADMIN, warehouse_id=store.w1,
                                         order_ids=[first.id])),
        ]

    outcomes = _race(pg_db, round_)
    assert set(outcomes) <= {"ok", "INVALID_STATE"}, outcomes
