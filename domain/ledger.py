"""The stock ledger: every change of a stock's counters goes through `apply` and is recorded.

`apply` moves the counters in SQL (ascending stock id, like every lock taken elsewhere) and
appends one StockMovement per stock in the same transaction, with the levels the rows hold
afterwards (read back from the rows this transaction just changed and therefore holds).
Nothing updates or deletes a movement; the database refuses it too (migration 0002).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import cast

from sqlalchemy import Table, TextClause, bindparam, text, update
from sqlalchemy.orm import Session

from domain.models import MovementType, Stock

STOCK = cast(Table, Stock.__table__)

Deltas = Mapping[int, tuple[int, int]]  # stock id -> (quantity change, allocated change)

_ADD = (
    update(STOCK)
    .where(STOCK.c.id == bindparam("sid"))
    .values(quantity=STOCK.c.quantity + bindparam("dq"),
            quantity_allocated=STOCK.c.quantity_allocated + bindparam("da"))
)
# allocate only while enough is free: the optimistic order path relies on this guard
_ADD_GUARDED = (
    update(STOCK)
    .where(STOCK.c.id == bindparam("sid"),
           STOCK.c.quantity - STOCK.c.quantity_allocated >= bindparam("da"))
    .values(quantity_allocated=STOCK.c.quantity_allocated + bindparam("da"))
)


def order_movement_type(quantity_change: int, allocated_change: int) -> MovementType:
    """What an order operation did to one stock."""
    if quantity_change:
        return MovementType.FULFILLMENT
    return MovementType.ALLOCATION if allocated_change > 0 else MovementType.DEALLOCATION


def apply(
    session: Session,
    deltas: Deltas,
    *,
    type: MovementType | None,
    actor: str,
    reason: str | None = None,
    order_id: int | None = None,
    guarded: bool = False,
) -> bool:
    """Change the counters and record the movements; False when a guard refused a row.

    `type` None derives each movement's type from its deltas (order operations). With
    `guarded`, only allocated changes are applied and each must fit in the free stock.
    """
    changed = {sid: d for sid, d in deltas.items() if d != (0, 0)}
    if not changed:
        return True
    conn = session.connection()
    if guarded:
        moved = conn.execute(_ADD_GUARDED, [
            {"sid": sid, "da": da} for sid, (_, da) in sorted(changed.items())]).rowcount
        if moved != len(changed):
            return False
    else:
        conn.execute(_ADD, [{"sid": sid, "dq": dq, "da": da}
                            for sid, (dq, da) in sorted(changed.items())])
    record(session, changed, type=type, actor=actor, reason=reason, order_id=order_id)
    return True


def record(
    session: Session,
    deltas: Deltas,
    *,
    type: MovementType | None,
    actor: str,
    reason: str | None = None,
    order_id: int | None = None,
) -> None:
    """Append one movement per stock for changes already made in this transaction."""
    if not deltas:
        return
    params: dict[str, object] = {"actor": actor, "reason": reason, "order_id": order_id}
    for i, (sid, (dq, da)) in enumerate(sorted(deltas.items())):
        kind = type or order_movement_type(dq, da)
        params.update({f"s{i}": sid, f"q{i}": dq, f"a{i}": da, f"t{i}": kind.value})
    session.connection().execute(_record_statement(len(deltas)), params)


@functools.cache
def _record_statement(count: int) -> TextClause:
    def case(prefix: str) -> str:
        whens = " ".join(f"WHEN :s{i} THEN :{prefix}{i}" for i in range(count))
        return f"CASE s.id {whens} END"

    ids = ", ".join(f":s{i}" for i in range(count))
    return text(
        "INSERT INTO stock_movement (stock_id, variant_id, warehouse_id, type, "
        "quantity_change, allocated_change, quantity_after, allocated_after, reason, "
        "order_id, actor) "
        f"SELECT s.id, s.variant_id, s.warehouse_id, {case('t')}, {case('q')}, {case('a')}, "
        "s.quantity, s.quantity_allocated, CAST(:reason AS VARCHAR(500)), "
        "CAST(:order_id AS INTEGER), CAST(:actor AS VARCHAR(64)) "
        f"FROM stock s WHERE s.id IN ({ids}) ORDER BY s.id"
    )
