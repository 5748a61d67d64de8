"""Every stock operation racing orders for the same units on PostgreSQL never oversells.

A stock operation reads a stock's levels, decides (is on-hand still >= allocated? is enough
free to move?), then writes. An order that allocates between that read and that write must
wait for the operation's row lock and then see its result; without the lock the operation
writes from a stale decision and on-hand ends below what orders hold. Each test runs short
rounds on a fresh variant: the operation and two orders start together (a barrier), then
every stock is checked (`_off`).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from domain.errors import DomainError
from domain.models import OrderType
from domain.services import audit, catalog, orders
from domain.services import stock as stock_service
from tests.concurrency.test_no_oversell import assert_books_balance
from tests.conftest import Database
from tests.factories import ADMIN, World

ROUNDS = 30
ORDER_UNITS = 3  # each of the two orders of a round; 10 units on hand in w1 at the start

Contender = Callable[[], str]  # runs one service call; "ok" or the refusal's error code


@dataclass
class Store:
    """One seller with two warehouses serving DE (w1 first) and a product to add variants to."""

    world: World
    w1: int
    w2: int
    product: int

    def variant(self, w1: int = 10, w2: int = 0) -> int:
        return self.world.variant(self.product, stocks={self.w1: w1, self.w2: w2})


@pytest.fixture
def store(pg_db: Database) -> Store:
    world = World(pg_db)
    seller = world.seller()
    zone = world.zone(["DE"])
    return Store(world, world.warehouse(seller, [zone], priority=0),
                 world.warehouse(seller, [zone], priority=1), world.product(seller))


def _order(db: Database, variant: int, quantity: int = ORDER_UNITS) -> Contender:
    def place() -> str:
        orders.create(db.uow(), ADMIN, type=OrderType.REGULAR, shipping_country="DE",
                      lines=[orders.LineRequest(variant, quantity)])
        return "ok"
    return place


def _off(db: Database) -> dict[int, str]:
    """Stocks that break the books, by id: allocated above on-hand or below 0, allocated
    unlike its allocation rows, or (the audit) counters unlike their ledger."""
    found = {sid: f"quantity {q}, allocated {a}, allocation rows {held}"
             for sid, q, a, held in db.rows("""
        SELECT s.id, s.quantity, s.quantity_allocated, COALESCE(SUM(a.quantity), 0)
        FROM stock s LEFT JOIN allocation a ON a.stock_id = s.id
        GROUP BY s.id, s.quantity, s.quantity_allocated
        HAVING s.quantity_allocated > s.quantity OR s.quantity_allocated < 0
            OR s.quantity_allocated != COALESCE(SUM(a.quantity), 0)""")}
    with db.reader() as session:
        for drift in audit.audit(session):
            found.setdefault(drift.stock_id, "; ".join(drift.problems))
    return found


def _run(contender: Contender, barrier: threading.Barrier, delay: float,
         results: list[str]) -> None:
    """One contender's thread: start with the others (+ `delay`), append the outcome."""
    barrier.wait()
    time.sleep(delay)
    try:
        outcome = contender()
    except DomainError as exc:
        outcome = exc.code.value
    except Exception as exc:  # reported by `_race`, with the round
        outcome = f"unexpected {exc!r:.300}"
    results.append(outcome)  # list.append is atomic


