"""The relay hands every committed stock change on, once it can, and never loses one."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import Connection, text

from domain.errors import InsufficientStock
from domain.models import OrderType
from domain.relay import Relay
from domain.services import orders
from domain.uow import UnitOfWork
from tests.conftest import Database
from tests.factories import ADMIN, Shop, shop


class Sink:
    """A `send` that records its batches and can fail its first calls (a broker down)."""

    def __init__(self, fail_first: int = 0) -> None:
        self.batches: list[list[int]] = []
        self.arrived = threading.Event()
        self._fail = fail_first

    def __call__(self, variant_ids: list[int]) -> None:
        if self._fail:
            self._fail -= 1
            raise ConnectionError("broker down")
        self.batches.append(variant_ids)
        self.arrived.set()


def _order(db: Database, variant: int, quantity: int = 1) -> None:
    orders.create(db.uow(), ADMIN, type=OrderType.REGULAR, shipping_country="DE",
                  lines=[orders.LineRequest(variant, quantity)])


def _two_variants(db: Database) -> tuple[Shop, int]:
    s = shop(db, stock1=10)
    other = s.world.variant(s.product, stocks={s.w1: 10})
    return s, other


def _caught_up(db: Database) -> tuple[Relay, Sink]:
    """A relay that handed on what is there (the factories' stocks) and a clean sink."""
    relay = Relay(db.engine, sink := Sink())
    relay.run_once()
    sink.batches.clear()
    return relay, sink


def _position(db: Database) -> int:
    return int(db.scalar("SELECT last_id FROM relay_position WHERE name = 'stock_changed'"))


def test_committed_changes_go_out_as_one_sorted_message_then_nothing(db: Database) -> None:
    s, other = _two_variants(db)
    relay, sink = _caught_up(db)

    _order(db, other)
    _order(db, s.variant)
    _order(db, other)

    assert relay.run_once() == sorted([s.variant, other])
    assert sink.batches == [sorted([s.variant, other])]
    assert relay.run_once() == []
    assert sink.batches == [sorted([s.variant, other])]


def test_a_refused_order_hands_nothing_on(db: Database) -> None:
    s = shop(db, stock1=1)
    relay, sink = _caught_up(db)
    with pytest.raises(InsufficientStock):
        _order(db, s.variant, 2)
    assert relay.run_once() == []
    assert sink.batches == []


def test_a_failed_send_moves_nothing_and_the_next_round_sends_it(db: Database) -> None:
    s = shop(db)
    relay = Relay(db.engine, sink := Sink(fail_first=1))
    with pytest.raises(ConnectionError):
        relay.run_once()
    _order(db, s.variant)
    assert relay.run_once() == [s.variant]
    assert sink.batches == [[s.variant]]


def test_a_new_relay_starts_from_the_stored_position(db: Database) -> None:
    s, other = _two_variants(db)
    first = Relay(db.engine, Sink())
    first.run_once()
    first.save()
    _order(db, s.variant)
    first.run_once()  # sent, but the position was not stored: a crash now...

    second = Relay(db.engine, sink := Sink())
    _order(db, other)
    second.run_once()  # ...sends it again (at least once), with what came since
    assert sink.batches == [sorted([s.variant, other])]
    second.save()
    assert _position(db) == db.scalar("SELECT max(id) FROM stock_movement")
    assert Relay(db.engine, Sink()).run_once() == []


@pytest.fixture
def held(pg_db: Database) -> Iterator[Connection]:
    """A transaction left open on PostgreSQL."""
    with pg_db.engine.connect() as conn:
        yield conn


def _move_in(conn: Connection, variant: int) -> int:
    """In `conn`'s transaction, as the ledger does: change a stock, then record it."""
    conn.execute(text("UPDATE stock SET quantity = quantity + 1 WHERE variant_id = :v"),
                 {"v": variant})
    return int(conn.execute(text(
        "INSERT INTO stock_movement (stock_id, variant_id, warehouse_id, type, "
        "quantity_change, allocated_change, quantity_after, allocated_after, actor) "
        "SELECT id, variant_id, warehouse_id, 'ADJUSTMENT', 1, 0, quantity, "
        "quantity_allocated, 'test' FROM stock WHERE variant_id = :v ORDER BY id LIMIT 1 "
        "RETURNING id"), {"v": variant}).scalar_one())


def test_an_id_that_commits_after_a_higher_one_is_still_handed_on(
        pg_db: Database, held: Connection) -> None:
    s, other = _two_variants(pg_db)
    relay, sink = _caught_up(pg_db)

    late = _move_in(held, s.variant)  # drawn first, committed last
    _order(pg_db, other)
    assert relay.run_once() == [other]
    assert relay.position == late - 1  # the gap holds the position back
    relay.save()
    held.commit()

    assert relay.run_once() == [s.variant]
    assert relay.position == pg_db.scalar("SELECT max(id) FROM stock_movement")
    assert sink.batches == [[other], [s.variant]]


def test_a_rolled_back_id_stops_holding_the_position_once_its_transaction_ended(
        pg_db: Database, held: Connection) -> None:
    s, other = _two_variants(pg_db)
    relay, sink = _caught_up(pg_db)

    gone = _move_in(held, s.variant)
    _order(pg_db, other)
    relay.run_once()
    relay.run_once()
    assert relay.position == gone - 1  # still in flight: it may yet commit
    held.rollback()

    # once every transaction older than the gap's sighting ended (the whole server's: a
    # test elsewhere may hold the horizon back a little)
    deadline = time.monotonic() + 10
    while relay.position != pg_db.scalar("SELECT max(id) FROM stock_movement"):
        assert time.monotonic() < deadline, "the rolled back id held the position for good"
        assert relay.run_once() == []
        time.sleep(0.05)
    assert sink.batches == [[other]]


def test_a_restart_while_an_id_is_in_flight_hands_it_on_after_all(
        pg_db: Database, held: Connection) -> None:
    s, other = _two_variants(pg_db)
    relay = Relay(pg_db.engine, Sink())
    relay.run_once()
    relay.save()
    _move_in(held, s.variant)
    _order(pg_db, other)
    relay.run_once()
    relay.save()  # stored below the gap
    held.commit()

    again = Relay(pg_db.engine, sink := Sink())
    assert again.run_once() == sorted([s.variant, other])
    assert sink.batches == [sorted([s.variant, other])]


def test_one_relay_leads_and_another_takes_over_when_it_stops(db: Database) -> None:
    s = shop(db)
    first, second = Relay(db.engine, a := Sink(), interval=0.02), \
        Relay(db.engine, b := Sink(), interval=0.02)
    first.start()
    assert a.arrived.wait(10)  # the factories' stocks
    second.start()
    time.sleep(0.3)
    assert b.batches == []
    first.close()

    _order(db, s.variant)
    deadline = time.monotonic() + 10
    while [s.variant] not in b.batches:
        assert time.monotonic() < deadline, "the second relay never took over"
        time.sleep(0.05)
    second.close()


def test_a_commit_wakes_the_relay_and_close_stores_the_position(db: Database) -> None:
    s = shop(db)
    relay = Relay(db.engine, sink := Sink(), interval=60)
    relay.start()
    assert sink.arrived.wait(10)
    sink.arrived.clear()
    orders.create(UnitOfWork(db.writer, relay, reader=db.reader), ADMIN, type=OrderType.REGULAR,
                  shipping_country="DE", lines=[orders.LineRequest(s.variant, 1)])
    assert sink.arrived.wait(5)  # long before the 60 s interval
    relay.close()
    assert sink.batches[-1] == [s.variant]
    assert _position(db) == db.scalar("SELECT max(id) FROM stock_movement")
