"""The StockyardError GraphQL type; the one place domain errors become client errors."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

import strawberry

from api import ids
from domain.errors import DomainError, ErrorCode, raise_all

ErrorCodeEnum = strawberry.enum(ErrorCode, name="ErrorCode")


@strawberry.type
class StockyardError:
    code: ErrorCodeEnum  # type: ignore[valid-type]
    field: str | None
    message: str
    variant_id: strawberry.ID | None = None
    warehouse_id: strawberry.ID | None = None
    requested: int | None = None
    available: int | None = None
    order_ids: list[strawberry.ID] | None = strawberry.field(
        default=None, description="Orders at risk: they hold allocations a change would break.")


INT_MAX = 2**31 - 1


def _as_int(value: int | None) -> int | None:
    """GraphQL Int is 32-bit; a sum beyond it is reported as the largest Int."""
    return None if value is None else min(value, INT_MAX)


def errors_from(exc: DomainError) -> list[StockyardError]:
    return [
        StockyardError(
            code=e.code,
            field=e.field,
            message=e.message,
            variant_id=strawberry.ID(ids.encode("ProductVariant", e.variant_id))
            if e.variant_id is not None else None,
            warehouse_id=strawberry.ID(ids.encode("Warehouse", e.warehouse_id))
            if e.warehouse_id is not None else None,
            requested=_as_int(e.requested),
            available=_as_int(e.available),
            order_ids=[strawberry.ID(ids.encode("Order", o)) for o in e.order_ids]
            if e.order_ids else None,
        )
        for e in exc.errors
    ]


T = TypeVar("T")
R = TypeVar("R")


def collect(items: Iterable[T], fn: Callable[[int, T], R]) -> list[R]:
    """Apply fn(index, item) to every item, raising all DomainErrors together."""
    results: list[R] = []
    errors: list[DomainError] = []
    for i, item in enumerate(items):
        try:
            results.append(fn(i, item))
        except DomainError as exc:
            errors.extend(exc.errors)
    raise_all(errors)
    return results
