"""Integrity after a workload: no stock oversold, allocated figures match allocations."""

from __future__ import annotations

from dataclasses import dataclass

from bench.database import BenchDatabase

OVERSOLD = "SELECT COUNT(*) FROM stock WHERE quantity_allocated > quantity"
MISMATCHED = """
SELECT COUNT(*) FROM stock s
LEFT JOIN (SELECT stock_id, SUM(quantity) AS total FROM allocation GROUP BY stock_id) a
       ON a.stock_id = s.id
WHERE s.quantity_allocated <> COALESCE(a.total, 0) OR s.quantity_allocated < 0
"""
VARIANT = """
SELECT COALESCE(SUM(s.quantity), 0), COALESCE(SUM(s.quantity_allocated), 0),
       (SELECT COUNT(*) FROM order_line WHERE variant_id = ?)
FROM stock s WHERE s.variant_id = ?
"""


@dataclass(frozen=True, slots=True)
class Integrity:
    """Stocks with allocated > quantity, and stocks whose allocated != sum of allocations."""

    oversold: int
    mismatched: int


@dataclass(frozen=True, slots=True)
class VariantFigures:
    """A variant's totals over its stocks and how many order lines it has."""

    quantity: int
    allocated: int
    order_lines: int


def integrity(db: BenchDatabase) -> Integrity:
    """Count stocks that break the books."""
    with db.connection() as conn:
        oversold = conn.execute(OVERSOLD).fetchone()[0]
        mismatched = conn.execute(MISMATCHED).fetchone()[0]
    return Integrity(int(oversold), int(mismatched))


def variant_figures(db: BenchDatabase, variant_id: int) -> VariantFigures:
    """Totals of one variant (the bounded one)."""
    with db.connection() as conn:
        row = conn.execute(db.q(VARIANT), (variant_id, variant_id)).fetchone()
    return VariantFigures(int(row[0]), int(row[1]), int(row[2]))
