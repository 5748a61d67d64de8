"""Events a unit of work publishes after a successful commit."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StockChanged:
    """The available figures of these variants may have changed."""

    variant_ids: tuple[int, ...]


Event = StockChanged
