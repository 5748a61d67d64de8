"""The books balance: every stock's counters equal its ledger and its live allocations,
and its batch reserve what open pick batches hold (order reserve + batch reserve =
allocated)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from domain import ledger
from domain.models import (
    Allocation,
    PickBatch,
    PickBatchLine,
    PickBatchStatus,
    ProductVariant,
    Stock,
    StockMovement,
    Warehouse,
)
from domain.uow import UnitOfWork


@dataclass(frozen=True, slots=True)
class Drift:
    """A stock whose counters disagree with the ledger or with its live allocations."""

    stock_id: int
    sku: str
    warehouse: str
    quantity: int
    allocated: int
    ledger_quantity: int
    ledger_allocated: int
    live_allocated: int
    batch_reserve: int = 0
    open_batches: int = 0  # what open pick batches hold of the stock

    @property
    def problems(self) -> list[str]:
        found = []
        if self.quantity != self.ledger_quantity:
            found.append(f"on-hand {self.quantity} != ledger {self.ledger_quantity}")
        if self.allocated != self.ledger_allocated:
            found.append(f"allocated {self.allocated} != ledger {self.ledger_allocated}")
        if self.allocated != self.live_allocated:
            found.append(f"allocated {self.allocated} != live allocations "
                         f"{self.live_allocated}")
        if self.batch_reserve != self.open_batches:
            found.append(f"batch reserve {self.batch_reserve} != open pick batches "
                         f"{self.open_batches}")
        if not 0 <= self.batch_reserve <= self.allocated:
            found.append(f"batch reserve {self.batch_reserve} outside 0..allocated")
        if self.allocated < 0:
            found.append("allocated below 0")
        if self.quantity < 0:
            found.append("on-hand below 0")
        return found


def _statement(stock_ids: list[int] | None = None, *, lock: bool = False) -> Any:
    moved = (select(StockMovement.stock_id,
                    func.sum(StockMovement.quantity_change).label("q"),
                    func.sum(StockMovement.allocated_change).label("a"))
             .group_by(StockMovement.stock_id).subquery())
    held = (select(Allocation.stock_id, func.sum(Allocation.quantity).label("a"))
            .group_by(Allocation.stock_id).subquery())
    batched = (select(PickBatchLine.stock_id, func.sum(PickBatchLine.quantity).label("b"))
               .join(PickBatch, PickBatch.id == PickBatchLine.batch_id)
               .where(PickBatch.status == PickBatchStatus.OPEN)
               .group_by(PickBatchLine.stock_id).subquery())
    ledger_q = func.coalesce(moved.c.q, 0)
    ledger_a = func.coalesce(moved.c.a, 0)
    live_a = func.coalesce(held.c.a, 0)
    open_b = func.coalesce(batched.c.b, 0)
    reserve = Stock.quantity_reserved_for_batches
    statement = (
        select(Stock.id, ProductVariant.sku, Warehouse.name, Stock.quantity,
               Stock.quantity_allocated, ledger_q, ledger_a, live_a, reserve, open_b)
        .join(ProductVariant, ProductVariant.id == Stock.variant_id)
        .join(Warehouse, Warehouse.id == Stock.warehouse_id)
        .outerjoin(moved, moved.c.stock_id == Stock.id)
        .outerjoin(held, held.c.stock_id == Stock.id)
        .outerjoin(batched, batched.c.stock_id == Stock.id)
        .where(or_(Stock.quantity != ledger_q, Stock.quantity_allocated != ledger_a,
                   Stock.quantity_allocated != live_a, Stock.quantity_allocated < 0,
                   Stock.quantity < 0, reserve != open_b, reserve < 0,
                   reserve > Stock.quantity_allocated))
        .order_by(Stock.id)
    )
    if stock_ids is not None:
        statement = statement.where(Stock.id.in_(stock_ids))
    return statement.with_for_update(of=Stock, key_share=True) if lock else statement


def audit(session: Session) -> list[Drift]:
    """Every stock that is off, in one pass over stocks, movements and allocations."""
    return [Drift(*row) for row in session.execute(_statement()).all()]


def repair(uow: UnitOfWork, *, actor: str) -> list[Drift]:
    """Rebuild allocated counters from live allocations, and batch reserves from open pick
    batches; each allocated fix is a ledger movement.

    The movement's allocated change brings the ledger's sum to the rebuilt counter too.
    The batch reserve is not a ledger counter (it splits allocated): it is set, within
    0..allocated. On-hand drift is only reported: nothing here knows the true on-hand
    (recount, then stockAdjust).
    """
    with uow:
        s = uow.session
        off = audit(s)
        fixable = [d.stock_id for d in off if d.allocated != d.live_allocated
                   or d.ledger_allocated != d.live_allocated
                   or d.batch_reserve != min(d.open_batches, d.live_allocated)]
        if not fixable:
            return off
        # lock them (ascending id) and look again: counters may have moved since
        fixed = [Drift(*row) for row in s.execute(_statement(fixable, lock=True)).all()]
        for drift in fixed:
            reserve = max(min(drift.open_batches, drift.live_allocated), 0)
            # lowered first and raised last, so it never exceeds allocated in between
            lowered = min(reserve, drift.batch_reserve)
            if drift.batch_reserve != lowered:
                ledger.set_batch_reserve(s, drift.stock_id, lowered)
            if drift.allocated != drift.live_allocated \
                    or drift.ledger_allocated != drift.live_allocated:
                ledger.rebuild_allocated(
                    s, drift.stock_id, allocated=drift.live_allocated,
                    ledger_allocated=drift.ledger_allocated, actor=actor,
                    reason=f"check --repair: allocated {drift.allocated} rebuilt from live "
                           f"allocations ({drift.live_allocated})")
            if lowered != reserve:
                ledger.set_batch_reserve(s, drift.stock_id, reserve)
        uow.commit()
    return off
