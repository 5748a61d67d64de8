"""Stock import from a feed (`stockyard import-stock`): rows of sku, warehouse, quantity.

Rows are applied in batches through the bulk path, so memory stays flat whatever the size.
reject-everything keeps one transaction open over all batches and rolls it back if any row
was rejected; reject-failed-rows commits batch by batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from domain.errors import DomainError, InvalidInput, NotFound, clip
from domain.events import StockChanged
from domain.models import MovementType, Warehouse
from domain.permissions import Principal
from domain.services.stock import BulkRow, apply_bulk
from domain.uow import UnitOfWork

BATCH = 5000
COLUMNS = ("sku", "warehouse", "quantity")


@dataclass(slots=True)
class ImportReport:
    applied: int = 0
    rows: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason)

    @property
    def ok(self) -> bool:
        return not self.rejected


class WarehouseNames:
    """Resolves a feed's warehouse column: a warehouse ID (via `decode_id`) or exact name."""

    def __init__(self, session: Session, decode_id: Callable[[str], int | None]) -> None:
        self._decode_id = decode_id
        self._ids: set[int] = set()
        self._names: dict[str, list[int]] = {}
        for wid, name in session.execute(select(Warehouse.id, Warehouse.name)):
            self._ids.add(wid)
            self._names.setdefault(name, []).append(wid)

    def resolve(self, text: str) -> int:
        wid = self._decode_id(text)
        if wid is not None and wid in self._ids:
            return wid
        found = self._names.get(text, [])
        if len(found) == 1:
            return found[0]
        if found:
            raise InvalidInput(f"{len(found)} warehouses are named {clip(text)!r}; use its ID")
        raise NotFound(f"no warehouse with ID or name {clip(text)!r}")


def import_stock(
    uow: UnitOfWork,
    principal: Principal,
    lines: Iterable[tuple[int, Mapping[str, str | None]]],
    *,
    decode_id: Callable[[str], int | None],
    reject_everything: bool,
    source: str,
    progress: Callable[[int], None] = lambda _rows: None,
) -> ImportReport:
    """Apply (line number, row) pairs; report applied rows and rejected lines with reasons."""
    report = ImportReport()
    reason = f"import {source}"[:500]
    with uow:
        names = WarehouseNames(uow.session, decode_id)
        batch: list[tuple[int, BulkRow]] = []
        for line_no, row in lines:
            batch.append((line_no, _parse(row, names)))
            if len(batch) == BATCH:
                _apply(uow, principal, batch, report, reject_everything, reason)
                progress(report.rows)
                batch = []
        if batch:
            _apply(uow, principal, batch, report, reject_everything, reason)
            progress(report.rows)
        if reject_everything and report.rejected:
            report.applied = 0  # rolled back on leaving the block
        elif reject_everything:
            uow.commit()
    return report


def _parse(row: Mapping[str, str | None], names: WarehouseNames) -> BulkRow:
    sku = (row.get("sku") or "").strip()
    warehouse = (row.get("warehouse") or "").strip()
    quantity_text = (row.get("quantity") or "").strip()
    try:
        if not sku:
            raise InvalidInput("sku is empty")
        if not warehouse:
            raise InvalidInput("warehouse is empty")
        warehouse_id = names.resolve(warehouse)
        try:
            quantity = int(quantity_text)
        except ValueError:
            raise InvalidInput(f"quantity {clip(quantity_text)!r} is not a whole number") from None
    except DomainError as exc:
        return BulkRow(warehouse_id=0, quantity=0, error=exc)
    return BulkRow(warehouse_id=warehouse_id, quantity=quantity, sku=sku)


def _apply(
    uow: UnitOfWork,
    principal: Principal,
    batch: list[tuple[int, BulkRow]],
    report: ImportReport,
    reject_everything: bool,
    reason: str,
) -> None:
    outcome = apply_bulk(uow.session, principal, [row for _, row in batch],
                         reject_failed_rows=True, movement_type=MovementType.FEED_IMPORT,
                         reason=reason)
    report.rows += len(batch)
    for (line_no, _), errors in zip(batch, outcome.errors, strict=True):
        if errors:
            report.rejected.append((line_no, "; ".join(e.message for e in errors)))
    report.applied += outcome.count
    if outcome.variant_ids:
        uow.emit(StockChanged(outcome.variant_ids))
    if not reject_everything:
        uow.commit()
