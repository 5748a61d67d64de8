"""Workload definitions shared by the GraphQL load generator and the raw SQL baseline."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Workload:
    """Each order has `lines` lines of quantity 1 over distinct variants drawn from `pool`."""

    name: str
    pool: tuple[int, ...]
    lines: int = 1
    # bounded mode: no fixed duration; a client stops after this many INSUFFICIENT_STOCK
    stop_after_insufficient: int = 0
    # business refusals this workload expects (bounded: INSUFFICIENT_STOCK); any other
    # outcome that is not an order is a failure of the run
    expected_refusals: frozenset[str] = frozenset()

    def pick(self, rng: random.Random) -> list[int]:
        """The variant pks of one order."""
        if len(self.pool) <= self.lines:
            return list(self.pool)
        return rng.sample(self.pool, self.lines)


@dataclass(frozen=True, slots=True)
class Timing:
    """Concurrency and the measuring window."""

    clients: int
    warmup: float
    seconds: float
