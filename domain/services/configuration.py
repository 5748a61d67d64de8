"""Marketplace configuration: which order types allocate stock."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import select
from sqlalchemy.orm import Session

from domain import permissions
from domain.models import OrderType, OrderTypeAllocation
from domain.permissions import Principal
from domain.uow import UnitOfWork


def allocation_settings(session: Session) -> dict[OrderType, bool]:
    """One entry per order type; a type without a row allocates (the default)."""
    stored = dict(session.execute(
        select(OrderTypeAllocation.order_type, OrderTypeAllocation.enabled)
    ).all())
    return {t: stored.get(t, True) for t in OrderType}


def update_allocation(
    uow: UnitOfWork, principal: Principal | None, changes: Mapping[OrderType, bool]
) -> dict[OrderType, bool]:
    """Turn allocation on or off per order type; existing allocations are never touched."""
    permissions.require_admin(principal)
    with uow:
        s = uow.session
        rows = {r.order_type: r for r in s.scalars(
            select(OrderTypeAllocation).with_for_update())}
        for order_type, enabled in changes.items():
            row = rows.get(order_type)
            if row is None:
                s.add(OrderTypeAllocation(order_type=order_type, enabled=enabled))
            else:
                row.enabled = enabled
        s.flush()
        result = allocation_settings(s)
        uow.commit()
    return result
