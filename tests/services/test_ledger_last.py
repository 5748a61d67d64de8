"""ledger.allocate_last: the guarded allocation that ends an order's transaction."""

from __future__ import annotations

import pytest

from domain import ledger
from tests.conftest import Database
from tests.factories import World


def _stocks(db: Database, levels: dict[int, int]) -> list[int]:
    """Stock ids of one variant with `levels` units in as many warehouses (by priority)."""
    world = World(db)
    seller = world.seller()
    zone = world.zone(["DE"])
    warehouses = [world.warehouse(seller, [zone], priority=i) for i in range(len(levels))]
    variant = world.variant(world.product(seller),
                            stocks={w: q for w, q in zip(warehouses, levels.values(), strict=True)})
    return [db.scalar("SELECT id FROM stock WHERE variant_id = :v AND warehouse_id = :w",
                      v=variant, w=w) for w in warehouses]


def _state(db: Database, stock_ids: list[int]) -> list[tuple[int, int, int]]:
    """(quantity, allocated, movements) per stock."""
    return [tuple(db.rows(
        "SELECT quantity, quantity_allocated, (SELECT COUNT(*) FROM stock_movement m "
        "WHERE m.stock_id = s.id) FROM stock s WHERE s.id = :sid", sid=sid)[0])
        for sid in stock_ids]


@pytest.mark.parametrize("locked", [False, True])
def test_allocates_records_and_commits(db: Database, locked: bool) -> None:
    ids = _stocks(db, {0: 5, 1: 5})
    before = _state(db, ids)
    with db.uow() as uow:
        assert ledger.allocate_last(uow.session, {ids[0]: (0, 2), ids[1]: (0, 5)},
                                    actor="test", reason="order created", order_id=7,
                                    locked=locked)
        uow.commit()
    assert _state(db, ids) == [(5, 2, before[0][2] + 1), (5, 5, before[1][2] + 1)]
    assert db.rows("SELECT type, quantity_change, allocated_change, quantity_after, "
                   "allocated_after, order_id, actor FROM stock_movement WHERE stock_id = :s "
                   "ORDER BY id DESC LIMIT 1", s=ids[0]) == [
        ("ALLOCATION", 0, 2, 5, 2, 7, "test")]


@pytest.mark.parametrize("rows", [1, 2])
def test_a_refused_guard_changes_nothing(db: Database, rows: int) -> None:
    ids = _stocks(db, {0: 5, 1: 1})[-rows:]
    deltas = {sid: (0, 2) for sid in ids}  # the last stock holds only 1
    before = _state(db, ids)
    with db.uow() as uow:
        assert not ledger.allocate_last(uow.session, deltas, actor="test",
                                        reason="order created", order_id=7)
    assert _state(db, ids) == before
