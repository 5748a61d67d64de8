"""Reads of sales channels and listings: pages, and one statement per level for nested
fields (api/loaders.py)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from domain import sync
from domain.models import (
    Listing,
    SalesChannel,
    SyncMode,
    Warehouse,
    sales_channel_warehouse,
)


@dataclass(frozen=True, slots=True)
class ListingView:
    id: int
    external_id: str
    sku: str
    variant_id: int | None
    available: int | None
    pushed_quantity: int | None
    pushed_version: int | None
    pushed_at: object
    pending: bool


def channels_page(session: Session, first: int, before_id: int | None,
                  seller_id: int | None, status: str | None) -> list[SalesChannel]:
    """Newest first; `status` OK, FAILING or PAUSED (PAUSED wins over FAILING)."""
    stmt = select(SalesChannel).order_by(SalesChannel.id.desc()).limit(first + 1)
    if before_id is not None:
        stmt = stmt.where(SalesChannel.id < before_id)
    if seller_id is not None:
        stmt = stmt.where(SalesChannel.seller_id == seller_id)
    if status == "PAUSED":
        stmt = stmt.where(SalesChannel.paused.is_(True))
    elif status == "FAILING":
        stmt = stmt.where(SalesChannel.paused.is_(False), SalesChannel.failing.is_(True))
    elif status == "OK":
        stmt = stmt.where(SalesChannel.paused.is_(False), SalesChannel.failing.is_(False))
    return list(session.scalars(stmt))


def warehouses_of_channels(session: Session, keys: Sequence[int]) -> list[list[Warehouse]]:
    """The warehouses feeding each channel (all the seller's, or those chosen), by id."""
    channels = session.execute(select(SalesChannel.id, SalesChannel.seller_id,
                                      SalesChannel.all_warehouses)
                               .where(SalesChannel.id.in_(set(keys)))).all()
    by_seller = {c.seller_id for c in channels if c.all_warehouses}
    chosen_of = [c.id for c in channels if not c.all_warehouses]
    seller_rows: dict[int, list[Warehouse]] = defaultdict(list)
    if by_seller:
        for w in session.scalars(select(Warehouse).where(Warehouse.seller_id.in_(by_seller))
                                 .order_by(Warehouse.id)):
            seller_rows[w.seller_id].append(w)
    chosen: dict[int, list[Warehouse]] = defaultdict(list)
    if chosen_of:
        for channel_id, w in session.execute(
                select(sales_channel_warehouse.c.channel_id, Warehouse)
                .join(Warehouse, Warehouse.id == sales_channel_warehouse.c.warehouse_id)
                .where(sales_channel_warehouse.c.channel_id.in_(chosen_of))
                .order_by(Warehouse.id)):
            chosen[channel_id].append(w)
    found = {c.id: seller_rows[c.seller_id] if c.all_warehouses else chosen[c.id]
             for c in channels}
    return [found.get(k, []) for k in keys]


def _pushing(channel_ids: Sequence[int]) -> Select[Any]:
    return select(SalesChannel.id).where(SalesChannel.id.in_(set(channel_ids)),
                                         SalesChannel.sync_mode != SyncMode.NONE)


def pending_counts(session: Session, keys: Sequence[int]) -> list[int]:
    """Listings to push whose figure is not acknowledged, per channel."""
    counts = dict(session.execute(
        select(Listing.channel_id, func.count())
        .where(Listing.channel_id.in_(_pushing(keys)), sync.pending_clause())
        .group_by(Listing.channel_id)).all())
    return [int(counts.get(k, 0)) for k in keys]


def listings_page(session: Session, channel_id: int, first: int, before_id: int | None,
                  unmatched: bool | None, pending: bool | None) -> list[ListingView]:
    """Newest first, filtered: `unmatched` (no variant has the SKU), `pending` (waits for
    a push)."""
    pushing = session.scalar(_pushing([channel_id])) is not None
    pending_now = sync.pending_clause() if pushing else None
    stmt = select(Listing).where(Listing.channel_id == channel_id) \
        .order_by(Listing.id.desc()).limit(first + 1)
    if before_id is not None:
        stmt = stmt.where(Listing.id < before_id)
    if unmatched is not None:
        stmt = stmt.where(Listing.variant_id.is_(None) if unmatched
                          else Listing.variant_id.is_not(None))
    if pending is not None:
        if pending_now is None:
            if pending:
                return []
        else:
            stmt = stmt.where(pending_now if pending else ~pending_now)
    rows = list(session.scalars(stmt))
    waiting: set[int] = set()
    if pending_now is not None and rows:
        waiting = set(session.scalars(select(Listing.id).where(
            Listing.id.in_([r.id for r in rows]), pending_now)))
    return [ListingView(r.id, r.external_id, r.sku, r.variant_id,
                        r.figure if r.variant_id is not None else None,
                        r.pushed_quantity, r.pushed_version, r.pushed_at, r.id in waiting)
            for r in rows]


def channel_secret(session: Session, channel_id: int) -> str | None:
    """The secret a channel signs its inbound requests with; None for no such channel."""
    return session.scalar(select(SalesChannel.secret).where(SalesChannel.id == channel_id))
