"""Pure allocation rules: which stock serves which order line. No Session, no I/O.

A `Book` holds the stock levels and allocations one operation may touch (already locked by
the caller). Operations change the book in memory; the service then writes the differences
(`stock_deltas`, `allocation_changes`) back in a few set-based statements.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from domain import stock_rules
from domain.errors import DomainError, InsufficientStock, NotAvailableInCountry, raise_all


@dataclass(slots=True)
class StockLevel:
    stock_id: int
    variant_id: int
    warehouse_id: int
    priority: int
    # the warehouse belongs to the variant's seller and serves the order's country
    serves: bool
    quantity: int
    allocated: int

    @property
    def available(self) -> int:
        return stock_rules.available(self.quantity, self.allocated)


@dataclass(frozen=True, slots=True)
class Demand:
    """Units a line (keyed by input index or line id) needs of a variant."""

    line: int
    variant_id: int
    quantity: int
    field: str | None = None


@dataclass(frozen=True, slots=True)
class FulfilledPart:
    line: int
    stock_id: int
    warehouse_id: int
    quantity: int


@dataclass(slots=True)
class Book:
    stocks: dict[int, StockLevel]
    # (line, stock_id) -> quantity
    allocations: dict[tuple[int, int], int] = field(default_factory=dict)
    _start_levels: dict[int, tuple[int, int]] = field(init=False)
    _start_allocations: dict[tuple[int, int], int] = field(init=False)
    _serving: dict[int, list[StockLevel]] = field(init=False)

    def __post_init__(self) -> None:
        self._start_levels = {s.stock_id: (s.quantity, s.allocated) for s in self.stocks.values()}
        self._start_allocations = dict(self.allocations)
        serving: defaultdict[int, list[StockLevel]] = defaultdict(list)
        for level in sorted(self.stocks.values(), key=lambda s: (s.priority, s.warehouse_id)):
            if level.serves:
                serving[level.variant_id].append(level)
        self._serving = dict(serving)

    @classmethod
    def of(
        cls, levels: Iterable[StockLevel], allocations: Mapping[tuple[int, int], int] = {}
    ) -> Book:
        return cls({s.stock_id: s for s in levels}, dict(allocations))

    def serving(self, variant_id: int) -> Sequence[StockLevel]:
        """Stocks of the variant that may serve the order, in allocation priority order.

        The book's own list, indexed when the book is made: do not change it. A book's
        stocks keep their variant, warehouse, priority and `serves`; only their figures move.
        """
        return self._serving.get(variant_id, ())

    def available(self, variant_id: int) -> int:
        return sum(s.available for s in self.serving(variant_id))

    def held(self, line: int) -> int:
        return sum(q for (ln, _), q in self.allocations.items() if ln == line)

    def line_allocations(self, line: int) -> list[StockLevel]:
        """Stocks holding this line's allocations, in priority order."""
        levels = [self.stocks[sid] for (ln, sid) in self.allocations if ln == line]
        return sorted(levels, key=lambda s: (s.priority, s.warehouse_id))

    def require_serving(self, demands: Iterable[Demand]) -> None:
        """Every variant needs a stock record in a warehouse serving the country."""
        errors: list[DomainError] = []
        seen: set[int] = set()
        for demand in demands:
            if demand.variant_id in seen:
                continue
            seen.add(demand.variant_id)
            if not self.serving(demand.variant_id):
                errors.append(
                    NotAvailableInCountry(
                        "no warehouse serving the shipping country stocks this variant",
                        field=demand.field,
                        variant_id=demand.variant_id,
                    )
                )
        raise_all(errors)

    def allocate(
        self,
        demands: Iterable[Demand],
        *,
        requested: Mapping[int, int] | None = None,
        held: Mapping[int, int] | None = None,
    ) -> None:
        """Allocate every demand or raise one InsufficientStock per short variant.

        `requested`/`held` let an edit report the order's whole need for a variant and count
        what the order holds already as obtainable.
        """
        demands = list(demands)
        per_variant: dict[int, int] = defaultdict(int)
        first_field: dict[int, str | None] = {}
        for d in demands:
            per_variant[d.variant_id] += d.quantity
            first_field.setdefault(d.variant_id, d.field)
        errors: list[DomainError] = []
        for variant_id, needed in per_variant.items():
            available = self.available(variant_id)
            if needed > available:
                extra = (held or {}).get(variant_id, 0)
                errors.append(
                    InsufficientStock(
                        f"only {available + extra} available",
                        field=first_field[variant_id],
                        variant_id=variant_id,
                        requested=(requested or {}).get(variant_id, needed),
                        available=available + extra,
                    )
                )
        raise_all(errors)
        for d in demands:
            remaining = d.quantity
            for stock in self.serving(d.variant_id):
                take = min(remaining, stock.available)
                if take:
                    self._hold(d.line, stock, take)
                    remaining -= take
                if not remaining:
                    break
            assert remaining == 0, "availability was checked above"

    def release(self, line: int, quantity: int | None = None) -> None:
        """Release `quantity` (all when None) of the line's allocations, lowest priority first."""
        remaining = self.held(line) if quantity is None else quantity
        for stock in reversed(self.line_allocations(line)):
            take = min(remaining, self.allocations[(line, stock.stock_id)])
            self._hold(line, stock, -take)
            remaining -= take
            if not remaining:
                break

    def fulfill(
        self,
        line: int,
        variant_id: int,
        quantity: int,
        *,
        tracked: bool,
        warehouse_id: int | None,
        field: str | None = None,
    ) -> list[FulfilledPart]:
        """Ship `quantity` of a line: consume its allocations, else free stock.

        Allocated units lower quantity and allocated; unallocated units need that much
        available stock so fulfilment never eats into other orders' allocations. Untracked
        variants keep their stock figures.
        """
        if warehouse_id is not None:
            candidates: Sequence[StockLevel] = [
                s for s in self.stocks.values()
                if s.variant_id == variant_id and s.warehouse_id == warehouse_id]
            if not candidates:
                raise InsufficientStock(
                    "the warehouse holds no stock of this variant",
                    field=field, variant_id=variant_id, warehouse_id=warehouse_id,
                    requested=quantity, available=0,
                )
        else:
            candidates = self.line_allocations(line) or self.serving(variant_id)
            if not candidates:
                raise NotAvailableInCountry(
                    "no warehouse serving the shipping country stocks this variant",
                    field=field, variant_id=variant_id,
                )
        if not tracked:
            stock = candidates[0]
            return [FulfilledPart(line, stock.stock_id, stock.warehouse_id, quantity)]

        plan: list[tuple[StockLevel, int, int]] = []  # stock, from allocation, from free
        remaining = quantity
        for stock in candidates:
            # after a forced recount a stock may hold fewer units than are allocated there:
            # only what is on hand can ship
            from_allocation = min(remaining, self.allocations.get((line, stock.stock_id), 0),
                                  max(stock.quantity, 0))
            remaining -= from_allocation
            plan.append((stock, from_allocation, 0))
        if remaining and warehouse_id is None:
            # not (fully) allocated: ship from free stock in priority order
            plan = [p for p in plan if p[1]]
            for stock in self.serving(variant_id):
                take = min(remaining, stock.available)
                if take:
                    plan.append((stock, 0, take))
                    remaining -= take
        elif remaining:
            stock = candidates[0]
            take = min(remaining, stock.available)
            plan = [(stock, plan[0][1], take)]
            remaining -= take
        if remaining:
            could = quantity - remaining
            raise InsufficientStock(
                f"only {could} can be fulfilled",
                field=field, variant_id=variant_id, warehouse_id=warehouse_id,
                requested=quantity, available=could,
            )
        parts: list[FulfilledPart] = []
        for stock, from_allocation, from_free in plan:
            shipped = from_allocation + from_free
            if not shipped:
                continue
            self._hold(line, stock, -from_allocation)
            stock.quantity -= shipped
            parts.append(FulfilledPart(line, stock.stock_id, stock.warehouse_id, shipped))
        return parts

    def stock_deltas(self) -> dict[int, tuple[int, int]]:
        """stock_id -> (quantity change, allocated change), for changed stocks only."""
        deltas: dict[int, tuple[int, int]] = {}
        for stock_id, (q0, a0) in self._start_levels.items():
            stock = self.stocks[stock_id]
            if (stock.quantity, stock.allocated) != (q0, a0):
                deltas[stock_id] = (stock.quantity - q0, stock.allocated - a0)
        return deltas

    def allocation_keys_before(self) -> set[tuple[int, int]]:
        return set(self._start_allocations)

    def allocation_changes(self) -> dict[tuple[int, int], int]:
        """(line, stock_id) -> new quantity (0 means delete), for changed allocations only."""
        keys = self._start_allocations.keys() | self.allocations.keys()
        return {
            k: self.allocations.get(k, 0)
            for k in keys
            if self.allocations.get(k, 0) != self._start_allocations.get(k, 0)
        }

    def _hold(self, line: int, stock: StockLevel, quantity: int) -> None:
        key = (line, stock.stock_id)
        new = self.allocations.get(key, 0) + quantity
        assert new >= 0
        if new:
            self.allocations[key] = new
        else:
            self.allocations.pop(key, None)
        stock.allocated += quantity