def _race(db: Database, make_round: Callable[[int], tuple[Contender, int]], *,
          least_ok: int = ROUNDS, rounds: int = ROUNDS) -> Counter[str]:
    """Run `rounds` rounds; in each, the round's operation and two orders of ORDER_UNITS of
    its variant start together, one thread each.

    Fails naming every round after which a stock broke the books, and every unexpected
    exception (a deadlock, a 500-to-be), and when fewer than `least_ok` outcomes were "ok";
    returns how often each outcome happened.
    """
    outcomes: Counter[str] = Counter()
    broken: dict[int, str] = {}
    failed: dict[int, list[str]] = {}  # round -> what went wrong
    for n in range(rounds):
        operation, variant = make_round(n)
        contenders = [operation, _order(db, variant), _order(db, variant)]
        barrier = threading.Barrier(len(contenders))
        results: list[str] = []
        # the orders start 0-3.5 ms after the operation, each round and order differently,
        # so that their writes sweep the operation's window between its read and its write
        delays = [0.0] + [(n + 2 * i) % 8 * 0.0005 for i in range(1, len(contenders))]
        threads = [threading.Thread(target=_run, args=(c, barrier, d, results))
                   for c, d in zip(contenders, delays, strict=True)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        if any(t.is_alive() for t in threads):
            failed[n] = ["a contender hangs"]
            break
        outcomes.update(results)
        problems = [r for r in results if r.startswith("unexpected")]
        new = {sid: why for sid, why in _off(db).items() if sid not in broken}
        if new:
            problems.append(f"{results} left {new}")
            broken.update(new)
        if problems:
            failed[n] = problems
    assert not failed, f"{len(failed)} of {rounds} rounds failed:\n" + "\n".join(
        f"round {n}: {p}" for n, problems in failed.items() for p in problems)
    assert_books_balance(db)
    assert outcomes["ok"] >= least_ok, outcomes
    return outcomes


def _set_level(db: Database, store: Store, variant: int) -> None:
    """productVariantStocksUpdate: on-hand in w1 set to 4."""
    catalog.set_stock_quantities(db.uow(), ADMIN, variant, [catalog.StockQuantity(store.w1, 4)])


def _adjust_down(db: Database, store: Store, variant: int) -> None:
    """stockAdjust by -6 of w1's 10 on hand."""
    stock_service.adjust(db.uow(), ADMIN, variant_id=variant, warehouse_id=store.w1,
                         delta=-6, reason="recount")


def _transfer_out(db: Database, store: Store, variant: int) -> None:
    """stockTransfer of 6 of w1's 10 to w2 (w1 serves first)."""
    stock_service.transfer(db.uow(), ADMIN, variant_id=variant, from_warehouse_id=store.w1,
                           to_warehouse_id=store.w2, quantity=6)


@pytest.mark.parametrize(("operation", "least_ok"), [
    pytest.param(_set_level, ROUNDS, id="set-level"),
    pytest.param(_adjust_down, ROUNDS, id="adjust"),
    # the orders always fit (10 units in all); only the transfer may find too few free
    pytest.param(_transfer_out, 2 * ROUNDS, id="transfer"),
])
def test_lowering_or_moving_on_hand_while_orders_allocate_never_oversells(
    pg_db: Database, store: Store, operation: Callable[[Database, Store, int], None],
    least_ok: int,
) -> None:
    """The operation and two orders wanting 3 each race for a fresh variant's 10 units in w1;
    in every round the operation or an order goes through."""

    def round_(_n: int) -> tuple[Contender, int]:
        v = store.variant()

        def operate() -> str:
            operation(pg_db, store, v)
            return "ok"
        return operate, v

    _race(pg_db, round_, least_ok=least_ok)


def test_bulk_update_lowering_on_hand_while_orders_allocate_never_oversells(
    pg_db: Database, store: Store,
) -> None:
    """stockBulkUpdate of several stocks (two of them the raced variant's) to 4 and 1."""
    bystander = store.variant(w1=7, w2=7)

    def round_(n: int) -> tuple[Contender, int]:
        v = store.variant()

        def bulk() -> str:
            outcome = stock_service.bulk_set_quantities(
                pg_db.uow(), ADMIN,
                [stock_service.BulkRow(store.w1, 4, variant_id=v),
                 stock_service.BulkRow(store.w2, 1, variant_id=v),
                 stock_service.BulkRow(store.w1, 7 + n % 2, variant_id=bystander)],
                reject_failed_rows=bool(n % 2))
            codes = {e.code.value for row in outcome.errors for e in row}
            return "ok" if not codes else ",".join(sorted(codes))
        return bulk, v

    _race(pg_db, round_)


def test_receiving_a_purchase_order_while_orders_allocate_keeps_the_books(
    pg_db: Database, store: Store,
) -> None:
    """Receiving 4 units into w1 (2 on hand) while two orders want 3 each."""

    def round_(_n: int) -> tuple[Contender, int]:
        v = store.variant(w1=2)
        po = stock_service.create_purchase_order(
            pg_db.uow(), ADMIN, warehouse_id=store.w1,
            lines=[stock_service.PurchaseLine(v, 4)]).id

        def receive() -> str:
            stock_service.receive_purchase_order(pg_db.uow(), ADMIN, po,
                                                 [stock_service.PurchaseLine(v, 4)])
            return "ok"
        return receive, v

    _race(pg_db, round_)  # the receipt itself never fails
    # every unit ordered and received is where the ledger says
    assert pg_db.scalar("SELECT SUM(quantity) FROM stock s JOIN product_variant v "
                        "ON v.id = s.variant_id WHERE v.product_id = :p",
                        p=store.product) == 6 * ROUNDS
